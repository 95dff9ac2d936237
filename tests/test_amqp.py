"""AMQP behaviour the contract suite does not reach: request/reply, attempts counted across
redeliveries, dead letters that cannot be routed, the queue's own DLX, a stop during a
retry's backoff, a broker down at start, a missing queue. Real RabbitMQ (the shared one on
127.0.0.1:5672) and the contract component."""

from __future__ import annotations

import asyncio
import json
import uuid
from contextlib import suppress
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage
from structlog.testing import capture_logs

from gateway.app import App
from tests.contract.brokers.amqp import AmqpHarness
from tests.contract.harness import (
    Gateway,
    message,
    toml_options,
    wait_for_dead_letters,
    wait_until,
)
from triggers.amqp_messages import REPLY_STATUS
from triggers.delivery import DL_STATUS

pytestmark = pytest.mark.wasm


@pytest.fixture
def harness_class() -> type[AmqpHarness]:
    return AmqpHarness


def channel_of(harness: AmqpHarness) -> AbstractChannel:
    assert harness._channel is not None
    return harness._channel


async def publish(harness: AmqpHarness, msg: aio_pika.Message, key: str = "-") -> None:
    assert harness._in is not None
    await harness._in.publish(msg, routing_key=key)


def trigger_of(app: App) -> Any:
    [trigger] = app.triggers
    return trigger


async def test_a_request_with_reply_to_gets_the_handlers_response(
        harness: AmqpHarness, gateway: Gateway) -> None:
    channel = channel_of(harness)
    replies = await channel.declare_queue(exclusive=True, auto_delete=True)
    gateway.write()
    async with gateway.running():
        await publish(harness, aio_pika.Message(message("rpc-ok"), reply_to=replies.name,
                                                correlation_id="c-ok"))
        await publish(harness, aio_pika.Message(message("rpc-bad", "status", n=422),
                                                reply_to=replies.name, correlation_id="c-bad"))
        got: dict[str, AbstractIncomingMessage] = {}

        async def poll() -> None:
            while len(got) < 2:
                reply = await replies.get(fail=False, no_ack=True)
                if reply is None:
                    await asyncio.sleep(0.05)
                else:
                    got[reply.correlation_id or "?"] = reply
        await asyncio.wait_for(poll(), 30)
        [letter] = await wait_for_dead_letters(harness.read_dead_letters, 1)
    ok, bad = got["c-ok"], got["c-bad"]
    assert ok.body == b"ok:rpc-ok"
    assert ok.headers[REPLY_STATUS] == "200"
    assert ok.headers["x-contract-id"] == "rpc-ok"
    # A refused request is answered too (the caller is waiting) and dead-lettered.
    assert bad.headers[REPLY_STATUS] == "422"
    assert bad.body == b"status"
    assert letter.headers[DL_STATUS] == "422"


async def test_direct_reply_to_works(harness: AmqpHarness, gateway: Gateway) -> None:
    channel = channel_of(harness)
    pseudo = await channel.get_queue("amq.rabbitmq.reply-to", ensure=False)
    answer: asyncio.Future[AbstractIncomingMessage] = asyncio.get_running_loop().create_future()

    async def on_reply(reply: AbstractIncomingMessage) -> None:
        if not answer.done():
            answer.set_result(reply)

    # Direct reply-to: consume the pseudo-queue (no-ack) before publishing the request.
    tag = await pseudo.consume(on_reply, no_ack=True)
    gateway.write()
    try:
        async with gateway.running():
            await publish(harness, aio_pika.Message(message("direct"), correlation_id="d1",
                                                    reply_to="amq.rabbitmq.reply-to"))
            reply = await asyncio.wait_for(answer, 30)
    finally:
        await pseudo.cancel(tag)
    assert reply.body == b"ok:direct"
    assert reply.correlation_id == "d1"


async def _nack_times(harness: AmqpHarness, times: int) -> None:
    """Take the queued message and hand it back ``times`` times (as crashed consumers do)."""
    queue = await channel_of(harness).get_queue(harness.queue, ensure=False)
    for _ in range(times):
        got = None
        while got is None:
            got = await queue.get(fail=False)
            await asyncio.sleep(0.02)
        await got.nack(requeue=True)


async def test_the_attempt_number_counts_earlier_deliveries(
        harness: AmqpHarness, gateway: Gateway) -> None:
    await harness.publish(message("again", "fail-until", n=3))
    await _nack_times(harness, 2)
    gateway.write(**{"max-attempts": 5, "initial-backoff-ms": 20})
    async with gateway.running():
        await wait_until(lambda: gateway.count("done", "again") == 1, what="the third delivery")
    # Two deliveries went elsewhere: this run was attempt 3, so fail-until 3 succeeded at once.
    assert gateway.kv.get("started:again") == b"3"
    assert gateway.count("runs", "again") == 1


async def test_an_unroutable_dead_letter_is_not_lost(
        harness: AmqpHarness, gateway: Gateway) -> None:
    channel = channel_of(harness)
    orphan_dlx = harness.queue + ".nowhere"
    await channel.declare_exchange(orphan_dlx, aio_pika.ExchangeType.DIRECT, durable=True)
    # No dead-letter-queue: nothing is bound to the dead-letter exchange yet.
    gateway.write(**{"max-attempts": 1, "dead-letter": orphan_dlx,
                     "dead-letter-queue": harness.dead_queue + "-unused",
                     "max-backoff-ms": 200})
    # The harness's dead-letter-queue option would bind a queue; use a routing key nobody
    # listens to instead, so the publish is returned (mandatory) until a queue is bound.
    text = gateway.manifest.read_text().replace(
        f'dead-letter-queue = "{harness.dead_queue}-unused"\n',
        'dead-letter-routing-key = "late"\n')
    gateway.manifest.write_text(text)
    late = await channel.declare_queue(harness.queue + ".late", durable=True)
    def refused() -> int:
        return sum(e["event"].startswith("dead letter not confirmed") for e in logs)
    try:
        with capture_logs() as logs:
            async with gateway.running():
                await harness.publish(message("homeless", "err"))
                # Not acked while its dead letter has no route: requeued, and again.
                await wait_until(lambda: refused() >= 2, what="two refused dead letters")
                await late.bind(orphan_dlx, routing_key="late")

                async def arrived() -> AbstractIncomingMessage:
                    while (got := await late.get(fail=False, no_ack=True)) is None:
                        await asyncio.sleep(0.05)
                    return got
                letter = await asyncio.wait_for(arrived(), 30)
        assert json.loads(letter.body)["id"] == "homeless"
        # Redeliveries past max-attempts were dead-lettered without running it again.
        assert gateway.count("runs", "homeless") == 1
    finally:
        await channel.queue_delete(late.name)
        await channel.exchange_delete(orphan_dlx)


class QueuePolicyHarness(AmqpHarness):
    """A queue whose own x-dead-letter-exchange takes rejected messages; the trigger has
    no dead-letter exchange of its own."""

    async def setup(self) -> None:
        await super().setup()
        self.queue_args = {"x-dead-letter-exchange": self.dead_exchange,
                           "x-dead-letter-routing-key": self.queue}
        self.own_queue = self.queue + ".policy"
        queue = await channel_of(self).declare_queue(
            self.own_queue, durable=True, arguments={"x-queue-type": "quorum",
                                                     **self.queue_args})
        assert self._in is not None
        await queue.bind(self._in, routing_key="policy")

    async def teardown(self) -> None:
        await channel_of(self).queue_delete(self.own_queue)
        await super().teardown()

    def trigger_toml(self, **options: Any) -> str:
        return toml_options({"component": "contract", "broker": "b",
                             "queue": self.own_queue, "queue-arguments": self.queue_args,
                             **options})


async def test_without_a_dead_letter_exchange_the_queue_policy_takes_the_reject(
        tmp_path: Path) -> None:
    harness = QueuePolicyHarness()
    await harness.setup()
    gateway = Gateway(harness, tmp_path)
    try:
        gateway.write(**{"max-attempts": 2, "initial-backoff-ms": 20})
        async with gateway.running():
            await publish(harness, aio_pika.Message(message("rejected", "err")), "policy")
            [letter] = await wait_for_dead_letters(harness.read_dead_letters, 1)
        assert json.loads(letter.data)["id"] == "rejected"
        assert "x-death" in letter.headers  # the broker's own dead-lettering
        assert gateway.count("runs", "rejected") == 2
    finally:
        gateway.close()
        await harness.teardown()


async def test_a_stop_during_a_retry_backoff_leaves_the_message_queued(
        harness: AmqpHarness, gateway: Gateway) -> None:
    gateway.write(**{"max-attempts": 5, "initial-backoff-ms": 5000, "stop-grace-ms": 300})
    async with gateway.running():
        await harness.publish(message("patient", "err"))
        await wait_until(lambda: gateway.count("runs", "patient") == 1, what="first attempt")
    # stop() gave up waiting for the backoff: unacked, so the broker has it back (a quorum
    # queue takes a moment to return a closed consumer's messages).
    async def ready_count() -> int:
        queue = await channel_of(harness).declare_queue(harness.queue, passive=True)
        return int(queue.declaration_result.message_count or 0)

    async def requeued() -> None:
        while await ready_count() != 1:
            await asyncio.sleep(0.1)
    await asyncio.wait_for(requeued(), 10)
    assert await harness.read_dead_letters() == []


async def test_declare_false_reports_a_missing_queue_and_how_to_fix_it(
        harness: AmqpHarness, gateway: Gateway) -> None:
    missing = f"wg-missing-{uuid.uuid4().hex[:8]}"
    gateway.write(declare=False)
    gateway.manifest.write_text(gateway.manifest.read_text().replace(
        f'queue = "{harness.queue}"', f'queue = "{missing}"'))
    with capture_logs() as logs:
        async with gateway.running(wait_ready=False) as app:
            await wait_until(lambda: any(e["event"].startswith("broker unavailable")
                                         for e in logs), what="the failure to be logged")
            assert not trigger_of(app).ready.is_set()
    [down] = [e for e in logs if e["event"].startswith("broker unavailable")]
    assert missing in down["error"]
    assert "declare = true" in down["error"]
    with suppress(Exception):
        await channel_of(harness).queue_delete(missing)
