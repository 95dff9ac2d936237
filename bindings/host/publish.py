"""The ``publish`` import: a handler sends a message to a broker declared in the manifest.

This is what turns handlers into pipelines (an HTTP webhook handler publishes to Kafka, a
Kafka handler publishes to NATS). Deny by default: a component's ``publish`` grants list
``"<broker>:<destination pattern>"`` (matched token by token, NATS-style ``*`` and ``>``:
see :mod:`bindings.host.publish_grants`) and anything else is refused with an error value
naming the grant to add.

Every send is awaited with the broker's own confirmation before the guest gets its
receipt: Kafka ``acks=all``, a JetStream ack, a RabbitMQ publisher confirm (with
``mandatory`` so an unroutable message is an error, not a silent drop), the XADD id.

The producers live on the app's event loop, one per broker, opened on first use and shared
by every component. Host calls run on the executor's worker threads, so a send is handed to
the loop with ``run_coroutine_threadsafe`` and the worker waits for the receipt, at most
until the event's deadline (:mod:`gateway.deadline`), so a broker that never confirms
cannot hold an instance slot past ``timeout-ms``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from typing import Any

from gateway import deadline
from gateway.errors import ConfigError, DeadlineExceeded, WasmgateError
from gateway.grants import PublishGrant, parse_publish_grant
from gateway.manifest import BrokerSpec
from gateway.redaction import redact_url

PUBLISH_TIMEOUT_S = 30.0


class PublishError(WasmgateError):
    """A refused or failed publish (the message goes back to the guest)."""


@dataclasses.dataclass
class OutboundMessage:
    broker: str
    destination: str
    key: bytes | None
    headers: list[tuple[str, str]]
    body: bytes


class BrokerClients:
    """One lazily opened producer per declared broker, on the app's event loop."""

    def __init__(self, brokers: dict[str, BrokerSpec]) -> None:
        self.brokers = brokers
        self._loop: asyncio.AbstractEventLoop | None = None
        self._producers: dict[str, _Producer] = {}
        self._opening: dict[str, asyncio.Lock] = {}
        self._inflight: set[asyncio.Task[str]] = set()

    @property
    def bound(self) -> bool:
        return self._loop is not None

    def bind_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def publish_from_thread(self, message: OutboundMessage) -> str:
        """Publish from a worker thread; blocks until the broker confirmed, at most until
        the event's deadline (and never longer than ``PUBLISH_TIMEOUT_S``)."""
        if self._loop is None:
            raise PublishError("publishing is not available before the app has started")
        where = f"a publish to {message.destination!r} on broker `{message.broker}`"
        left = deadline.check(where)
        wait = PUBLISH_TIMEOUT_S if left is None else min(left, PUBLISH_TIMEOUT_S)
        future = asyncio.run_coroutine_threadsafe(self._tracked(message), self._loop)
        try:
            return future.result(timeout=wait)
        except TimeoutError:
            future.cancel()
            # Cancelling stops the wait, not a message already on the wire: say so.
            if left is not None and left < PUBLISH_TIMEOUT_S:
                raise DeadlineExceeded(
                    f"broker `{message.broker}` did not confirm the {where[2:]} within "
                    f"{wait * 1000:.0f} ms, what was left of the event's deadline "
                    "(`timeout-ms`); the message may still arrive") from None
            raise PublishError(
                f"broker `{message.broker}` did not confirm a publish to "
                f"{message.destination!r} within {PUBLISH_TIMEOUT_S:.0f} s; the message may "
                "still arrive") from None

    async def _tracked(self, message: OutboundMessage) -> str:
        # Remembered until done, so close() can let a publish cancelled at its deadline
        # finish closing its half-open connection before the loop goes away.
        task = asyncio.current_task()
        if task is not None:
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)
        return await self.publish(message)

    async def publish(self, message: OutboundMessage) -> str:
        producer = await self._producer(message.broker)
        try:
            return await producer.send(message)
        except PublishError:
            raise
        except Exception as exc:
            # A failed producer may be half-closed: drop it so the next send reconnects.
            self._producers.pop(message.broker, None)
            await _quietly(producer.close())
            raise PublishError(
                f"publish to {message.destination!r} on broker `{message.broker}` "
                f"({redact_url(producer.spec.url)}) failed: {type(exc).__name__}: {exc}"
            ) from None

    async def _producer(self, name: str) -> _Producer:
        if name in self._producers:
            return self._producers[name]
        lock = self._opening.setdefault(name, asyncio.Lock())
        async with lock:
            if name not in self._producers:
                spec = self.brokers[name]
                producer = _PRODUCERS[spec.kind](name, spec)
                try:
                    await asyncio.wait_for(producer.open(), spec.connect_timeout_ms / 1000)
                except asyncio.CancelledError:
                    # The publishing thread stopped waiting (the event's deadline): a
                    # half-open connection must not outlive the attempt.
                    await _quietly(producer.close())
                    raise
                except Exception as exc:
                    await _quietly(producer.close())
                    raise PublishError(
                        f"cannot connect to broker `{name}` at {redact_url(spec.url)}: "
                        f"{type(exc).__name__}: {exc}") from None
                self._producers[name] = producer
        return self._producers[name]

    async def close(self) -> None:
        if self._inflight:
            await asyncio.wait(list(self._inflight), timeout=PUBLISH_TIMEOUT_S)
        producers, self._producers = list(self._producers.values()), {}
        for producer in producers:
            await _quietly(producer.close())


class Publisher:
    """One component's view of the brokers: its grants, checked on every send."""

    def __init__(self, component: str, grants: list[str], clients: BrokerClients) -> None:
        self.component = component
        self.clients = clients
        self.grants: list[PublishGrant] = []
        for grant in grants:
            broker = grant.partition(":")[0]
            if broker not in clients.brokers:
                continue  # the manifest refuses these; check() refuses the broker anyway
            try:
                self.grants.append(parse_publish_grant(grant, clients.brokers[broker].kind))
            except ValueError as exc:
                raise ConfigError(str(exc), field=f"component.{component}.publish") from None

    def check(self, broker: str, destination: str) -> None:
        if broker not in self.clients.brokers:
            known = ", ".join(f"`{b}`" for b in sorted(self.clients.brokers)) or "(none)"
            raise PublishError(f"no broker named `{broker}` is declared (known brokers: "
                               f"{known}); declare it with [brokers.{broker}]")
        if any(grant.matches(broker, destination) for grant in self.grants):
            return
        raise PublishError(
            f"component `{self.component}` may not publish to {destination!r} on broker "
            f"`{broker}`; add \"{broker}:{destination}\" (or a pattern: `*` one token, `>` "
            f"the rest) to `publish` of [component.{self.component}]")

    def send(self, message: OutboundMessage) -> str:
        self.check(message.broker, message.destination)
        return self.clients.publish_from_thread(message)


# -- one producer per broker kind --------------------------------------------------------------


class _Producer:
    def __init__(self, name: str, spec: BrokerSpec) -> None:
        self.name = name
        self.spec = spec

    async def open(self) -> None:
        raise NotImplementedError

    async def send(self, message: OutboundMessage) -> str:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


class _KafkaProducer(_Producer):
    async def open(self) -> None:
        from aiokafka import AIOKafkaProducer

        from gateway.brokers.kafka import client_options

        self._producer = AIOKafkaProducer(**client_options(self.name, self.spec), acks="all")
        await self._producer.start()

    async def send(self, message: OutboundMessage) -> str:
        headers = [(k, v.encode()) for k, v in message.headers]
        meta = await self._producer.send_and_wait(message.destination, message.body,
                                                  key=message.key, headers=headers or None)
        return f"{meta.topic}/{meta.partition}/{meta.offset}"

    async def close(self) -> None:
        if hasattr(self, "_producer"):
            await self._producer.stop()


class _NatsProducer(_Producer):
    async def open(self) -> None:
        from nats.aio.client import Client

        from gateway.brokers.nats import connect_options

        # Created before connecting, so close() can end an attempt that was cancelled.
        self._nc = Client()
        await self._nc.connect(**connect_options(self.name, self.spec),
                               max_reconnect_attempts=-1, allow_reconnect=True)
        self._js = self._nc.jetstream()

    async def send(self, message: OutboundMessage) -> str:
        headers = dict(message.headers)
        if message.key is not None:
            headers.setdefault("wasmgate-key", message.key.decode("utf-8", "replace"))
        if message.destination.startswith("js:"):
            ack = await self._js.publish(message.destination[3:], message.body,
                                         headers=headers or None)
            return f"{ack.stream}:{ack.seq}"
        await self._nc.publish(message.destination, message.body, headers=headers or None)
        await self._nc.flush()  # the server has it once flush returns
        return "confirmed"

    async def close(self) -> None:
        if hasattr(self, "_nc"):
            await self._nc.close()


class _AmqpProducer(_Producer):
    async def open(self) -> None:
        import aio_pika

        from gateway.brokers.amqp import connect_options

        self._connection = await aio_pika.connect_robust(**connect_options(self.name,
                                                                           self.spec))
        # Confirms: publish returns once the broker took responsibility. on_return_raises:
        # a mandatory message no queue would take is an error, not a silent drop.
        self._channel = await self._connection.channel(publisher_confirms=True,
                                                       on_return_raises=True)

    async def send(self, message: OutboundMessage) -> str:
        import aio_pika

        exchange_name, sep, routing_key = message.destination.partition("/")
        if not sep:
            raise PublishError(f"AMQP destination {message.destination!r} must read "
                               "`<exchange>/<routing-key>` (or `/<queue>` for the default "
                               "exchange)")
        exchange = (self._channel.default_exchange if not exchange_name
                    else await self._channel.get_exchange(exchange_name, ensure=True))
        headers: dict[str, Any] = dict(message.headers)
        if message.key is not None:
            headers.setdefault("wasmgate-key", message.key.decode("utf-8", "replace"))
        await exchange.publish(
            aio_pika.Message(message.body, headers=headers,
                             delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
            routing_key=routing_key, mandatory=True)
        return "confirmed"

    async def close(self) -> None:
        if hasattr(self, "_connection"):
            await self._connection.close()


class _RedisProducer(_Producer):
    async def open(self) -> None:
        from gateway.brokers.redis import redis_client

        timeout_s = self.spec.connect_timeout_ms / 1000
        self._redis: Any = redis_client(self.spec, read_timeout_s=timeout_s, retries=0,
                                        name=self.name)
        await self._redis.ping()

    async def send(self, message: OutboundMessage) -> str:
        if message.destination.startswith("stream:"):
            # The same field layout the redis-streams trigger reads: data, key, headers.
            fields: dict[str, bytes | str] = dict(message.headers)
            fields["data"] = message.body
            if message.key is not None:
                fields["key"] = message.key
            entry_id = await self._redis.xadd(message.destination[7:], fields)
            return bytes(entry_id).decode() if isinstance(entry_id, bytes) else str(entry_id)
        receivers = await self._redis.publish(message.destination, message.body)
        return f"{receivers} receivers"

    async def close(self) -> None:
        if hasattr(self, "_redis"):
            await self._redis.aclose()


_PRODUCERS: dict[str, type[_Producer]] = {
    "kafka": _KafkaProducer, "nats": _NatsProducer, "amqp": _AmqpProducer,
    "redis": _RedisProducer,
}


async def _quietly(closing: Any) -> None:
    # Closing a broken client must not mask the error that broke it.
    with contextlib.suppress(Exception):
        await closing


__all__ = ["BrokerClients", "OutboundMessage", "PublishError", "Publisher"]
