"""How many times each Kafka record was started, kept where a crash cannot erase it.

Kafka keeps no delivery count: after a crash the group re-reads from the last commit and a
record looks new. A record that kills the gateway every time would run forever. So, before
a record runs, the trigger adds one to ``kafka-attempts/<group>/<topic>/<partition>/<offset>``
in a key-value store, and that count is the attempt number :func:`~triggers.delivery.deliver`
sees: past ``max-attempts`` the record is dead-lettered without running. The key is removed
once the record is settled (acked or dead-lettered).

Which store: ``attempts-store = "<name>"`` in ``[[trigger.kafka]]`` names a
``[key-value.<name>]`` of the app; every replica of the group must see the same store (a
Redis-backed one across hosts) for the count to be exact. Without it the trigger keeps
``.wasmgate/kafka-attempts.sqlite`` next to the manifest: shared by the worker processes of
one host, per host otherwise, so a record that crashes every replica is dead-lettered after
at most ``max-attempts`` deliveries on each host that takes its partition. Not the group's
offset-commit metadata: brokers may drop it (tansu does) and it is limited to 4 KiB.

A key left behind by a crash between settle and removal is one row for an offset already
committed; nothing reads it again.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import structlog

from bindings.host.kv import KeyValueStore, SqliteKeyValue

log = structlog.get_logger("wasmgate.kafka")


class AttemptLedger:
    """Per-record start counts of one consumer group, in a key-value store."""

    def __init__(self, store: KeyValueStore, group: str, *, owned: bool = False) -> None:
        self._store = store
        self._prefix = f"kafka-attempts/{group}/"
        self._owned = owned

    @classmethod
    def local(cls, state_dir: str | Path, group: str) -> AttemptLedger:
        """The default ledger: a SQLite file in the app's state directory."""
        path = Path(state_dir) / "kafka-attempts.sqlite"
        return cls(SqliteKeyValue(path, name="kafka-attempts"), group, owned=True)

    async def start(self, topic: str, partition: int, offset: int) -> int:
        """Record one more start of the record; return how many there have been (1 first)."""
        key = self._key(topic, partition, offset)
        return await asyncio.to_thread(self._store.increment, key, 1)

    async def forget(self, topic: str, partition: int, offset: int) -> None:
        """The record is settled: drop its count (a failure only leaves a stale row)."""
        try:
            await asyncio.to_thread(self._store.delete, self._key(topic, partition, offset))
        except Exception as exc:
            log.debug("could not remove a settled record's attempt count", error=str(exc))

    def close(self) -> None:
        if self._owned:
            self._store.close()

    def _key(self, topic: str, partition: int, offset: int) -> str:
        return f"{self._prefix}{topic}/{partition}/{offset}"


__all__ = ["AttemptLedger"]
