"""`wasmgate dead-letters` against real brokers (Kafka via tansu, JetStream, RabbitMQ, Redis
Streams) and a real component (tests/fixtures/handlers/contract).

The common case: a deployment whose handler cannot finish (a timeout too short for its
work) dead-letters messages; the fixed deployment (a longer timeout) is started and the dead
letters are replayed; every message is then processed exactly once, with a fresh attempt
count, and the dead-letter destination is left empty.
"""

from __future__ import annotations

import asyncio
import io
import json
from typing import Any

import aio_pika
import pytest

from gateway import metrics
from gateway.cli import _parser
from gateway.dead_letters.cli import execute
from gateway.dead_letters.model import DeadLetterNotFound
from gateway.errors import ConfigError
from tests.contract.brokers.amqp import AmqpHarness
from tests.contract.brokers.kafka import KafkaHarness
from tests.contract.brokers.nats_jetstream import NatsJetStreamHarness
from tests.contract.brokers.redis_streams import RedisStreamsHarness
from tests.contract.harness import (
    BrokerHarness,
    DeadLetter,
    Gateway,
    message,
    wait_for_dead_letters,
    wait_until,
)

pytestmark = pytest.mark.wasm

BROKERS = [KafkaHarness, NatsJetStreamHarness, AmqpHarness, RedisStreamsHarness]
# Each attempt of a "slow" message outlives the failing deployment's timeout.
FAILING = {"timeout_ms": 150, "max-attempts": 2, "initial-backoff-ms": 20}
FIXED = {"timeout_ms": 10_000, "max-attempts": 2, "initial-backoff-ms": 20}


@pytest.fixture(params=BROKERS, ids=lambda h: h.name)
def harness_class(request: pytest.FixtureRequest) -> type[BrokerHarness]:
    return request.param  # type: ignore[no-any-return]


class Terminal(io.StringIO):
    """Typed answers, as if at a terminal."""

    def isatty(self) -> bool:
        return True


async def cli(gateway: Gateway, *argv: str, answer: str | None = None) -> tuple[int, str]:
    """Run ``wasmgate dead-letters ARGV --manifest <the test's>``; exit code and stdout."""
    args = _parser().parse_args(["dead-letters", *argv, "--manifest", str(gateway.manifest)])
    out = io.StringIO()
    code = await execute(args, out=out,
                         confirm_in=Terminal(answer) if answer is not None else io.StringIO())
    return code, out.getvalue()


def dead_letters_counted(source: str, error_kind: str) -> float:
    """``wasmgate_dead_letters_total`` of the contract component from ``source``."""
    line = (f'wasmgate_dead_letters_total{{component="contract",error_kind="{error_kind}",'
            f'source="{source}"}} ')
    found = [x for x in metrics.render().splitlines() if x.startswith(line)]
    return float(found[0].removeprefix(line)) if found else 0.0


async def listed(gateway: Gateway) -> list[dict[str, Any]]:
    code, out = await cli(gateway, "list", "--json")
    assert code == 0
    report = json.loads(out)
    assert report["count"] == len(report["dead_letters"])
    return report["dead_letters"]  # type: ignore[no-any-return]


async def wait_listed(gateway: Gateway, count: int) -> list[dict[str, Any]]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while len(found := await listed(gateway)) < count:
        if loop.time() > deadline:
            raise AssertionError(f"expected {count} dead letters, `list` shows {len(found)}")
        await asyncio.sleep(0.2)
    return found


async def test_replay_after_a_fix_processes_every_message_once_and_empties_the_dead_letters(
        harness: BrokerHarness, gateway: Gateway) -> None:
    ids = ["a", "b", "c"]
    source = f"wasmgate/{harness.trigger_kind}/b"
    counted_before = dead_letters_counted(source, "timeout")
    gateway.write(**FAILING)
    async with gateway.running():
        for mid in ids:
            await harness.publish(message(mid, "slow", ms=400), key=mid.encode(),
                                  headers={"x-origin": "replay-test"})
        letters = await wait_listed(gateway, len(ids))
    assert [gateway.count("done", m) for m in ids] == [0, 0, 0]
    # /metrics counts them per source (the trigger's kind and broker) and reason.
    assert dead_letters_counted(source, "timeout") - counted_before == 3
    assert {x["error_kind"] for x in letters} == {"timeout"}
    assert {x["attempts"] for x in letters} == {"2"}
    assert all(x["time"] and x["origin"] for x in letters)

    # Listing twice disturbs nothing (RabbitMQ: taken unacked, handed back).
    assert [x["id"] for x in await listed(gateway)] == [x["id"] for x in letters]
    code, shown = await cli(gateway, "show", letters[0]["id"])
    assert code == 0
    assert "x-origin: replay-test" in shown
    assert '"op": "slow"' in shown  # the body preview, as text

    code, out = await cli(gateway, "replay", "--all", "--dry-run")
    assert code == 0 and "3 of 3" in out
    assert len(await listed(gateway)) == 3

    gateway.write(**FIXED)
    async with gateway.running():
        code, out = await cli(gateway, "replay", "--all")
        assert code == 0, out
        assert "replayed 3 dead letter(s)" in out
        await wait_until(lambda: all(gateway.count("done", m) == 1 for m in ids),
                         timeout=60, what="every replayed message handled")
        # Long enough for a wrong redelivery or a second copy to show up.
        await asyncio.sleep(harness.redelivery_window_s)
    assert [gateway.count("done", m) for m in ids] == [1, 1, 1]
    # Two failed attempts before, exactly one run after the replay ...
    assert [gateway.count("runs", m) for m in ids] == [3, 3, 3]
    # ... which started again at attempt 1.
    assert {gateway.kv.get(f"started:{m}") for m in ids} == {b"1"}
    assert await listed(gateway) == []


async def test_replay_one_where_dry_run_unknown_id_and_purge(harness: BrokerHarness,
                                                             gateway: Gateway) -> None:
    gateway.write(**FAILING)
    async with gateway.running():
        await harness.publish(message("p1", "status", n=422), key=b"k")
        await harness.publish(message("p2", "err"), key=b"k")
        letters = await wait_listed(gateway, 2)
    by_status = {x["status"]: x for x in letters}
    assert sorted(by_status) == ["422", "500"]

    code, out = await cli(gateway, "replay", "--where", "status=422", "--dry-run")
    assert code == 0 and "1 of 2" in out
    code, out = await cli(gateway, "replay", "--where", "reason=failed on purpose",
                          "--dry-run")
    assert code == 0 and "1 of 2" in out
    with pytest.raises(DeadLetterNotFound, match="no dead letter 'nope'"):
        await cli(gateway, "show", "nope")

    replayed = by_status["500"]["id"]
    code, out = await cli(gateway, "replay", replayed)
    assert code == 0 and "replayed 1 dead letter(s)" in out
    assert [x["id"] for x in await listed(gateway)] == [by_status["422"]["id"]]

    # No terminal to ask and no --yes: refused, nothing deleted.
    with pytest.raises(ConfigError, match="pass --yes"):
        await cli(gateway, "purge")
    code, out = await cli(gateway, "purge", answer="n\n")
    assert code == 1 and "nothing deleted" in out
    assert len(await listed(gateway)) == 1
    code, out = await cli(gateway, "purge", "--yes")
    assert code == 0 and "purged 1" in out
    assert await listed(gateway) == []

    # The replayed message is on its source again: still failing, it runs with a fresh
    # attempt count and comes back dead-lettered, saying where it was replayed from.
    async with gateway.running():
        [again] = await wait_listed(gateway, 1)
    assert gateway.count("runs", "p2") == 4
    assert gateway.kv.get("started:p2") == b"2"
    assert again["id"] != replayed
    code, shown = await cli(gateway, "show", again["id"])
    assert f"wasmgate-replayed-from: {harness.trigger_kind}[0]:{replayed}" in shown


async def _write_again(harness: BrokerHarness, letter: DeadLetter) -> None:
    """Put ``letter`` on the dead-letter destination once more, as the redelivery after a
    kill between writing a dead letter and settling its message does."""
    headers = {k: v for k, v in letter.headers.items() if k != "x-death"}
    if isinstance(harness, KafkaHarness):
        assert harness._producer is not None
        await harness._producer.send_and_wait(
            harness.dead_letter, letter.data, headers=[(k, v.encode()) for k, v in headers.items()])
    else:
        assert isinstance(harness, AmqpHarness) and harness._channel is not None
        exchange = await harness._channel.get_exchange(harness.dead_exchange)
        await exchange.publish(aio_pika.Message(letter.data, headers=dict(headers)),
                               routing_key=harness.queue)


async def test_copies_of_one_dead_letter_are_listed_once_and_replayed_once(
        harness: BrokerHarness, gateway: Gateway) -> None:
    if not isinstance(harness, KafkaHarness | AmqpHarness):
        pytest.skip(f"{harness.name} writes a dead letter once (a deduplicated publish, or "
                    "one script with the ack)")
    gateway.write(**FAILING)
    async with gateway.running():
        await harness.publish(message("twice", "slow", ms=400), key=b"k")
        [letter] = await wait_for_dead_letters(harness.read_dead_letters, 1)
    # RabbitMQ's read took the message off the queue: put it back, then a copy; Kafka's
    # read left it there: one copy.
    for _ in range(2 if isinstance(harness, AmqpHarness) else 1):
        await _write_again(harness, letter)
    [shown] = await wait_listed(gateway, 1)
    assert shown["id"]

    gateway.write(**FIXED)
    async with gateway.running():
        code, out = await cli(gateway, "replay", "--all")
        assert code == 0 and "replayed 1 dead letter(s)" in out, out
        await wait_until(lambda: gateway.count("done", "twice") == 1, timeout=60,
                         what="the replayed message handled")
        await asyncio.sleep(harness.redelivery_window_s)  # no second replay follows
    assert gateway.count("done", "twice") == 1
    assert await listed(gateway) == []
