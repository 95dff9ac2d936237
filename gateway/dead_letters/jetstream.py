"""Dead letters of a ``[[trigger.nats-jetstream]]``: messages on its ``dead-letter``
subject, in whichever stream stores that subject.

List reads the subject's messages in sequence order (``get_msg`` with ``next_by_subj``:
one request per dead letter; no consumer is created, nothing is acked). Replay
publishes to the original subject (``wasmgate-dead-letter-subject``) with a JetStream
publish, whose ack is the broker's confirm, then deletes the dead letter by sequence. The
id is the sequence in the dead-letter stream.
"""

from __future__ import annotations

from typing import Any

import nats.errors
import nats.js.errors

from gateway.dead_letters.model import REPLAYED_FROM, DeadLetter, NotReplayable
from gateway.manifest import BrokerSpec
from triggers.delivery import DL_SUBJECT
from triggers.jetstream_config import JetStreamConfig

_MSG_ID = "Nats-Msg-Id"


class JetStreamDeadLetters:
    def __init__(self, config: JetStreamConfig, spec: BrokerSpec) -> None:
        assert config.dead_letter is not None
        self.config, self.spec, self.subject = config, spec, config.dead_letter
        self.describe = (f"jetstream subject {self.subject!r} on broker `{config.broker}`")
        self._nc: Any = None
        self._js: Any = None
        self._stream: str | None = None

    async def open(self) -> None:
        from nats.aio.client import Client

        from gateway.brokers.nats import connect_options

        failures: list[Exception] = []

        async def remember(exc: Exception) -> None:
            # Instead of nats-py's default, which logs each failed attempt with a traceback;
            # the last one is the error `open` raises.
            failures.append(exc)

        self._nc = Client()
        try:
            # nats-py reads max_reconnect_attempts=0 as "no limit" (it retried forever);
            # 1 is the fewest it stops after: two attempts per server, 0.1 s apart.
            await self._nc.connect(**connect_options(self.config.broker, self.spec),
                                   allow_reconnect=False, max_reconnect_attempts=1,
                                   reconnect_time_wait=0.1, error_cb=remember)
        except nats.errors.NoServersError:
            if failures:
                raise failures[-1] from None
            raise
        self._js = self._nc.jetstream()
        try:
            self._stream = await self._js.find_stream_name_by_subject(self.subject)
        except nats.js.errors.NotFoundError:
            self._stream = None  # nothing was ever dead-lettered (the trigger creates it)

    async def letters(self) -> list[DeadLetter]:
        if self._stream is None:
            return []
        info = await self._js.stream_info(self._stream)
        letters: list[DeadLetter] = []
        if not info.state.messages:
            return letters
        seq, last = info.state.first_seq, info.state.last_seq
        while seq <= last:
            # The next message on the dead-letter subject from `seq`: one request per dead
            # letter, whatever else the stream stores (other subjects, deleted sequences).
            try:
                raw = await self._js.get_msg(self._stream, seq, subject=self.subject,
                                             next=True)
            except nats.js.errors.NotFoundError:
                break  # no more
            if raw.seq is None or raw.seq > last:
                break  # stored after the listing began
            seq = raw.seq + 1
            letters.append(DeadLetter(
                id=str(raw.seq), body=raw.data or b"",
                headers=list((raw.headers or {}).items()),
                location={"stream": self._stream, "seq": str(raw.seq)}))
        return letters

    async def replay(self, letter: DeadLetter, *, replayed_from: str) -> str:
        target = letter.header(DL_SUBJECT)
        if not target:
            raise NotReplayable(f"dead letter {letter.id} in {self.describe} does not say its "
                              f"original subject ({DL_SUBJECT}); cannot replay it")
        headers = dict(letter.original_headers())
        # JetStream drops a publish whose id it has seen within its duplicate window: a
        # fresh one per dead letter, so a second replay of the same letter is the one dropped.
        headers[_MSG_ID] = f"replay:{self._stream}:{letter.id}"
        headers[REPLAYED_FROM] = replayed_from
        ack = await self._js.publish(target, letter.body, headers=headers)
        await self._js.delete_msg(self._stream, int(letter.id))
        return f"jetstream subject {target!r} (stream {ack.stream}, seq {ack.seq})"

    async def purge(self, letters: list[DeadLetter]) -> int:
        for letter in letters:
            await self._js.delete_msg(self._stream, int(letter.id))
        return len(letters)

    async def close(self) -> None:
        if self._nc is not None:
            await self._nc.close()


__all__ = ["JetStreamDeadLetters"]
