"""Committing a Kafka trigger's settled offsets: the contiguous settled prefix of every
owned partition (:class:`~triggers.kafka_offsets.OffsetBook`), at most every
``commit-interval-ms`` while records settle, on a rebalance and at stop.

A commit the group rejected after a rebalance is dropped (the new owner re-reads from the
last good commit: duplicates, never loss); any other failure is retried on the next round.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from aiokafka.structs import OffsetAndMetadata

from triggers.delivery import ConnectionWatch, describe
from triggers.kafka_offsets import OffsetBook

log = structlog.get_logger("wasmgate.kafka")


class Committer:
    """Commits ``book``'s settled offsets through the trigger's current consumer."""

    def __init__(self, book: OffsetBook, consumer: Callable[[], AIOKafkaConsumer | None], *,
                 group: str, interval_ms: int, watch: ConnectionWatch) -> None:
        self._book = book
        self._consumer = consumer
        self._group = group
        self._interval_s = interval_ms / 1000
        self._watch = watch
        self._lock = asyncio.Lock()
        self._wanted = asyncio.Event()

    def want(self) -> None:
        """A record settled: commit on the next round."""
        self._wanted.set()

    async def run(self) -> None:
        """Commit whenever something settled, at most once per interval (until cancelled)."""
        while True:
            await self._wanted.wait()
            self._wanted.clear()
            await self.commit()
            await asyncio.sleep(self._interval_s)

    async def commit(self, partitions: frozenset[TopicPartition] | None = None) -> None:
        """Commit every owned partition's (or ``partitions``') contiguous settled offset."""
        consumer = self._consumer()
        if consumer is None:
            return
        async with self._lock:
            points = self._book.to_commit()
            offsets = {tp: OffsetAndMetadata(point, "") for tp, point in points.items()
                       if isinstance(tp, TopicPartition)
                       and (partitions is None or tp in partitions)}
            if not offsets:
                return
            try:
                await consumer.commit(offsets)
            except (CommitFailedError, IllegalStateError) as exc:
                # The group moved on: the new owner re-reads from the last good commit.
                log.warning("offset commit rejected after a rebalance; records will be "
                            "redelivered", group=self._group, error=describe(exc))
                return
            except KafkaError as exc:
                log.warning("offset commit failed; retrying", group=self._group,
                            error=describe(exc))
                self._wanted.set()
                return
            self._watch.up()
            self._book.mark_committed({tp: o.offset for tp, o in offsets.items()})

    async def hand_over(self, revoked: frozenset[TopicPartition], wait_s: float) -> None:
        """Partitions are being revoked: give their running records up to ``wait_s`` to
        settle, commit what settled, then forget them (a record still running is re-run by
        the new owner)."""
        owned = self._book.owned(revoked)
        waits = [asyncio.ensure_future(offsets.wait_idle()) for _, offsets in owned]
        if waits:
            _, pending = await asyncio.wait(waits, timeout=wait_s)
            for task in pending:
                task.cancel()
        await self.commit(revoked)
        self._book.revoke(revoked)


__all__ = ["Committer"]
