"""Redis Streams behaviour the contract suite does not reach: dead consumers' entries
reclaimed, attempts that survive restarts, leases on slow entries, a broker down at start,
a missing group. Real Redis (shared 6379, or a private redis-server) and the contract
component."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from tests.contract.brokers.redis_streams import GROUP, RedisStreamsHarness
from tests.contract.harness import Gateway, message, wait_until

pytestmark = pytest.mark.wasm


@pytest.fixture
def harness_class() -> type[RedisStreamsHarness]:
    return RedisStreamsHarness


async def _pending(harness: RedisStreamsHarness) -> int:
    summary = await harness.client.xpending(harness.stream, GROUP)
    return int(summary["pending"])


async def test_a_dead_consumers_entry_is_reclaimed_after_the_visibility_timeout(
        harness: RedisStreamsHarness, gateway: Gateway) -> None:
    await harness.publish(message("orphan"))
    # Another instance read it and died without acking.
    await harness.client.xreadgroup(GROUP, "dead-instance", {harness.stream: ">"})
    gateway.write(**{"claim-idle-ms": 1000, "claim-interval-ms": 200})
    async with gateway.running():
        await wait_until(lambda: gateway.count("done", "orphan") == 1, what="the reclaim")
    # The second delivery: the attempt number came from Redis's delivery count.
    assert gateway.kv.get("started:orphan") == b"2"
    assert gateway.count("runs", "orphan") == 1
    assert await _pending(harness) == 0


async def test_a_retry_waiting_at_stop_stays_pending_and_resumes_at_the_next_attempt(
        harness: RedisStreamsHarness, gateway: Gateway) -> None:
    gateway.write(**{"max-attempts": 5, "initial-backoff-ms": 60_000,
                     "max-backoff-ms": 60_000})
    async with gateway.running():
        await harness.publish(message("patient", "fail-until", n=2))
        await wait_until(lambda: gateway.count("runs", "patient") == 1, what="attempt 1")
    # stop() did not wait out the minute of backoff; the entry is still pending.
    assert await _pending(harness) == 1
    async with gateway.running():
        await wait_until(lambda: gateway.count("done", "patient") == 1, what="attempt 2")
    assert gateway.kv.get("started:patient") == b"2"
    assert await _pending(harness) == 0


async def test_a_slow_entry_keeps_its_lease_so_no_other_consumer_takes_it(
        harness: RedisStreamsHarness, gateway: Gateway) -> None:
    gateway.write(timeout_ms=20_000, **{"claim-idle-ms": 1200, "claim-interval-ms": 200})
    async with gateway.running():
        await harness.publish(message("slow", "slow", ms=4000))
        await wait_until(lambda: gateway.started("slow"), what="the slow handler")
        stolen = []
        for _ in range(6):  # a rival instance sweeping while the handler runs
            await asyncio.sleep(0.5)
            reply = await harness.client.xautoclaim(harness.stream, GROUP, "rival", 1200,
                                                    count=10)
            stolen += reply[1]
        await wait_until(lambda: gateway.count("done", "slow") == 1, what="the slow entry")
    assert stolen == []
    assert gateway.count("runs", "slow") == 1
    assert await _pending(harness) == 0


async def test_a_missing_group_is_reported_with_the_fix_and_picked_up_once_created(
        harness: RedisStreamsHarness, gateway: Gateway) -> None:
    stream = harness.stream + ".nogroup"
    gateway.write(**{"stream": stream, "create-group": False})
    try:
        with capture_logs() as logs:
            async with gateway.running(wait_ready=False):
                await wait_until(lambda: any("XGROUP CREATE" in str(e.get("hint"))
                                             for e in logs), what="the NOGROUP hint")
                await harness.client.xgroup_create(stream, GROUP, id="0", mkstream=True)
                await harness.client.xadd(stream, {"data": message("grouped")})
                await wait_until(lambda: gateway.count("done", "grouped") == 1,
                                 what="intake after the group appeared")
    finally:
        await harness.client.delete(stream)


async def test_an_entry_deleted_during_its_backoff_is_dropped_not_retried(
        harness: RedisStreamsHarness, gateway: Gateway) -> None:
    gateway.write(**{"max-attempts": 5, "initial-backoff-ms": 1500, "max-backoff-ms": 1500})
    async with gateway.running():
        await harness.publish(message("trimmed", "err"))
        await wait_until(lambda: gateway.count("runs", "trimmed") == 1, what="attempt 1")
        [(entry_id, _)] = await harness.client.xrange(harness.stream)
        await harness.client.xdel(harness.stream, entry_id)  # XTRIM / XDEL by an operator
        for _ in range(100):
            if await _pending(harness) == 0:
                break
            await asyncio.sleep(0.1)
    assert gateway.count("runs", "trimmed") == 1
    assert await _pending(harness) == 0
    assert await harness.read_dead_letters() == []


@pytest.fixture
async def fault_harness() -> AsyncIterator[RedisStreamsHarness]:
    """A harness on a private redis-server that the test may take down and bring up."""
    async with RedisStreamsHarness.private() as harness:
        yield harness


async def test_a_retry_keeps_its_keys_place_while_redis_is_down(
        fault_harness: RedisStreamsHarness, tmp_path: Path) -> None:
    # The retry's XCLAIM fails while Redis is down. Giving up then released the key's lane:
    # the entries behind it ran first and the retry, reclaimed later, came after them (the
    # soak saw it after Redis restarts). Now the retry waits for Redis, keeping its place.
    gateway = Gateway(fault_harness, tmp_path)
    gateway.write(ordering="key", **{"initial-backoff-ms": 1000, "max-backoff-ms": 1000})
    sent = ["k0", "k1", "k2"]
    try:
        async with gateway.running():
            await fault_harness.publish(message("k0", "fail-until", key="k", n=2), key=b"k")
            for mid in sent[1:]:
                await fault_harness.publish(message(mid, key="k"), key=b"k")
            await wait_until(lambda: gateway.count("runs", "k0") == 1, what="k0's first run")
            await fault_harness.take_down()
            await asyncio.sleep(2.5)  # the retry's claim comes due (after 1 s) while down
            await fault_harness.bring_up()
            await wait_until(lambda: len(gateway.order("k")) == 3, timeout=60,
                             what="every entry of the key")
        assert gateway.order("k") == sent
    finally:
        gateway.close()
