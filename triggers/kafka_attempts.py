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

Counting is batched: the starts (and removals) that arrive while one write is under way go
to the store together in the next, one transaction for the default file, so a record waits
for at most about two writes however many run at once. A key left behind by a crash
between settle and removal is one row for an offset already committed; nothing reads it
again.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path
from typing import Protocol

import structlog

from bindings.host.kv import KeyValueStore

log = structlog.get_logger("wasmgate.kafka")


class Counts(Protocol):
    """Where the counts live: one call per batch, run on a worker thread."""

    def bump(self, keys: list[str], drop: list[str]) -> list[int]: ...
    def close(self) -> None: ...


class AttemptLedger:
    """Per-record start counts of one consumer group."""

    def __init__(self, counts: Counts, group: str) -> None:
        self._counts = counts
        self._prefix = f"kafka-attempts/{group}/"
        self._starts: list[tuple[str, asyncio.Future[int]]] = []
        self._drops: list[str] = []
        self._writer: asyncio.Task[None] | None = None

    @classmethod
    def local(cls, state_dir: str | Path, group: str) -> AttemptLedger:
        """The default ledger: a SQLite file in the app's state directory."""
        return cls(SqliteCounts(Path(state_dir) / "kafka-attempts.sqlite"), group)

    @classmethod
    def in_store(cls, store: KeyValueStore, group: str) -> AttemptLedger:
        """A ledger in one of the app's ``[key-value.<name>]`` stores."""
        return cls(StoreCounts(store), group)

    async def start(self, topic: str, partition: int, offset: int) -> int:
        """Record one more start of the record; return how many there have been (1 first)."""
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._starts.append((self._key(topic, partition, offset), future))
        self._write_soon()
        return await future

    def forget(self, topic: str, partition: int, offset: int) -> None:
        """The record is settled: drop its count with the next write (a crash before that
        leaves a stale row for a committed offset, which nothing reads)."""
        self._drops.append(self._key(topic, partition, offset))
        self._write_soon()

    async def close(self) -> None:
        """Write what is queued, then close the store."""
        if self._writer is not None:
            await asyncio.gather(self._writer, return_exceptions=True)
        self._counts.close()

    def _write_soon(self) -> None:
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write())

    async def _write(self) -> None:
        while self._starts or self._drops:
            starts, self._starts = self._starts, []
            drops, self._drops = self._drops, []
            try:
                counts = await asyncio.to_thread(self._counts.bump,
                                                 [key for key, _ in starts], drops)
            except Exception as exc:
                log.warning("could not write kafka attempt counts", error=str(exc))
                for _, future in starts:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), count in zip(starts, counts, strict=True):
                if not future.done():
                    future.set_result(count)

    def _key(self, topic: str, partition: int, offset: int) -> str:
        return f"{self._prefix}{topic}/{partition}/{offset}"


class SqliteCounts:
    """The default: one table in one SQLite file, WAL, a transaction per batch (a process
    crash loses nothing committed; the workers of one host share the file)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None,
                                   timeout=10.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS attempts "
                         "(key TEXT PRIMARY KEY, starts INTEGER NOT NULL)")

    def bump(self, keys: list[str], drop: list[str]) -> list[int]:
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                counts = [int(db.execute(
                    "INSERT INTO attempts (key, starts) VALUES (?, 1) ON CONFLICT(key) "
                    "DO UPDATE SET starts = starts + 1 RETURNING starts", (key,)).fetchone()[0])
                    for key in keys]
                db.executemany("DELETE FROM attempts WHERE key = ?", [(k,) for k in drop])
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
            return counts

    def close(self) -> None:
        with self._lock:
            self._db.close()


class StoreCounts:
    """A ``[key-value.<name>]`` store (Redis-backed to share counts across hosts): one
    increment per start, one delete per settled record."""

    def __init__(self, store: KeyValueStore) -> None:
        self._store = store

    def bump(self, keys: list[str], drop: list[str]) -> list[int]:
        for key in drop:
            self._store.delete(key)
        return [self._store.increment(key, 1) for key in keys]

    def close(self) -> None:
        """The app owns the store and closes it."""


__all__ = ["AttemptLedger", "Counts", "SqliteCounts", "StoreCounts"]
