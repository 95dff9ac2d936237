"""Contract harness for ``amqp``: a fresh topic exchange, quorum queue, dead-letter exchange
and dead-letter queue per test on the shared RabbitMQ (127.0.0.1:5672, guest/guest).

The fault test does not stop the shared broker: :meth:`AmqpHarness.interrupt` closes, server
side (``rabbitmqctl close_connection``), only the connections the gateway opened for this
test's queue, which it finds by the connection name the adapter sets.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, ClassVar

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange, ExchangeType

from tests.contract.harness import DeadLetter, HarnessBase, unique
from tests.kafka_broker import ConnectionCutter
from triggers.amqp_messages import header_text

SHARED_URL = "amqp://guest:guest@127.0.0.1:5672/"


async def rabbitmqctl(*args: str) -> str:
    """Run ``rabbitmqctl -q ARGS`` (the Erlang CLI takes a second or two to start)."""
    process = await asyncio.create_subprocess_exec(
        "rabbitmqctl", "-q", *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed: {err.decode()}")
    return out.decode()


async def connections_named(fragment: str) -> list[str]:
    """The pids of the broker's connections whose client properties mention ``fragment``
    (the adapter names its connection after its queue)."""
    # The tab-separated listing, not --formatter json: only its pid form
    # (<rabbit@host.N.N.N>) is accepted back by close_connection.
    listing = await rabbitmqctl("list_connections", "pid", "client_properties")
    return [line.split("\t", 1)[0] for line in listing.splitlines()
            if fragment in line and line.startswith("<")]


class AmqpHarness(HarnessBase):
    name: ClassVar[str] = "amqp"
    trigger_kind: ClassVar[str] = "amqp"
    redelivers: ClassVar[bool] = True
    dead_letters: ClassVar[bool] = True
    # The broker requeues unacked messages the moment their connection closes, so a short
    # window shows any wrong redelivery.
    redelivery_window_s: ClassVar[float] = 1.5
    broker_kind: ClassVar[str] = "amqp"

    def __init__(self, url: str = SHARED_URL) -> None:
        super().__init__(url)
        self.queue = unique("wg-contract")
        self.exchange = self.queue + ".in"
        self.dead_exchange = self.queue + ".dlx"
        self.dead_queue = self.queue + ".dead"
        self._letters: list[DeadLetter] = []
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._in: AbstractExchange | None = None
        self._proxy: ConnectionCutter | None = None

    async def setup(self) -> None:
        # Declared here with the same arguments as the trigger's, so messages published
        # before the gateway is up are kept (and the trigger's declare is a no-op).
        self._connection = await aio_pika.connect(self.url)
        self._channel = await self._connection.channel(publisher_confirms=True)
        self._in = await self._channel.declare_exchange(self.exchange, ExchangeType.TOPIC,
                                                        durable=True)
        queue = await self._channel.declare_queue(
            self.queue, durable=True, arguments={"x-queue-type": "quorum"})
        await queue.bind(self._in, routing_key="#")
        dlx = await self._channel.declare_exchange(self.dead_exchange, ExchangeType.DIRECT,
                                                   durable=True)
        dead = await self._channel.declare_queue(
            self.dead_queue, durable=True, arguments={"x-queue-type": "quorum"})
        await dead.bind(dlx, routing_key=self.queue)

    async def teardown(self) -> None:
        assert self._channel is not None and self._connection is not None
        for queue in (self.queue, self.dead_queue):
            await self._channel.queue_delete(queue)
        for exchange in (self.exchange, self.dead_exchange):
            await self._channel.exchange_delete(exchange)
        await self._connection.close()
        if self._proxy is not None:
            await self._proxy.close()

    async def break_dead_letters(self) -> None:
        assert self._channel is not None
        await self._channel.exchange_delete(self.dead_exchange)

    async def mend_dead_letters(self) -> None:
        assert self._channel is not None
        dlx = await self._channel.declare_exchange(self.dead_exchange, ExchangeType.DIRECT,
                                                   durable=True)
        dead = await self._channel.declare_queue(
            self.dead_queue, durable=True, arguments={"x-queue-type": "quorum"})
        await dead.bind(dlx, routing_key=self.queue)

    async def take_down(self) -> None:
        # The shared broker is never stopped: the gateway is pointed at a proxy in front of
        # it that refuses connections until bring_up(); this harness's own client is not.
        self._proxy = ConnectionCutter(int(self.url.rsplit(":", 1)[1].split("/")[0]))
        self.url = f"amqp://guest:guest@127.0.0.1:{self._proxy.port}/"

    async def bring_up(self) -> None:
        assert self._proxy is not None, "bring_up() after take_down()"
        await self._proxy.start()

    def trigger_options(self) -> dict[str, Any]:
        return {"queue": self.queue, "exchange": self.exchange, "exchange-type": "topic",
                "binding-keys": ["#"], "dead-letter": self.dead_exchange,
                "dead-letter-queue": self.dead_queue}

    async def publish(self, payload: bytes, *, key: bytes | None = None,
                      headers: dict[str, str] | None = None) -> None:
        assert self._in is not None
        message = aio_pika.Message(payload, headers=dict(headers or {}),
                                   delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
        # The routing key is the ordering key (the adapter's default).
        await self._in.publish(message, routing_key=key.decode() if key else "-")

    async def read_dead_letters(self) -> list[DeadLetter]:
        assert self._channel is not None
        queue = await self._channel.get_queue(self.dead_queue, ensure=False)
        while (message := await queue.get(fail=False, no_ack=True)) is not None:
            headers = {k: header_text(v) for k, v in (message.headers or {}).items()}
            self._letters.append(DeadLetter(data=message.body, headers=headers))
        return list(self._letters)

    async def interrupt(self) -> None:
        pids = await connections_named(self.queue)
        assert pids, f"no gateway connection for {self.queue} to close"
        for pid in pids:
            await rabbitmqctl("close_connection", pid, "contract test: interrupt")

    @classmethod
    @asynccontextmanager
    async def private(cls) -> AsyncIterator[AmqpHarness]:
        # The shared broker is never stopped: interrupt() closes this test's connections.
        harness = cls()
        await harness.setup()
        try:
            yield harness
        finally:
            await harness.teardown()


HARNESS = AmqpHarness
