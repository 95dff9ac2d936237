"""The Kafka attempt ledger: start counts per record that survive the process."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bindings.host.kv import SqliteKeyValue
from triggers.kafka_attempts import AttemptLedger


async def test_counts_survive_a_new_process_and_are_dropped_once_settled(
        tmp_path: Path) -> None:
    first = AttemptLedger.local(tmp_path, "g")
    assert await first.start("t", 0, 7) == 1
    assert await first.start("t", 0, 8) == 1
    first.forget("t", 0, 8)  # settled
    await first.close()  # a crash instead would lose only the queued removal

    again = AttemptLedger.local(tmp_path, "g")
    assert await again.start("t", 0, 7) == 2  # delivered again after the "crash"
    assert await again.start("t", 0, 8) == 1  # settled before: a fresh count
    assert await AttemptLedger.local(tmp_path, "other-group").start("t", 0, 7) == 1
    await again.close()


async def test_concurrent_starts_are_written_together_with_exact_counts(
        tmp_path: Path) -> None:
    ledger = AttemptLedger.local(tmp_path, "g")
    counts = await asyncio.gather(*(ledger.start("t", p, 1) for p in range(16)),
                                  ledger.start("t", 0, 1))
    assert sorted(counts) == [1] * 16 + [2]
    await ledger.close()


async def test_a_key_value_store_holds_the_counts_when_named(tmp_path: Path) -> None:
    store = SqliteKeyValue(tmp_path / "shared.sqlite", name="shared")
    ledger = AttemptLedger.in_store(store, "g")
    assert [await ledger.start("t", 2, 5) for _ in range(3)] == [1, 2, 3]
    assert store.get("kafka-attempts/g/t/2/5") == b"3"
    ledger.forget("t", 2, 5)
    await ledger.close()
    assert store.get("kafka-attempts/g/t/2/5") is None
    store.close()
