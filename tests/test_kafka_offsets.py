"""Unit tests for the Kafka commit bookkeeping: only contiguous settled offsets commit."""

from __future__ import annotations

import asyncio

from triggers.kafka_offsets import OffsetBook, PartitionOffsets


def test_commits_nothing_until_the_first_record_settles() -> None:
    p = PartitionOffsets()
    p.take(5)
    p.take(6)
    assert p.commit_point is None
    p.finish(5)
    assert p.commit_point == 6


def test_a_running_record_holds_the_commit_point_while_later_ones_finish() -> None:
    p = PartitionOffsets()
    for offset in (10, 11, 12, 13):
        p.take(offset)
    p.finish(10)
    p.finish(12)
    p.finish(13)
    # 11 still runs: a crash now must re-read 11 (and, harmlessly, 12 and 13).
    assert p.commit_point == 11
    p.finish(11)
    assert p.commit_point == 14
    assert p.in_flight == 0


def test_gaps_in_offsets_are_fine_and_committed_points_are_not_repeated() -> None:
    p = PartitionOffsets()
    p.take(3)
    p.take(7)  # compacted or transaction markers in between
    p.finish(7)
    p.finish(3)
    assert p.commit_point == 8
    p.committed = 8
    assert p.commit_point is None


async def test_wait_idle_returns_when_the_last_taken_record_settles() -> None:
    p = PartitionOffsets()
    p.take(1)
    waiter = asyncio.create_task(p.wait_idle())
    await asyncio.sleep(0)
    assert not waiter.done()
    p.finish(1)
    await asyncio.wait_for(waiter, 1)


def test_book_commits_owned_partitions_and_forgets_revoked_ones() -> None:
    book = OffsetBook()
    book.assign(["t-0", "t-1"])
    a, b = book.get("t-0"), book.get("t-1")
    assert a is not None and b is not None
    a.take(0)
    a.finish(0)
    b.take(0)
    assert book.to_commit() == {"t-0": 1}
    book.mark_committed({"t-0": 1})
    assert book.to_commit() == {}
    book.revoke(["t-1"])
    assert b.revoked and book.get("t-1") is None
    # A record of the revoked partition that finishes late changes nothing.
    b.finish(0)
    assert book.to_commit() == {}
    # A later assignment starts a new ledger.
    book.assign(["t-1"])
    assert book.get("t-1") is not b
