"""Dead letters of a ``[[trigger.redis-streams]]``: entries of its ``dead-letter`` stream.

List is XRANGE (reads, never claims). Replay is one script: XDEL the dead letter and, if
it was there, XADD the original fields, byte for byte (minus ``wasmgate-dead-letter-*``),
to the consumed stream, so the entry is never in both places or in neither, and two
sessions replaying it re-add it once. The id is the dead-letter entry id.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from gateway.dead_letters.model import REPLAYED_FROM, DeadLetter, DeadLetterNotFound
from gateway.manifest import BrokerSpec
from triggers.redis_entries import DATA, KEY
from triggers.redis_streams_config import RedisStreamsConfig

_DEAD_LETTER_PREFIX = b"wasmgate-dead-letter-"
# XDEL the dead letter and XADD its copy only if it was still there, atomically: of two
# sessions replaying the same listed entry, one re-adds it (a MULTI of XADD and XDEL
# re-added it in both).
_REPLAY = """
if redis.call('XDEL', KEYS[1], ARGV[1]) == 0 then return false end
return redis.call('XADD', KEYS[2], '*', unpack(ARGV, 2))
"""
_REPLAYED_FROM = REPLAYED_FROM.encode()


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


class RedisStreamsDeadLetters:
    def __init__(self, config: RedisStreamsConfig, spec: BrokerSpec) -> None:
        from gateway.brokers.redis import redis_client

        assert config.dead_letter is not None
        self.config, self.dead = config, config.dead_letter
        self.describe = f"redis stream {self.dead!r} on broker `{config.broker}`"
        # Each listed entry's fields as stored: a replay re-adds these bytes, not the
        # headers' text (decoding replaced what is not UTF-8).
        self._raw: dict[str, dict[bytes, bytes]] = {}
        self._redis: Any = redis_client(spec, read_timeout_s=spec.connect_timeout_ms / 1000,
                                        retries=0, name="wasmgate-dead-letters")

    async def open(self) -> None:
        await self._redis.ping()

    async def letters(self) -> list[DeadLetter]:
        letters = []
        for raw_id, fields in await self._redis.xrange(self.dead):
            entry = _text(raw_id)
            millis = entry.partition("-")[0]
            self._raw[entry] = dict(fields)
            letters.append(DeadLetter(
                id=entry, body=fields.get(DATA, b""), key=fields.get(KEY),
                headers=[(_text(k), _text(v)) for k, v in fields.items()
                         if k not in (DATA, KEY)],
                stored_at=datetime.fromtimestamp(int(millis) / 1000, UTC)
                if millis.isdigit() else None,
                location={"stream": self.dead, "entry-id": entry}))
        return letters

    async def replay(self, letter: DeadLetter, *, replayed_from: str) -> str:
        raw = self._raw.get(letter.id)
        if raw is None:
            fields = {k.encode(): v.encode() for k, v in letter.original_headers()}
            fields[DATA] = letter.body
            if letter.key is not None:
                fields[KEY] = letter.key
        else:
            fields = {k: v for k, v in raw.items()
                      if not k.startswith(_DEAD_LETTER_PREFIX) and k != _REPLAYED_FROM}
        fields[_REPLAYED_FROM] = replayed_from.encode()
        flat = [part for pair in fields.items() for part in pair]
        new_id = await self._redis.eval(_REPLAY, 2, self.dead, self.config.stream, letter.id,
                                        *flat)
        if new_id is None:
            raise DeadLetterNotFound(
                f"dead letter {letter.id} is no longer in {self.describe}: replayed or purged "
                "by another session since it was listed; not replayed again")
        return f"redis stream {self.config.stream!r} entry {_text(new_id)}"

    async def purge(self, letters: list[DeadLetter]) -> int:
        if not letters:
            return 0
        return int(await self._redis.xdel(self.dead, *(letter.id for letter in letters)))

    async def close(self) -> None:
        await self._redis.aclose()


__all__ = ["RedisStreamsDeadLetters"]
