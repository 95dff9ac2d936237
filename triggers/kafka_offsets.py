"""Which Kafka offsets may be committed: the highest *contiguous* done offset per partition.

Records of one partition are handed to the handler in offset order but, with key ordering
or ``ordering = "none"``, finish out of order. Committing the highest finished offset would
skip a record still running, which a crash would then lose. :class:`PartitionOffsets`
commits only up to the first record not yet finished, so everything after a crash
restarts there: at least once, never lost.

This module is pure bookkeeping (no client import) so that it is unit-tested on its own.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Hashable, Iterable


class PartitionOffsets:
    """The records of one assigned partition that were taken for handling.

    A new object is made for each assignment; once ``revoked`` it is never committed
    again, so a handler that finishes after its partition moved to another member changes
    nothing (that member will run the record again: at least once).
    """

    def __init__(self) -> None:
        self._taken: deque[int] = deque()  # offsets in the order they were taken
        self._done: set[int] = set()       # finished, but behind one still running
        self._next: int | None = None      # one past the last contiguous finished offset
        self.committed: int | None = None
        self.revoked = False
        self._idle = asyncio.Event()
        self._idle.set()

    def take(self, offset: int) -> None:
        """Record that ``offset`` (the next record of the partition) went to the handler."""
        self._taken.append(offset)
        self._idle.clear()

    def finish(self, offset: int) -> None:
        """Record that ``offset`` was settled (acked or dead-lettered)."""
        self._done.add(offset)
        while self._taken and self._taken[0] in self._done:
            first = self._taken.popleft()
            self._done.discard(first)
            self._next = first + 1
        if not self._taken:
            self._idle.set()

    @property
    def in_flight(self) -> int:
        return len(self._taken)

    @property
    def finished_behind(self) -> int:
        """Records settled but not committable yet: a record before them is still running."""
        return len(self._done)

    @property
    def commit_point(self) -> int | None:
        """The offset to commit (Kafka's "next record to read"), or None if nothing new.

        That is the first record still running, or one past the last finished one.
        """
        point = self._taken[0] if self._taken else self._next
        if point is None or (self.committed is not None and point <= self.committed):
            return None
        if self._next is None and self.committed is None:
            # Nothing finished yet: committing the first running record adds nothing.
            return None
        return point

    async def wait_idle(self) -> None:
        """Return once no taken record is still running."""
        await self._idle.wait()


class OffsetBook:
    """The :class:`PartitionOffsets` of every partition this member owns now."""

    def __init__(self) -> None:
        self._partitions: dict[Hashable, PartitionOffsets] = {}

    def assign(self, partitions: Iterable[Hashable]) -> None:
        for tp in partitions:
            if tp not in self._partitions:
                self._partitions[tp] = PartitionOffsets()

    def revoke(self, partitions: Iterable[Hashable]) -> None:
        for tp in partitions:
            offsets = self._partitions.pop(tp, None)
            if offsets is not None:
                offsets.revoked = True

    def get(self, tp: Hashable) -> PartitionOffsets | None:
        return self._partitions.get(tp)

    def owned(self, partitions: Iterable[Hashable]) -> list[tuple[Hashable, PartitionOffsets]]:
        return [(tp, self._partitions[tp]) for tp in partitions if tp in self._partitions]

    def to_commit(self) -> dict[Hashable, int]:
        """Every owned partition whose commit point moved since its last commit."""
        points = {tp: offsets.commit_point for tp, offsets in self._partitions.items()}
        return {tp: point for tp, point in points.items() if point is not None}

    def mark_committed(self, committed: dict[Hashable, int]) -> None:
        for tp, point in committed.items():
            offsets = self._partitions.get(tp)
            if offsets is not None and (offsets.committed is None or offsets.committed < point):
                offsets.committed = point

    @property
    def in_flight(self) -> int:
        return sum(o.in_flight for o in self._partitions.values())


__all__ = ["OffsetBook", "PartitionOffsets"]
