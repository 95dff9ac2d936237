"""The Kafka trigger: a consumer-group member that runs each record through a component.

One ``[[trigger.kafka]]`` table is one member of a consumer group (``group``, default
``wasmgate-<component>``) on ``topics``. Run more replicas or workers with the same group to
share the partitions. Every record becomes one event (type ``wasmgate.kafka.message``,
subject = topic, metadata topic / partition / offset / timestamp / group / attempt).

Delivery (at least once):

* **Commit after success.** Auto-commit is off. A record counts as settled when the
  handler acked it or it was dead-lettered; the trigger commits, per partition, the highest
  *contiguous* settled offset (:mod:`triggers.kafka_offsets`), every ``commit-interval-ms``,
  on a rebalance and at stop. A crash re-delivers what was not committed: duplicates, never
  loss.
* **Attempts survive a crash.** Kafka keeps no delivery count, so each attempt is counted
  in a key-value store before it runs (:mod:`triggers.kafka_attempts`, ``attempts-store``);
  a record started more than ``max-attempts`` times (it killed the gateway every time) is
  dead-lettered without running.
* **Retries in process** (:func:`~triggers.delivery.deliver`). A failed record is re-run
  here with backoff while later records keep flowing; its offset holds the commit point
  back.
* **Dead letters.** After ``max-attempts``, or at once on a 4xx, the record (same key,
  value and headers, plus the ``wasmgate-dead-letter-*`` headers) is produced to the
  ``dead-letter`` topic, acknowledged by the broker, before its offset is settled. Without
  ``dead-letter`` it is logged and dropped.
* **Order** per partition (``ordering = "partition"``), per key within a partition
  (``"key"``, the default) or none; parallel across lanes up to ``concurrency``.
* **Backpressure.** When ``concurrency`` records are running the consume loop waits; the
  client then stops fetching once its buffer is full.
* **Rebalance.** Revoked partitions get up to ``revoke-wait-ms`` to finish, then their
  settled offsets are committed; a record still running then is re-run by the new owner.
* **Broker down** at start or later: the client reconnects with backoff, the trigger logs
  once per state change, intake resumes when the broker is back.
"""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Any, ClassVar

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import KafkaError

from bindings.types import Event
from gateway.brokers.kafka import client_options
from gateway.dispatch import Outcome, RetryPolicy, with_attempt
from triggers.base import Dispatch, TriggerContext, decode_config, register
from triggers.closing import close_quietly
from triggers.delivery import (
    ConnectionWatch,
    OrderedLanes,
    Settle,
    attempt_metadata,
    deliver,
    describe,
    drain_at_stop,
    lane_key,
)
from triggers.kafka_attempts import AttemptLedger
from triggers.kafka_commits import Committer
from triggers.kafka_config import KafkaConfig, validate
from triggers.kafka_dead_letters import DeadLetterProducer, Record
from triggers.kafka_offsets import OffsetBook, PartitionOffsets

log = structlog.get_logger("wasmgate.kafka")

_TIMESTAMP_TYPES = {0: "create-time", 1: "log-append-time"}


class KafkaTrigger:
    """One ``[[trigger.kafka]]`` table: consumes ``topics`` in ``group`` into ``component``."""

    kind: ClassVar[str] = "kafka"

    def __init__(self, config: KafkaConfig, context: TriggerContext) -> None:
        # Set first thing in start(): stop() of a trigger never started (a manifest check
        # builds every trigger to validate it) does nothing and logs nothing.
        self._started = False
        self.config = config
        self.component = config.component
        self.group = config.group or f"wasmgate-{config.component}"
        spec = context.broker(config.broker)
        self._client_options = client_options(config.broker, spec, path=context.manifest_path)
        self._source = f"wasmgate/kafka/{config.broker}"
        self._watch = ConnectionWatch(f"kafka:{self.group}", config.broker, spec)
        self._book = OffsetBook()
        self._lanes = OrderedLanes(config.concurrency)
        self._dispatch: Dispatch | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._commits = Committer(self._book, lambda: self._consumer, group=self.group,
                                  interval_ms=config.commit_interval_ms, watch=self._watch)
        self._dead_letters = DeadLetterProducer(self._client_options,
                                                component=config.component, watch=self._watch)
        self._intake: asyncio.Task[None] | None = None
        self._committer: asyncio.Task[None] | None = None
        self._first_attempt = asyncio.Event()
        # A named store is resolved now (a wrong name fails at load); the default file is
        # opened at start.
        self._attempt_store = context.store(config.attempts_store, "attempts-store")
        self._state_dir = context.state_dir
        self._attempts: AttemptLedger | None = None

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def retry_policy(self) -> RetryPolicy:
        """max-attempts and backoff of this table, applied by ``deliver``."""
        return self.config.retry_policy

    async def start(self, dispatch: Dispatch) -> None:
        """Start consuming; returns after the first connection attempt (a broker that is
        down is retried in the background)."""
        self._started = True
        if self._intake is not None:
            raise RuntimeError(f"kafka trigger for group {self.group!r} already started")
        self._dispatch = dispatch
        self._attempts = (AttemptLedger.in_store(self._attempt_store, self.group)
                          if self._attempt_store is not None
                          else AttemptLedger.local(self._state_dir, self.group))
        self._intake = asyncio.create_task(self._run(), name=f"wasmgate-kafka:{self.group}")
        self._committer = asyncio.create_task(self._commits.run(),
                                              name=f"wasmgate-kafka-commit:{self.group}")
        attempted = asyncio.create_task(self._first_attempt.wait())
        await asyncio.wait([self._intake, attempted], return_when=asyncio.FIRST_COMPLETED)
        attempted.cancel()
        log.info("kafka trigger started", component=self.component, group=self.group,
                 topics=self.config.topics, broker=self.config.broker)

    async def stop(self) -> None:
        """Stop fetching, let running records finish (up to ``stop-grace-ms``), commit
        what was settled, leave the group."""
        if not self._started:
            return
        intake, self._intake = self._intake, None
        if intake is not None:
            # Cancelling drops only records not yet handed to the handler; they were never
            # taken, so the commit point stays before them and they are read again.
            intake.cancel()
            await asyncio.wait([intake])
        # Records still running at the end stay uncommitted and are read again.
        await drain_at_stop(self._lanes, self.config, redelivered=True, group=self.group)
        committer, self._committer = self._committer, None
        if committer is not None:
            committer.cancel()
            await asyncio.wait([committer])
        await self._commits.commit()
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await close_quietly(consumer.stop(), what="kafka consumer")
        await self._dead_letters.close()
        attempts, self._attempts = self._attempts, None
        if attempts is not None:
            await attempts.close()
        log.info("kafka trigger stopped", component=self.component, group=self.group)

    @property
    def assignment(self) -> frozenset[TopicPartition]:
        """The partitions this member owns now (empty until the group is joined)."""
        consumer = self._consumer
        return frozenset(consumer.assignment()) if consumer is not None else frozenset()

    # -- intake ----------------------------------------------------------------------------

    async def _run(self) -> None:
        consumer = await self._connect()
        while True:
            try:
                batches = await consumer.getmany(timeout_ms=1000,
                                                 max_records=self.config.max_poll_records)
            except KafkaError as exc:
                # The client reconnects by itself; this is an error it chose to surface.
                await self._watch.down(exc)
                continue
            # Bind each partition's ledger now, before any await: if the partition is
            # revoked (and perhaps given back) while this batch is being handed out, the
            # rest of the batch belongs to the old ledger and is skipped, not mixed into
            # the new one (the new owner re-reads it from the last commit).
            ledgers = [(self._book.get(tp), tp, records) for tp, records in batches.items()]
            for offsets, tp, records in ledgers:
                for record in records:
                    if offsets is None or offsets.revoked:
                        break
                    await self._take(offsets, tp, record)

    async def _connect(self) -> AIOKafkaConsumer:
        """A started consumer, subscribed with our rebalance listener; retried forever."""
        config = self.config
        while True:
            consumer = AIOKafkaConsumer(
                **self._client_options,
                group_id=self.group,
                client_id=config.client_id or f"wasmgate-{self.component}",
                enable_auto_commit=False,
                auto_offset_reset=config.start_from,
                session_timeout_ms=config.session_timeout_ms,
                heartbeat_interval_ms=config.heartbeat_interval_ms,
                rebalance_timeout_ms=config.rebalance_timeout_ms,
                max_poll_interval_ms=config.max_poll_interval_ms,
                fetch_max_wait_ms=config.fetch_max_wait_ms,
            )
            consumer.subscribe(config.topics, listener=_Rebalance(self))
            try:
                await consumer.start()
            except KafkaError as exc:
                await close_quietly(consumer.stop(), what="kafka consumer")
                self._first_attempt.set()
                await self._watch.down(exc)
                continue
            except BaseException:
                # Cancelled by stop() mid-connect: close the half-started client.
                await close_quietly(consumer.stop(), what="kafka consumer")
                raise
            self._consumer = consumer
            self._watch.up()
            self._first_attempt.set()
            await self._warn_missing_topics(consumer)
            return consumer

    async def _warn_missing_topics(self, consumer: AIOKafkaConsumer) -> None:
        try:
            known = await consumer.topics()
        except KafkaError:
            return
        missing = sorted(set(self.config.topics) - set(known))
        if missing:
            log.warning("topics do not exist yet; consuming starts when they are created",
                        topics=missing, group=self.group, broker=self.config.broker)

    async def _take(self, offsets: PartitionOffsets, tp: TopicPartition,
                    record: Record) -> None:
        offsets.take(record.offset)
        event = self.build_event(record)
        key = lane_key(self.config.ordering, record.key, (tp.topic, tp.partition))
        await self._lanes.submit(key, partial(self._handle, offsets, record, event))

    def build_event(self, record: Record) -> Event:
        """The event for one consumer record."""
        # A header may have no value (None): Kafka allows it, and another producer wrote it.
        headers = [(k, "" if v is None else v.decode("utf-8", "replace"))
                   for k, v in record.headers]
        content_type = next((v for k, v in headers if k.lower() == "content-type"), None)
        return Event(
            # Stable across redeliveries, so a handler can de-duplicate.
            id=f"{record.topic}-{record.partition}-{record.offset}",
            source=self._source,
            type="wasmgate.kafka.message",
            subject=record.topic,
            time=record.timestamp * 1000,
            content_type=content_type,
            key=record.key,
            headers=headers,
            metadata=[
                ("topic", record.topic),
                ("partition", str(record.partition)),
                ("offset", str(record.offset)),
                ("timestamp", str(record.timestamp)),
                ("timestamp-type", _TIMESTAMP_TYPES.get(record.timestamp_type, "unknown")),
                ("group", self.group),
                ("trigger", "kafka"),
                *attempt_metadata(1),
            ],
            data=record.value or b"",
        )

    # -- settle ----------------------------------------------------------------------------

    async def _handle(self, offsets: PartitionOffsets, record: Record, event: Event) -> None:
        if offsets.revoked:
            return  # its partition moved to another member, which runs it
        assert self._dispatch is not None
        settle = _Settle(self, offsets, record, event)
        await deliver(event, settle, run=self._dispatch, component=self.component,
                      policy=self.retry_policy,
                      http_path=self.config.http_path, mode="in-process",
                      delivery_count=await settle.count_start())

    async def _on_assigned(self, assigned: frozenset[TopicPartition]) -> None:
        self._book.assign(assigned)
        log.info("partitions assigned", group=self.group,
                 partitions=sorted(f"{tp.topic}[{tp.partition}]" for tp in assigned))

    async def _on_revoked(self, revoked: frozenset[TopicPartition]) -> None:
        await self._commits.hand_over(revoked, self.config.revoke_wait_ms / 1000)


class _Settle(Settle):
    """Settling a record is marking its offset done (the commit loop commits the contiguous
    prefix); a dead letter is produced and acknowledged first. Each attempt is counted in
    the attempt ledger before it runs (:mod:`triggers.kafka_attempts`)."""

    def __init__(self, trigger: KafkaTrigger, offsets: PartitionOffsets, record: Record,
                 event: Event) -> None:
        self.trigger, self.offsets, self.record, self.event = trigger, offsets, record, event

    async def count_start(self) -> int:
        """Record one more start of this record; the count is its attempt number."""
        r = self.record
        try:
            assert self.trigger._attempts is not None
            return await self.trigger._attempts.start(r.topic, r.partition, r.offset)
        except Exception as exc:
            log.warning("could not record the attempt; running it uncounted",
                        event_id=self.event.id, error=describe(exc))
            return 1

    async def ack(self, outcome: Outcome) -> None:
        await self._done()

    async def dead_letter(self, outcome: Outcome, reason: str) -> None:
        topic = self.trigger.config.dead_letter
        if topic is not None:
            await self.trigger._dead_letters.send(topic, self.record, self.event, outcome)
        await self._done()

    async def next_attempt(self, event: Event, attempt: int, delay_s: float) -> Event | None:
        await asyncio.sleep(delay_s)
        return with_attempt(event, max(attempt, await self.count_start()))

    async def _done(self) -> None:
        r = self.record
        self.offsets.finish(r.offset)
        self.trigger._commits.want()
        if self.trigger._attempts is not None:
            self.trigger._attempts.forget(r.topic, r.partition, r.offset)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    """Hands rebalance callbacks to the trigger (aiokafka awaits them)."""

    def __init__(self, trigger: KafkaTrigger) -> None:
        self._trigger = trigger

    async def on_partitions_revoked(self, revoked: frozenset[TopicPartition]) -> None:
        await self._trigger._on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: frozenset[TopicPartition]) -> None:
        await self._trigger._on_assigned(assigned)


def build_kafka_trigger(config: dict[str, Any], *, context: TriggerContext) -> KafkaTrigger:
    """Decode and validate one ``[[trigger.kafka]]`` table (the registered factory)."""
    decoded = decode_config(config, KafkaConfig, context)
    validate(decoded, context)
    return KafkaTrigger(decoded, context)


register("kafka", build_kafka_trigger)

__all__ = ["KafkaConfig", "KafkaTrigger", "build_kafka_trigger"]
