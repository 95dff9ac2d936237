"""The delivery contract, run against every broker adapter over real brokers on loopback.

Each test uses a fresh destination (the harness creates it) and a real componentize-py
component (tests/fixtures/handlers/contract) that records every run in key-value.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from gateway import metrics
from tests.contract.harness import (
    BrokerHarness,
    Gateway,
    message,
    wait_for_dead_letters,
    wait_until,
)
from triggers.delivery import (
    DL_ATTEMPTS,
    DL_COMPONENT,
    DL_ERROR_KIND,
    DL_REASON,
    DL_STATUS,
    ConnectionWatch,
)

pytestmark = pytest.mark.wasm


def counted(metric: str, component: str) -> float:
    """The counter ``metric`` of ``component`` in this process."""
    line = f'{metric}{{component="{component}"}} '
    found = [x for x in metrics.render().splitlines() if x.startswith(line)]
    return float(found[0].removeprefix(line)) if found else 0.0


def retries_counted(component: str) -> float:
    """``wasmgate_retries_total`` of ``component`` in this process."""
    return counted("wasmgate_retries_total", component)


def _needs(harness: BrokerHarness, *, redelivers: bool = False, dead_letters: bool = False
           ) -> None:
    if redelivers and not harness.redelivers:
        pytest.skip(f"{harness.name} is at most once: nothing is redelivered")
    if dead_letters and not harness.dead_letters:
        pytest.skip(f"{harness.name} has no dead-letter destination (at most once)")


async def test_delivers_each_message_and_acks_after_success(
        harness: BrokerHarness, gateway: Gateway) -> None:
    gateway.write(concurrency=4)
    ids = [f"m{i}" for i in range(20)]
    async with gateway.running():
        for mid in ids:
            await harness.publish(message(mid), key=mid.encode())
        await wait_until(lambda: all(gateway.count("done", m) == 1 for m in ids),
                         what="every message handled")
    if harness.redelivers:
        # Acked means acked: a new consumer on the same group/durable/queue sees nothing.
        async with gateway.running():
            await asyncio.sleep(harness.redelivery_window_s)
    assert [gateway.count("runs", m) for m in ids] == [1] * len(ids)


async def test_a_message_published_as_soon_as_start_returns_is_handled(
        harness: BrokerHarness, gateway: Gateway) -> None:
    # start() returns once the trigger accepts messages: nothing here waits for readiness.
    gateway.write()
    async with gateway.running(wait_ready=False):
        await harness.publish(message("first"))
        await wait_until(lambda: gateway.count("done", "first") == 1,
                         what="the message published as start() returned")


async def test_retries_with_backoff_until_the_handler_succeeds(
        harness: BrokerHarness, gateway: Gateway) -> None:
    gateway.write(**{"max-attempts": 5, "initial-backoff-ms": 20})
    retries_before = retries_counted("contract")
    async with gateway.running():
        await harness.publish(message("flaky", "fail-until", n=3))
        await wait_until(lambda: gateway.count("done", "flaky") == 1, what="third attempt")
    assert gateway.count("runs", "flaky") == 3
    # The attempt number reached the handler in the event's metadata.
    assert gateway.kv.get("started:flaky") == b"3"
    # Two retries, counted once each whether they ran here or the broker redelivered.
    assert retries_counted("contract") - retries_before == 2
    if harness.dead_letters:
        assert await harness.read_dead_letters() == []


async def test_dead_letters_after_max_attempts_with_payload_headers_and_reason(
        harness: BrokerHarness, gateway: Gateway) -> None:
    _needs(harness, dead_letters=True)
    gateway.write(**{"max-attempts": 3, "initial-backoff-ms": 20})
    payload = message("doomed", "err")
    async with gateway.running():
        await harness.publish(payload, key=b"k1", headers={"x-origin": "contract"})
        letters = await wait_for_dead_letters(harness.read_dead_letters, 1)
    assert gateway.count("runs", "doomed") == 3
    [letter] = letters
    assert letter.data == payload
    assert letter.headers["x-origin"] == "contract"
    assert letter.headers[DL_ATTEMPTS] == "3"
    assert letter.headers[DL_COMPONENT] == "contract"
    assert letter.headers[DL_ERROR_KIND] == "returned-error"
    assert "failed on purpose" in letter.headers[DL_REASON]


async def test_a_4xx_answer_dead_letters_at_once(
        harness: BrokerHarness, gateway: Gateway) -> None:
    _needs(harness, dead_letters=True)
    gateway.write(**{"max-attempts": 5, "initial-backoff-ms": 20})
    async with gateway.running():
        await harness.publish(message("poison", "status", n=422))
        [letter] = await wait_for_dead_letters(harness.read_dead_letters, 1)
    assert gateway.count("runs", "poison") == 1
    assert letter.headers[DL_STATUS] == "422"


async def test_survives_a_trap_and_a_timeout_and_keeps_serving(
        harness: BrokerHarness, gateway: Gateway) -> None:
    gateway.write(timeout_ms=300, **{"max-attempts": 2, "initial-backoff-ms": 20,
                                     "concurrency": 2})
    async with gateway.running():
        await harness.publish(message("trap", "trap"))
        await harness.publish(message("loop", "loop"))
        await harness.publish(message("after", "ok"))
        await wait_until(lambda: gateway.count("done", "after") == 1, what="the ok message")
        await wait_until(lambda: gateway.count("runs", "trap") == 2
                         and gateway.count("runs", "loop") == 2, what="both retried once")
        if harness.dead_letters:
            letters = await wait_for_dead_letters(harness.read_dead_letters, 2)
            kinds = sorted(letter.headers[DL_ERROR_KIND] for letter in letters)
            assert kinds == ["timeout", "trap"]


async def test_keeps_order_per_key_while_running_keys_in_parallel(
        harness: BrokerHarness, gateway: Gateway) -> None:
    gateway.write(concurrency=4, ordering="key")
    keys = ["a", "b", "c"]
    async with gateway.running():
        # Uneven work so that an unordered runner would reorder.
        sent = await _publish_per_key(harness, keys, 8, lambda mid, i, k: message(
            mid, "slow", key=k, ms=(7 * i + 13 * ord(k)) % 40))
        await wait_until(lambda: all(len(gateway.order(k)) == 8 for k in keys),
                         what="every key's messages", state=lambda: _progress(gateway, sent))
    assert {k: gateway.order(k) for k in keys} == sent
    assert gateway.max_in_flight > 1, "keys never ran in parallel"


async def test_keeps_order_per_key_through_retries(
        harness: BrokerHarness, gateway: Gateway) -> None:
    # A user who asks for per-key order expects it under retries too: the first message of
    # each key fails once, and the messages behind it wait for its second attempt.
    gateway.write(concurrency=4, ordering="key",
                  **{"initial-backoff-ms": 300, "max-backoff-ms": 300})
    keys = ["a", "b"]
    async with gateway.running():
        sent = await _publish_per_key(harness, keys, 4, lambda mid, i, k: (
            message(mid, "fail-until", key=k, n=2) if i == 0 else message(mid, key=k)))
        await wait_until(lambda: all(len(gateway.order(k)) == 4 for k in keys),
                         what="every key's messages", state=lambda: _progress(gateway, sent))
    assert {k: gateway.order(k) for k in keys} == sent
    assert all(gateway.count("runs", f"{k}0") == 2 for k in keys)


async def _publish_per_key(harness: BrokerHarness, keys: list[str], rounds: int,
                           payload: Callable[[str, int, str], bytes]) -> dict[str, list[str]]:
    """Publish ``rounds`` messages per key, keys interleaved (ids ``<key><round>``); return
    what was sent, per key, in order."""
    sent: dict[str, list[str]] = {k: [] for k in keys}
    for i in range(rounds):
        for k in keys:
            mid = f"{k}{i}"
            sent[k].append(mid)
            await harness.publish(payload(mid, i, k), key=k.encode())
    return sent


def _progress(gateway: Gateway, sent: dict[str, list[str]]) -> str:
    """Per key, what the handler recorded in order, and per message not recorded whether it
    started and how often it ran: tells a lost message from a stuck or failing one."""
    parts = []
    for key, mids in sent.items():
        done = gateway.order(key)
        missing = {m: (gateway.started(m), gateway.count("runs", m)) for m in mids
                   if m not in done}
        parts.append(f"{key}: done {done}, not done (started, runs) {missing}, "
                     f"in flight {gateway.in_flight}")
    return "; ".join(parts)


async def test_respects_the_concurrency_limit(
        harness: BrokerHarness, gateway: Gateway) -> None:
    gateway.write(concurrency=2, ordering="none")
    ids = [f"c{i}" for i in range(6)]
    async with gateway.running():
        for mid in ids:
            await harness.publish(message(mid, "slow", ms=300), key=mid.encode())
        await wait_until(lambda: all(gateway.count("done", m) == 1 for m in ids),
                         what="all slow messages")
    assert gateway.max_in_flight == 2


async def test_graceful_stop_finishes_and_settles_what_is_in_flight(
        harness: BrokerHarness, gateway: Gateway) -> None:
    gateway.write(concurrency=2)
    async with gateway.running():
        await harness.publish(message("inflight", "slow", ms=800))
        await wait_until(lambda: gateway.started("inflight"), what="the handler to start")
    # The context exit is app.stop(): it must have waited for the handler and settled.
    assert gateway.count("done", "inflight") == 1
    if harness.redelivers:
        async with gateway.running():
            await asyncio.sleep(harness.redelivery_window_s)
    assert gateway.count("runs", "inflight") == 1


async def test_a_dead_letter_destination_that_is_down_holds_the_message_until_it_is_back(
        harness: BrokerHarness, gateway: Gateway) -> None:
    # One policy on every durable broker: a message whose dead letter was not confirmed is
    # neither acked nor dropped; it is held (in process, or at the broker) and retried.
    _needs(harness, redelivers=True, dead_letters=True)
    gateway.write(**{"max-attempts": 1, "max-backoff-ms": 500})
    refused_before = counted("wasmgate_dead_letter_failures_total", "contract")
    async with gateway.running():
        await harness.break_dead_letters()
        await harness.publish(message("held", "status", n=422))
        await wait_until(lambda: gateway.count("runs", "held") == 1, what="the handler")
        await asyncio.sleep(1.5)  # the dead letter is refused meanwhile, at least once
        assert await harness.read_dead_letters() == []
        assert counted("wasmgate_dead_letter_failures_total", "contract") > refused_before
        await harness.mend_dead_letters()
        letters = await wait_for_dead_letters(harness.read_dead_letters, 1, timeout=60)
        await asyncio.sleep(harness.redelivery_window_s)  # no second copy follows
    assert [json.loads(letter.data)["id"] for letter in letters] == ["held"]
    assert len(await harness.read_dead_letters()) == 1
    # Not asserted: that the handler ran once. At least once allows a second run, and
    # under CPU load JetStream was seen running this message twice, both with delivery
    # count 1 (cause not found yet).


async def test_stop_grace_ms_bounds_the_stop_and_leaves_the_rest_unsettled(
        harness: BrokerHarness, gateway: Gateway) -> None:
    # One setting on every broker trigger. The retry waits 5 s (in process, or at the
    # broker); a stop that waited for it would run the second attempt, which succeeds.
    gateway.write(**{"max-attempts": 5, "initial-backoff-ms": 5000, "max-backoff-ms": 5000,
                     "stop-grace-ms": 300})
    async with gateway.running():
        await harness.publish(message("patient", "fail-until", n=2))
        await wait_until(lambda: gateway.count("runs", "patient") == 1, what="first attempt")
    assert gateway.count("done", "patient") == 0
    if harness.redelivers:  # unsettled, so the broker has it back
        async with gateway.running():
            await wait_until(lambda: gateway.count("done", "patient") == 1,
                             timeout=30 + harness.redelivery_window_s,
                             what="the message after the restart")


async def test_redelivers_what_was_in_flight_at_a_hard_stop(
        harness: BrokerHarness, gateway: Gateway) -> None:
    _needs(harness, redelivers=True)
    gateway.write(concurrency=2, ordering="none")
    ids = [f"h{i}" for i in range(4)]
    process = gateway.spawn()
    try:
        for mid in ids:
            await harness.publish(message(mid, "slow", ms=1500), key=mid.encode())
        await wait_until(lambda: any(gateway.started(m) for m in ids), timeout=60,
                         what="the spawned gateway to start a handler")
    finally:
        Gateway.kill(process)
    assert not all(gateway.count("done", m) for m in ids)
    async with gateway.running():
        await wait_until(lambda: all(gateway.count("done", m) >= 1 for m in ids),
                         timeout=30 + harness.redelivery_window_s,
                         what="every message after the restart")


async def test_a_message_that_kills_the_gateway_every_time_is_dead_lettered_unrun(
        harness: BrokerHarness, gateway: Gateway) -> None:
    """The crash-loop guard: the gateway is killed (SIGKILL) while the message runs, on
    every delivery; past max-attempts deliveries it is dead-lettered without running."""
    _needs(harness, redelivers=True, dead_letters=True)
    gateway.write(timeout_ms=120_000, **{"max-attempts": 2})
    await harness.publish(message("killer", "slow", ms=100_000), headers={"x-origin": "t"})
    for delivery in (1, 2):
        process = gateway.spawn()
        try:
            await wait_until(lambda d=delivery: gateway.count("runs", "killer") == d,
                             timeout=60 + harness.redelivery_window_s,
                             what=f"delivery {delivery} to start the handler")
        finally:
            Gateway.kill(process)
        # The attempt number survived the crash (Kafka: the attempt ledger).
        assert gateway.kv.get("started:killer") == str(delivery).encode()
    async with gateway.running():
        [letter] = await wait_for_dead_letters(harness.read_dead_letters, 1,
                                               timeout=60 + harness.redelivery_window_s)
    assert gateway.count("runs", "killer") == 2
    assert letter.headers[DL_ERROR_KIND] == "redelivery"
    assert letter.headers[DL_ATTEMPTS] == "2"
    assert letter.headers["x-origin"] == "t"


async def test_resumes_after_the_broker_connection_drops(
        fault_harness: BrokerHarness, tmp_path: Path) -> None:
    gateway = Gateway(fault_harness, tmp_path)
    gateway.write(concurrency=2)
    try:
        async with gateway.running():
            await fault_harness.publish(message("before"))
            await wait_until(lambda: gateway.count("done", "before") == 1, what="before")
            await fault_harness.interrupt()
            if fault_harness.redelivers:
                await fault_harness.publish(message("after"))
            else:
                # At most once: a message published before the gateway has resubscribed is
                # gone by design, so keep publishing until one gets through.
                async def keep_publishing() -> None:
                    while True:
                        await fault_harness.publish(message("after"))
                        await asyncio.sleep(0.5)
                publisher = asyncio.create_task(keep_publishing())
            try:
                await wait_until(lambda: gateway.count("done", "after") >= 1, timeout=60,
                                 what="a message published after the broker came back")
            finally:
                if not fault_harness.redelivers:
                    publisher.cancel()
    finally:
        gateway.close()


async def test_a_broker_down_at_start_is_retried_and_logged_once(
        fault_harness: BrokerHarness, tmp_path: Path) -> None:
    """The gateway starts although its broker is down, says so once (not per attempt),
    keeps retrying with backoff, and starts intake when the broker answers."""
    await fault_harness.take_down()
    gateway = Gateway(fault_harness, tmp_path)
    gateway.write()
    try:
        with capture_logs() as logs:
            async with gateway.running(wait_ready=False) as app:
                [trigger] = app.triggers
                watch = _watch_of(trigger)
                await wait_until(lambda: watch.failures >= 2, what="several failed attempts")
                await fault_harness.bring_up()
                await fault_harness.wait_ready(app)
                await _publish_until_done(fault_harness, gateway, "late")
        down = [e for e in logs if e["event"].startswith("broker unavailable")]
        up = [e for e in logs if e["event"] == "broker connected"]
        assert len(down) == 1, "a broker that stays down is logged once, not per attempt"
        assert len(up) == 1 and up[0]["after_failures"] >= 2
    finally:
        gateway.close()


def _watch_of(trigger: object) -> ConnectionWatch:
    """The trigger's ConnectionWatch (the NATS adapters keep it on their connection)."""
    watch = getattr(trigger, "_watch", None) or trigger._connection.watch
    assert isinstance(watch, ConnectionWatch)
    return watch


async def _publish_until_done(harness: BrokerHarness, gateway: Gateway, mid: str) -> None:
    """Publish ``mid`` and wait until it is handled; at most once brokers may drop a message
    published while the subscription is being restored, so those publish until one lands."""
    if harness.redelivers:
        await harness.publish(message(mid))
        await wait_until(lambda: gateway.count("done", mid) >= 1, timeout=60, what=mid)
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while gateway.count("done", mid) < 1:
        assert loop.time() < deadline, f"timed out waiting for {mid}"
        await harness.publish(message(mid))
        await asyncio.sleep(0.5)
