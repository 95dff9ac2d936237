"""The NATS JetStream trigger: a durable pull consumer feeding a component, at least once.

Delivery semantics:

* **Ack after success.** A message is acked only after its handler answered 2xx; until it is
  settled the trigger sends ``in-progress`` (+WPI) every third of ``ack-wait-ms``, also while
  it waits for a free slot or for the message before it on its subject, so ``ack-wait`` can
  be short (it is how fast a crashed gateway's messages come back) while handlers run long.
* **Retries** (:func:`~triggers.delivery.deliver`). With an order to keep (``ordering``
  ``"key"`` or ``"partition"``) a failed attempt (429/5xx, err, trap, timeout) waits out its
  backoff in process, holding its subject's lane, kept alive by the in-progress heartbeat;
  a stop ``nak``s it back. With ``ordering = "none"`` it is ``nak``'d with the backoff as
  delay and JetStream redelivers it. Attempts start at the delivery count, so they survive
  a gateway restart.
* **Crash-loop guard.** A message delivered more than ``max-attempts`` times (it stopped or
  killed the gateway on every delivery, so it was never nak'd) is dead-lettered without
  running it again.
* **Dead letters.** After ``max-attempts``, or at once on another 4xx, the message is
  published to ``dead-letter`` (payload, headers and ``wasmgate-dead-letter-*``) through
  JetStream, and only once the stream stored it is the source message ``term``'d. If that
  publish fails the message is nak'd and tried again later: it is never dropped silently.
  Without ``dead-letter`` it is logged and terminated.
* **Order.** The key is the message subject: ``ordering = "key"`` runs each subject's
  messages one after another (subjects in parallel), ``"partition"`` the whole consumer in
  order, ``"none"`` only bounds concurrency. Retries keep that order (above).
* **Backpressure.** The trigger fetches ``batch`` messages at a time and fetches again only
  when every fetched message has a slot; ``max-ack-pending`` bounds what the broker lets
  out per consumer (all replicas together).
* **Stop.** Stop fetching (at most ``fetch-wait-ms``), let every fetched message finish and
  settle, flush the acks, close. A hard kill leaves messages unacked: JetStream redelivers
  them after ``ack-wait-ms``.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any, ClassVar

import nats.errors
import nats.js.errors
import structlog
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, StorageType, StreamConfig

from bindings.types import Event, now_micros
from gateway.dispatch import Outcome, RetryPolicy, Verdict, with_attempt
from gateway.errors import BrokerError
from triggers.base import Dispatch, TriggerContext, decode_config, register
from triggers.delivery import (
    OrderedLanes,
    RetryMode,
    Settle,
    attempt_metadata,
    dead_letter_headers,
    dead_letter_refused,
    deliver,
    describe,
    drain_at_stop,
    lane_key,
    set_within,
)
from triggers.jetstream_config import JetStreamConfig, validate
from triggers.nats_connection import (
    NatsConnection,
    content_type,
    header_dict,
    header_pairs,
)
from triggers.readiness import until_accepting

log = structlog.get_logger("wasmgate.nats-jetstream")

_STOP_GRACE_S = 30.0


class JetStreamTrigger:
    """One ``[[trigger.nats-jetstream]]`` table: a durable pull consumer."""

    kind: ClassVar[str] = "nats-jetstream"

    def __init__(self, config: JetStreamConfig, context: TriggerContext) -> None:
        # Set first thing in start(): stop() of a trigger never started (a manifest check
        # builds every trigger to validate it) does nothing and logs nothing.
        self._started = False
        validate(config, context)
        self.config = config
        self.component = config.component
        self.source = f"wasmgate/nats-jetstream/{config.broker}"
        self._connection = NatsConnection(f"nats-jetstream:{config.stream}/{config.consumer}",
                                          config.broker, context.broker(config.broker),
                                          manifest_path=context.manifest_path,
                                          field=context.field)
        self._lanes = OrderedLanes(config.concurrency)
        self._batch = config.batch or config.concurrency
        self._dispatch: Dispatch | None = None
        self._js: JetStreamContext | None = None
        self._psub: JetStreamContext.PullSubscription | None = None
        self._intake: asyncio.Task[None] | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self._stopping = False
        # Set by stop(): an in-process retry waiting out its backoff goes back to the broker.
        self._stop_requested = asyncio.Event()
        # Fetched and not yet settled, by id(msg): what the in-progress heartbeat keeps alive.
        self._unsettled: dict[int, Msg] = {}
        self.ready = asyncio.Event()
        self.acked = 0
        self.nakked = 0
        self.dead_lettered = 0

    # -- lifecycle ------------------------------------------------------------------------

    @property
    def retry_policy(self) -> RetryPolicy:
        """max-attempts and backoff of this table, applied by ``deliver``."""
        return self.config.retry_policy

    async def start(self, dispatch: Dispatch) -> None:
        """Connect and bind the consumer; returns once fetching, or after the broker's
        connect timeout with the connection still retrying in the background."""
        self._started = True
        self._dispatch = dispatch
        self._stopping = False
        self._stop_requested.clear()
        self._intake = asyncio.create_task(self._run(), name=f"wasmgate-jetstream:"
                                           f"{self.config.stream}/{self.config.consumer}")
        self._intake.add_done_callback(_log_crash)
        if not await until_accepting(self.ready, self._intake,
                                     timeout_s=self._connection.spec.connect_timeout_ms / 1000):
            log.warning("jetstream trigger waiting for its broker; intake starts when it "
                        "answers", stream=self.config.stream, consumer=self.config.consumer,
                        address=self._connection.address)

    async def stop(self) -> None:
        """Stop fetching, let fetched messages finish and settle, flush, close."""
        if not self._started:
            return
        self._stopping = True
        self._stop_requested.set()
        intake = self._intake
        if intake is not None:
            if not self.ready.is_set():
                intake.cancel()  # still connecting or binding: nothing fetched yet
            # The loop notices the flag when its current fetch returns (fetch-wait-ms).
            await asyncio.wait([intake], timeout=self.config.fetch_wait_ms / 1000
                               + _STOP_GRACE_S)
            if not intake.done():
                intake.cancel()
            await asyncio.gather(intake, return_exceptions=True)
        await drain_at_stop(self._lanes, self.config, redelivered=True,
                            stream=self.config.stream, consumer=self.config.consumer)
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            await asyncio.gather(self._heartbeat, return_exceptions=True)
        if self._psub is not None and self._connection.client.is_connected:
            try:
                await self._psub.unsubscribe()
            except Exception as exc:
                log.debug("unsubscribe failed", error=describe(exc))
        await self._connection.close()
        self.ready.clear()
        log.info("jetstream trigger stopped", stream=self.config.stream,
                 consumer=self.config.consumer, acked=self.acked, nakked=self.nakked,
                 dead_lettered=self.dead_lettered)

    # -- binding --------------------------------------------------------------------------

    async def _run(self) -> None:
        client = await self._connection.connect()
        self._js = client.jetstream()
        while True:
            try:
                self._psub = await self._bind(self._js)
                break
            except (nats.errors.Error, BrokerError, OSError) as exc:
                # A missing stream or a broker mid-restart: wait and try again, logged once.
                await self._connection.watch.down(exc)
        self._connection.watch.up()
        self.ready.set()
        log.info("jetstream trigger consuming", stream=self.config.stream,
                 consumer=self.config.consumer, component=self.component)
        self._heartbeat = asyncio.create_task(self._keep_alive())
        await self._fetch_loop(self._psub)

    async def _bind(self, js: JetStreamContext) -> JetStreamContext.PullSubscription:
        cfg = self.config
        if cfg.create:
            await self._ensure_stream(js, cfg.stream, cfg.subjects)
            await js.add_consumer(cfg.stream, config=self._consumer_config())
        else:
            await self._require_stream(js)
            try:
                await js.consumer_info(cfg.stream, cfg.consumer)
            except nats.js.errors.NotFoundError:
                raise BrokerError(f"consumer {cfg.consumer!r} does not exist on stream "
                                  f"{cfg.stream!r}; create it, or set create = true") from None
        if cfg.dead_letter is not None:
            await self._ensure_dead_letter_stream(js, cfg.dead_letter)
        return await js.pull_subscribe_bind(durable=cfg.consumer, stream=cfg.stream,
                                            pending_msgs_limit=4 * self._batch + 64,
                                            pending_bytes_limit=0)

    def _consumer_config(self) -> ConsumerConfig:
        cfg = self.config
        return ConsumerConfig(
            name=cfg.consumer, durable_name=cfg.consumer, ack_policy=AckPolicy.EXPLICIT,
            ack_wait=cfg.ack_wait_ms / 1000,
            # No broker limit: deliver() ends every message, dead-lettering one delivered more
            # than max-attempts times without running it (the crash-loop guard). A broker
            # limit would instead strand such a message unacked, without a dead letter.
            max_deliver=-1, max_ack_pending=cfg.max_ack_pending,
            filter_subject=cfg.filter_subject,
        )

    async def _ensure_stream(self, js: JetStreamContext, name: str, subjects: list[str]) -> None:
        try:
            await js.stream_info(name)
        except nats.js.errors.NotFoundError:
            storage = StorageType.FILE if self.config.storage == "file" else StorageType.MEMORY
            await js.add_stream(StreamConfig(name=name, subjects=subjects, storage=storage))
            log.info("jetstream stream created", stream=name, subjects=subjects)

    async def _require_stream(self, js: JetStreamContext) -> None:
        try:
            await js.stream_info(self.config.stream)
        except nats.js.errors.NotFoundError:
            raise BrokerError(f"stream {self.config.stream!r} does not exist; create it, or "
                              "set create = true with subjects = [...]") from None

    async def _ensure_dead_letter_stream(self, js: JetStreamContext, subject: str) -> None:
        try:
            await js.find_stream_name_by_subject(subject)
        except nats.js.errors.NotFoundError:
            if not self.config.create:
                # Not fatal: dead letters are nak'd (kept) until a stream stores them.
                log.warning("no stream stores the dead-letter subject; dead letters stay in "
                            "the source stream until one does", dead_letter=subject)
                return
            name = f"{self.config.stream}-dead-letter"
            await self._ensure_stream(js, name, [subject])

    # -- intake ---------------------------------------------------------------------------

    async def _fetch_loop(self, psub: JetStreamContext.PullSubscription) -> None:
        wait_s = self.config.fetch_wait_ms / 1000
        while not self._stopping:
            try:
                msgs = await psub.fetch(self._batch, timeout=wait_s)
            except TimeoutError:  # nats-py raises both its own and asyncio's
                continue  # nothing to fetch (or the broker is reconnecting)
            except nats.errors.ConnectionClosedError:
                return
            except Exception as exc:
                log.warning("fetch failed; retrying", stream=self.config.stream,
                            consumer=self.config.consumer, error=describe(exc))
                await asyncio.sleep(wait_s)
                continue
            for msg in msgs:
                # Tracked from the moment it is ours, so a message waiting for a slot is
                # kept alive too.
                self._unsettled[id(msg)] = msg
            for msg in msgs:
                event = self._event_for(msg)
                key = lane_key(self.config.ordering, event.key)
                await self._lanes.submit(key, functools.partial(self._handle, msg, event))

    async def _keep_alive(self) -> None:
        interval = self.config.ack_wait_ms / 3000
        while True:
            await asyncio.sleep(interval)
            for msg in list(self._unsettled.values()):
                try:
                    await msg.in_progress()
                except Exception as exc:  # a lost heartbeat means a redelivery, not a loss
                    log.debug("in-progress failed", error=describe(exc))

    def _event_for(self, msg: Msg) -> Event:
        meta = msg.metadata
        headers = msg.headers
        seq = meta.sequence.stream
        metadata = [
            ("stream", meta.stream), ("consumer", meta.consumer), ("subject", msg.subject),
            ("stream-seq", str(seq)), ("consumer-seq", str(meta.sequence.consumer)),
            ("delivery-count", str(meta.num_delivered)),
            ("redelivered", "true" if meta.num_delivered > 1 else "false"),
            ("pending", str(meta.num_pending)),
            *attempt_metadata(meta.num_delivered),
        ]
        stored = meta.timestamp
        return Event(
            # Stable across redeliveries, so a handler can deduplicate.
            id=(headers or {}).get("Nats-Msg-Id") or f"{meta.stream}-{seq}",
            source=self.source, type="wasmgate.nats-jetstream.message", subject=msg.subject,
            time=int(stored.timestamp() * 1_000_000) if stored else now_micros(),
            content_type=content_type(headers), key=msg.subject.encode(),
            headers=header_pairs(headers), metadata=metadata, data=msg.data,
        )

    # -- settle ---------------------------------------------------------------------------

    @property
    def _retry_mode(self) -> RetryMode:
        # With an order to keep, a retry waits in process and holds its subject's lane (the
        # in-progress heartbeat keeps it from redelivery); a nak'd message would come back
        # behind later messages of its subject. Without one, the broker holds the retry, and
        # it survives a restart without taking a slot.
        return "broker" if self.config.ordering == "none" else "in-process"

    async def _handle(self, msg: Msg, event: Event) -> None:
        assert self._dispatch is not None
        try:
            await deliver(event, _Settle(self, msg, event), run=self._dispatch,
                          component=self.component, policy=self.retry_policy,
                          http_path=self.config.http_path,
                          mode=self._retry_mode, delivery_count=msg.metadata.num_delivered)
        finally:
            self._unsettled.pop(id(msg), None)


class _Settle(Settle):
    """ack, nak(delay), or dead-letter (stored by JetStream, then term) one message."""

    def __init__(self, trigger: JetStreamTrigger, msg: Msg, event: Event) -> None:
        self.trigger, self.msg, self.event = trigger, msg, event

    async def ack(self, outcome: Outcome) -> None:
        await self.msg.ack()
        self.trigger.acked += 1

    async def retry(self, outcome: Outcome, delay_s: float) -> None:
        await self.msg.nak(delay=delay_s)
        self.trigger.nakked += 1

    async def next_attempt(self, event: Event, attempt: int, delay_s: float) -> Event | None:
        if await set_within(self.trigger._stop_requested, delay_s):
            # Stopping: the broker keeps the retry (the next delivery is the next attempt).
            await self.retry(Outcome(verdict=Verdict.RETRY), delay_s)
            return None
        return with_attempt(event, attempt)

    async def dead_letter(self, outcome: Outcome, reason: str) -> None:
        trigger, target = self.trigger, self.trigger.config.dead_letter
        if target is not None:
            assert trigger._js is not None
            headers = header_dict(dead_letter_headers(self.event, outcome, trigger.component))
            # The broker drops a second copy if the term below is lost and this runs again.
            headers["Nats-Msg-Id"] = f"dead-letter:{self.event.id}"
            try:
                await trigger._js.publish(target, self.event.data, headers=headers)
            except Exception as exc:
                # Kept: the redelivery comes straight back here (the crash-loop guard).
                delay = trigger.config.max_backoff_ms / 1000
                dead_letter_refused(trigger.component, target, self.event.id, exc,
                                    held=f"nak'd, redelivered in {delay:g} s")
                await self.msg.nak(delay=delay)
                return
        await self.msg.term()
        trigger.dead_lettered += 1


def _log_crash(task: asyncio.Task[None]) -> None:
    # Intake must never end silently: a crash here means the trigger stopped consuming.
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("intake stopped by an unexpected error", error=describe(exc), exc_info=exc)


def build_jetstream_trigger(config: dict[str, Any], *, context: TriggerContext
                            ) -> JetStreamTrigger:
    """Decode and validate one ``[[trigger.nats-jetstream]]`` table (the registered factory)."""
    return JetStreamTrigger(decode_config(config, JetStreamConfig, context), context)


register("nats-jetstream", build_jetstream_trigger)

__all__ = ["JetStreamConfig", "JetStreamTrigger", "build_jetstream_trigger"]
