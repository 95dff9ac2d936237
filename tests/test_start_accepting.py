"""start() returns once the trigger accepts messages, also where the trigger itself makes
the destination: an AMQP queue it declares (a message routed before the declare has nowhere
to go) and a Redis Streams group it creates at ``$`` (an entry added before the group exists
is behind the group's start). Both lost the first message when start() returned at once.

Real RabbitMQ and Redis on loopback, the contract suite's component and harnesses; nothing
waits for readiness between start() and the publish.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.contract.brokers.amqp import AmqpHarness
from tests.contract.brokers.redis_streams import RedisStreamsHarness
from tests.contract.harness import Gateway, message, unique, wait_until

pytestmark = pytest.mark.wasm


@pytest.fixture
async def amqp() -> AsyncIterator[AmqpHarness]:
    harness = AmqpHarness()
    await harness.setup()
    yield harness
    await harness.teardown()


@pytest.fixture
async def redis_streams() -> AsyncIterator[RedisStreamsHarness]:
    harness = RedisStreamsHarness()
    await harness.setup()
    yield harness
    await harness.teardown()


async def test_amqp_declares_and_binds_its_queue_before_start_returns(
        amqp: AmqpHarness, tmp_path: Path) -> None:
    queue = unique("wg-declared-by-trigger")
    gateway = Gateway(amqp, tmp_path)
    gateway.write(queue=queue)  # not declared by the harness: the trigger declares it
    try:
        async with gateway.running(wait_ready=False):
            await amqp.publish(message("first"))
            await wait_until(lambda: gateway.count("done", "first") == 1,
                             what="the message routed as start() returned")
    finally:
        gateway.close()
        assert amqp._channel is not None
        await amqp._channel.queue_delete(queue)


async def test_redis_streams_creates_its_group_before_start_returns(
        redis_streams: RedisStreamsHarness, tmp_path: Path) -> None:
    stream = unique("wg-group-by-trigger")
    gateway = Gateway(redis_streams, tmp_path)
    gateway.write(stream=stream)  # no group yet: the trigger creates it at "$"
    try:
        async with gateway.running(wait_ready=False):
            await redis_streams.client.xadd(stream, {"data": message("first")})
            await wait_until(lambda: gateway.count("done", "first") == 1,
                             what="the entry added as start() returned")
    finally:
        gateway.close()
        await redis_streams.client.delete(stream)
