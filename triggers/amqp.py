"""The AMQP trigger: consume a RabbitMQ queue, call a component per message, settle.

Each ``[[trigger.amqp]]`` table names a ``queue`` on a ``[brokers.<name>]`` of kind
``amqp``. Delivery semantics (see docs/triggers/amqp.md):

* **At least once.** Manual acks; a message is acked only after its outcome is settled
  (handled, replied to, or dead-lettered with a publisher confirm). Whatever is unacked
  when a connection drops or the gateway dies is requeued by the broker.
* **Prefetch = concurrency.** The broker never hands this consumer more unacked messages
  than ``concurrency``; a slow handler pushes back on the broker, not on memory.
* **Retries in process** (:func:`~triggers.delivery.deliver`). A failed attempt is retried
  here after the backoff, the message held unacked, so its key's lane (and the queue's
  order) is kept and nothing is ever in a second place. The attempt number survives a
  redelivery through the quorum queue's ``x-delivery-count``; a message delivered more
  than ``max-attempts`` times (it crashed the gateway each time) is dead-lettered unrun.
* **Dead letters are published, not rejected.** After the last attempt (or at once on a
  4xx) a copy with the original headers plus ``wasmgate-dead-letter-*`` goes to the
  ``dead-letter`` exchange, confirmed, and only then is the original acked. Without
  ``dead-letter`` the message is rejected (``requeue=false``), so a DLX policy on the
  queue, if any, takes it.
* **Reply-to.** A message with ``reply_to`` gets the handler's response (status in the
  ``wasmgate-status`` header, same ``correlation_id``), confirmed before the ack.
"""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass, field
from typing import Any, ClassVar

import aio_pika
import aiormq
import structlog
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
)

from bindings.types import Event
from gateway.brokers.amqp import connect
from gateway.dispatch import Outcome, RetryPolicy
from gateway.errors import BrokerError
from gateway.manifest import BrokerSpec
from gateway.redaction import redact_url
from triggers.amqp_config import AmqpConfig, validate
from triggers.amqp_messages import (
    dead_letter_message,
    delivery_count,
    event_from_message,
    reply_message,
)
from triggers.amqp_topology import dead_letter_routing_key, declare
from triggers.base import Dispatch, TriggerContext, decode_config, register
from triggers.closing import close_quietly
from triggers.delivery import (
    ConnectionWatch,
    OrderedLanes,
    Settle,
    dead_letter_refused,
    deliver,
    describe,
    drain_at_stop,
    lane_key,
)
from triggers.readiness import until_accepting

log = structlog.get_logger("wasmgate.amqp")

@dataclass
class _Session:
    """One live connection: the consuming channel and the confirming publisher channel.

    A message is settled through the session it arrived on: after a reconnect its delivery
    tag means nothing, and publishing its reply or dead letter on the new connection and
    then failing to ack it would only duplicate the publish.
    """

    connection: AbstractConnection
    consumer: AbstractChannel
    queue: AbstractQueue
    confirm_timeout_s: float
    publisher: AbstractChannel | None = None
    consumer_tag: str | None = None
    lost_reason: str | None = None
    inbox: asyncio.Queue[AbstractIncomingMessage | None] = field(
        default_factory=asyncio.Queue)
    _exchanges: dict[str, AbstractExchange] = field(default_factory=dict)
    _publisher_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def publish(self, exchange: str, routing_key: str, message: aio_pika.Message,
                      *, mandatory: bool) -> None:
        """Publish and wait for the broker's confirm; raises if it is not confirmed
        (nack, unroutable with ``mandatory``, timeout, channel or connection gone)."""
        channel = await self._publisher_channel()
        target = self._exchanges.get(exchange)
        if target is None:
            target = (channel.default_exchange if exchange == ""
                      else await channel.get_exchange(exchange, ensure=False))
            self._exchanges[exchange] = target
        await target.publish(message, routing_key, mandatory=mandatory,
                             timeout=self.confirm_timeout_s)

    async def _publisher_channel(self) -> AbstractChannel:
        # Reopened lazily: a publish to a deleted exchange closes the channel (404), which
        # must not end the consumer's channel or the connection.
        async with self._publisher_lock:
            if self.publisher is None or self.publisher.is_closed:
                if self.connection.is_closed:
                    raise BrokerError("the AMQP connection is closed")
                self.publisher = await self.connection.channel(publisher_confirms=True,
                                                               on_return_raises=True)
                self._exchanges.clear()
            return self.publisher


class AmqpTrigger:
    """One ``[[trigger.amqp]]`` table: consumes ``queue`` into ``component``."""

    kind: ClassVar[str] = "amqp"

    def __init__(self, config: AmqpConfig, context: TriggerContext) -> None:
        # Set first thing in start(): stop() of a trigger never started (a manifest check
        # builds every trigger to validate it) does nothing and logs nothing.
        self._started = False
        self.config = config
        self.component = config.component
        self.spec: BrokerSpec = context.broker(config.broker)
        self.ready = asyncio.Event()  # set while consuming; cleared when the link is down
        self._watch = ConnectionWatch(f"amqp:{config.queue}", config.broker, self.spec)
        self._lanes = OrderedLanes(config.concurrency)
        self._dispatch: Dispatch | None = None
        self._task: asyncio.Task[None] | None = None
        self._session: _Session | None = None
        self._stopping = False

    # -- lifecycle ------------------------------------------------------------------------

    @property
    def retry_policy(self) -> RetryPolicy:
        """max-attempts and backoff of this table, applied by ``deliver``."""
        return self.config.retry_policy

    async def start(self, dispatch: Dispatch) -> None:
        """Connect, declare and consume; returns once consuming (``ready``), or after the
        broker's connect timeout with the connection still retrying in the background."""
        self._started = True
        if self._task is not None:
            raise RuntimeError(f"amqp trigger for queue {self.config.queue!r} already started")
        self._dispatch = dispatch
        self._task = asyncio.create_task(self._run(), name=f"amqp:{self.config.queue}")
        if not await until_accepting(self.ready, self._task,
                                     timeout_s=self.spec.connect_timeout_ms / 1000):
            log.warning("amqp trigger waiting for its broker; intake starts when it answers",
                        queue=self.config.queue, address=redact_url(self.spec.url))

    async def stop(self) -> None:
        """Stop deliveries, requeue what was not started, let in-flight events finish and
        settle (bounded by ``stop-grace-ms``), then close the connection."""
        if not self._started:
            return
        self._stopping = True
        self.ready.clear()
        session = self._session
        if session is not None:
            await self._cancel_consumer(session)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if session is not None:
            await self._requeue_unstarted(session)
        await drain_at_stop(self._lanes, self.config, redelivered=True, queue=self.config.queue)
        if session is not None:
            # Anything still unacked goes back to the queue when the connection closes.
            await close_quietly(session.connection.close(), what="amqp connection")
        log.info("amqp trigger stopped", component=self.component, queue=self.config.queue)

    async def _run(self) -> None:
        while not self._stopping:
            try:
                session = await self._open()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                await self._watch.down(exc)
                continue
            self._session = session
            try:
                await self._intake(session)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.ready.clear()
                if self._stopping:
                    return
                # In-flight events of this session keep running; their settle calls fail
                # and the broker redelivers them on the next connection.
                await close_quietly(session.connection.close(), what="amqp connection")
                await self._watch.down(exc)

    async def _open(self) -> _Session:
        connection: AbstractConnection = await connect(
            self.config.broker, self.spec,
            connection_name=f"wasmgate {self.component} <- {self.config.queue}")
        try:
            channel = await connection.channel(publisher_confirms=False)
            # Prefetch is the concurrency: the broker stops delivering at that many unacked.
            await channel.set_qos(prefetch_count=self.config.concurrency)
            try:
                queue = await declare(channel, self.config)
            except aiormq.exceptions.ChannelClosed as exc:
                raise BrokerError(_topology_hint(self.config, exc)) from exc
            session = _Session(connection, channel, queue, self.config.confirm_timeout_ms / 1000)
            # Fail at connect, not at the first dead letter, if the publisher cannot open.
            await session._publisher_channel()
        except BaseException:
            await close_quietly(connection.close(), what="amqp connection")
            raise
        return session

    async def _intake(self, session: _Session) -> None:
        """Consume until the connection or channel closes (raises BrokerError then)."""
        def lost(_sender: Any, exc: BaseException | None = None) -> None:
            session.lost_reason = session.lost_reason or (describe(exc) if exc else "closed")
            session.inbox.put_nowait(None)

        session.connection.close_callbacks.add(lost)
        session.consumer.close_callbacks.add(lost)

        async def deliver(message: AbstractIncomingMessage) -> None:
            # Called in delivery order; the queue keeps that order for the loop below.
            session.inbox.put_nowait(message)

        session.consumer_tag = await session.queue.consume(deliver, no_ack=False)
        self._watch.up()
        self.ready.set()
        log.info("consuming", queue=self.config.queue, component=self.component,
                 prefetch=self.config.concurrency)
        while True:
            message = await session.inbox.get()
            if message is None:
                raise BrokerError(f"AMQP connection to {redact_url(self.spec.url)} lost: "
                                  f"{session.lost_reason}")
            event = event_from_message(message, broker=self.config.broker,
                                       queue=self.config.queue,
                                       key_header=self.config.key_header)
            key = lane_key(self.config.ordering, event.key, self.config.queue)
            await self._lanes.submit(key, functools.partial(self._handle, session, message, event))

    # -- one message --------------------------------------------------------------------

    async def _handle(self, session: _Session, message: AbstractIncomingMessage,
                      event: Event) -> None:
        assert self._dispatch is not None
        await deliver(event, _Settle(self.config, session, message, event), run=self._dispatch,
                      component=self.component, policy=self.retry_policy,
                      http_path=self.config.http_path,
                      mode="in-process", delivery_count=delivery_count(message))

    # -- stop helpers -------------------------------------------------------------------

    async def _cancel_consumer(self, session: _Session) -> None:
        if session.consumer_tag is None or session.consumer.is_closed:
            return
        try:
            await session.queue.cancel(session.consumer_tag)
        except Exception as exc:
            log.info("could not cancel the consumer", queue=self.config.queue,
                     error=describe(exc))

    async def _requeue_unstarted(self, session: _Session) -> None:
        """Hand back messages received but not started, so other consumers get them now
        rather than when the connection closes."""
        while not session.inbox.empty():
            message = session.inbox.get_nowait()
            if message is None or session.consumer.is_closed:
                continue
            try:
                await message.nack(requeue=True)
            except Exception as exc:
                log.info("could not requeue a message; the broker will at close",
                         error=describe(exc))


class _Settle(Settle):
    """Reply, ack, or publish the dead letter (confirmed) and ack, on the message's own
    session: after a reconnect its delivery tag means nothing."""

    def __init__(self, config: AmqpConfig, session: _Session,
                 message: AbstractIncomingMessage, event: Event) -> None:
        self.config, self.session, self.message, self.event = config, session, message, event

    async def ack(self, outcome: Outcome) -> None:
        await self.message.ack()

    async def reply(self, outcome: Outcome) -> None:
        message = self.message
        if not message.reply_to:
            return
        try:
            await self.session.publish("", message.reply_to, reply_message(message, outcome),
                                       mandatory=True)
        except aiormq.exceptions.PublishError:
            # The requester's queue is gone (it gave up); the work itself is done.
            log.warning("reply-to queue does not exist; reply dropped",
                        queue=self.config.queue, reply_to=message.reply_to,
                        correlation_id=message.correlation_id)

    async def dead_letter(self, outcome: Outcome, reason: str) -> None:
        config, message = self.config, self.message
        exchange = config.dead_letter
        if exchange is None:
            log.warning("dead letter rejected to the queue's own dead-letter policy "
                        "(no dead-letter exchange configured)", queue=config.queue,
                        event_id=self.event.id)
            await message.reject(requeue=False)
            return
        routing_key = dead_letter_routing_key(config)
        try:
            await self.session.publish(
                exchange, routing_key,
                dead_letter_message(message, self.event, outcome, config.component),
                mandatory=True)
        except (aiormq.exceptions.AMQPError, BrokerError, TimeoutError) as exc:
            # Never ack what has not safely arrived elsewhere: requeue after a pause (the
            # next delivery counts as a later attempt, so it comes straight back here).
            dead_letter_refused(config.component, f"{exchange} {routing_key}", self.event.id,
                                exc, held="requeued after a pause")
            await asyncio.sleep(min(5.0, config.max_backoff_ms / 1000))
            await message.nack(requeue=True)
            return
        await message.ack()


def _topology_hint(config: AmqpConfig, exc: aiormq.exceptions.ChannelClosed) -> str:
    if isinstance(exc, aiormq.exceptions.ChannelNotFoundEntity):
        return (f"{describe(exc)}: with declare = false the queue {config.queue!r} and the "
                "dead-letter exchange must exist; create them or set declare = true")
    if isinstance(exc, aiormq.exceptions.ChannelPreconditionFailed):
        return (f"{describe(exc)}: an existing queue or exchange was declared with other "
                "settings; match queue-type / queue-arguments / exchange-type to it, or set "
                "declare = false to use it as it is")
    return describe(exc)


def build(config: dict[str, Any], *, context: TriggerContext) -> AmqpTrigger:
    """Build an :class:`AmqpTrigger` from one raw ``[[trigger.amqp]]`` table."""
    decoded = decode_config(config, AmqpConfig, context)
    validate(decoded, context)
    return AmqpTrigger(decoded, context)


register("amqp", build)

__all__ = ["AmqpConfig", "AmqpTrigger", "build"]
