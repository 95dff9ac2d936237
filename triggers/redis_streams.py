"""The Redis Streams trigger (kind ``redis-streams``): at-least-once through a consumer group.

One ``[[trigger.redis-streams]]`` table consumes one ``stream`` as consumer ``consumer`` of
``group``. Delivery, in the order a message meets it:

* **Start / reconnect.** The group is created at ``start-id`` (with MKSTREAM) when
  ``create-group`` is set. Then this consumer's *own* pending entries are re-read first
  (XREADGROUP from ID 0): whatever it held when it crashed or lost its connection runs
  again before anything new. The consumer name is stable per gateway instance
  (:mod:`triggers.redis_consumer`), which is what makes this work across restarts.
* **Intake.** XREADGROUP ``>`` with COUNT ``batch-size`` and BLOCK ``block-ms``; each entry
  runs in an :class:`~triggers.delivery.OrderedLanes` lane (per key, per stream, or none)
  and the loop waits for a free slot before reading more: the backpressure.
* **Success** (2xx): XACK.
* **Retry** (429/5xx/err/trap/timeout): the entry stays pending; after the backoff the
  trigger re-claims it to itself (XCLAIM), which bumps Redis's delivery count, and runs it
  again. The attempt number the handler sees *is* the delivery count (XPENDING
  times-delivered), so attempts survive restarts and crashes.
* **Dead letter** (other 4xx, or ``max-attempts`` reached): XADD to the ``dead-letter``
  stream (the original fields plus ``wasmgate-dead-letter-*``), then XACK, in one script. An
  entry delivered more than ``max-attempts`` times without an outcome (the gateway died
  during each attempt) is dead-lettered without running it again.
* **Dead consumers.** Every ``claim-interval-ms`` the trigger XAUTOCLAIMs entries that
  have been pending longer than ``claim-idle-ms`` (the visibility timeout) on any consumer.
  Entries this instance holds are kept from looking idle by re-claiming them to itself
  (XCLAIM JUSTID, no delivery-count bump) every third of the visibility timeout.
* **Stop.** Intake stops; handler calls in flight finish and are acked or dead-lettered;
  entries waiting out a retry backoff, or not started, stay pending for the next start.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError, ResponseError

from bindings.types import Event
from gateway.brokers.redis import CONNECTION_ERRORS, redis_client
from gateway.dispatch import Outcome, RetryPolicy
from triggers.base import Dispatch, TriggerContext, decode_config, register
from triggers.closing import close_quietly
from triggers.delivery import (
    ConnectionWatch,
    OrderedLanes,
    Settle,
    dead_letter_headers,
    dead_letter_refused,
    deliver,
    describe,
    drain_at_stop,
    lane_key,
    set_within,
)
from triggers.readiness import until_accepting
from triggers.redis_consumer import ConsumerName, claim_consumer_name
from triggers.redis_entries import (
    Fields,
    as_bytes,
    dead_letter_fields,
    entry_to_event,
    id_order,
    reply_entries,
)
from triggers.redis_leases import renew_leases
from triggers.redis_streams_config import RedisStreamsConfig, validate

log = structlog.get_logger("wasmgate.redis-streams")

Entry = tuple[bytes, Fields]

# The dead letter, then the XACK, in one script: the entry is acked only once its dead letter
# is written. In a MULTI the XACK ran even when the XADD failed (the key of another type, OOM
# under maxmemory, an ACL refusing the key), and the message was acked without a dead letter.
_DEAD_LETTER_THEN_ACK = """
redis.call('XADD', KEYS[2], '*', unpack(ARGV, 3))
return redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
"""


class RedisStreamsTrigger:
    """One ``[[trigger.redis-streams]]`` table: a consumer of ``group`` on ``stream``."""

    kind: ClassVar[str] = "redis-streams"

    def __init__(self, config: RedisStreamsConfig, context: TriggerContext) -> None:
        # Set first thing in start(): stop() of a trigger never started (a manifest check
        # builds every trigger to validate it) does nothing and logs nothing.
        self._started = False
        self.config = config
        self.component = config.component
        self.stream = config.stream
        self.group = config.group
        self.spec = context.broker(config.broker)
        self.source = f"wasmgate/redis-streams/{config.broker}"
        self.consumer = config.consumer or ""
        self.ready = asyncio.Event()
        self._state_dir = context.state_dir
        self._name: ConsumerName | None = None
        self._watch = ConnectionWatch(f"redis-streams:{self.stream}", config.broker, self.spec)
        self._lanes = OrderedLanes(config.concurrency)
        # Entry ids read by this instance and not yet settled or given back.
        self._held: set[bytes] = set()
        self._stopping = asyncio.Event()
        self._claim_cursor = b"0-0"
        self._dispatch: Dispatch | None = None
        self._reader: aioredis.Redis | None = None
        self._writer: aioredis.Redis | None = None
        self._tasks: list[asyncio.Task[None]] = []

    # -- lifecycle ------------------------------------------------------------------------

    @property
    def retry_policy(self) -> RetryPolicy:
        """max-attempts and backoff of this table, applied by ``deliver``."""
        return self.config.retry_policy

    async def start(self, dispatch: Dispatch) -> None:
        """Find or create the consumer group and recover this consumer's own pending entries;
        returns once reading (``ready``), or after the broker's connect timeout with the
        loop still retrying in the background."""
        self._started = True
        self._dispatch = dispatch
        if not self.consumer:
            self._name = claim_consumer_name(self._state_dir, self.group)
            self.consumer = self._name.name
        timeout_s = self.spec.connect_timeout_ms / 1000
        self._reader = redis_client(self.spec, read_timeout_s=self.config.block_ms / 1000
                                    + timeout_s, retries=0, name=f"wasmgate-{self.consumer}")
        self._writer = redis_client(self.spec, read_timeout_s=timeout_s, retries=3,
                                    name=f"wasmgate-{self.consumer}")
        self._tasks = [
            asyncio.create_task(self._consume(), name=f"wasmgate-redis-streams:{self.stream}"),
            asyncio.create_task(renew_leases(self._settle, self.stream, self.group,
                                             self.consumer, held=self._held,
                                             claim_idle_ms=self.config.claim_idle_ms,
                                             stopped_within=self._stopped_within),
                                name=f"wasmgate-redis-streams-lease:{self.stream}"),
        ]
        log.info("redis streams trigger started", component=self.component,
                 stream=self.stream, group=self.group, consumer=self.consumer,
                 delivery="at least once", visibility_timeout_ms=self.config.claim_idle_ms)
        if not await until_accepting(self.ready, self._tasks[0], timeout_s=timeout_s):
            log.warning("redis streams trigger waiting for its broker; intake starts when it "
                        "answers", stream=self.stream, group=self.group)

    async def stop(self) -> None:
        """Stop reading, let running handler calls finish and settle, then disconnect."""
        if not self._started:
            return
        self._stopping.set()
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks)
        self._tasks = []
        await drain_at_stop(self._lanes, self.config, redelivered=True, stream=self.stream)
        for client in (self._reader, self._writer):
            if client is not None:
                await close_quietly(client.aclose(), what="redis client")
        self._reader = self._writer = None
        if self._name is not None:
            self._name.release()
        log.info("redis streams trigger stopped", component=self.component,
                 stream=self.stream, consumer=self.consumer, left_pending=len(self._held))

    # -- the consume loop -----------------------------------------------------------------

    async def _consume(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._stopping.is_set():
            try:
                await self._ensure_group()
                self._watch.up()
                await self._recover_own_pending()
                self.ready.set()
                next_sweep = loop.time()
                while not self._stopping.is_set():
                    if loop.time() >= next_sweep:
                        await self._reclaim_idle()
                        next_sweep = loop.time() + self.config.claim_interval_ms / 1000
                    reply = await self._redis.xreadgroup(
                        self.group, self.consumer, {self.stream: ">"},
                        count=self.config.batch_size, block=self.config.block_ms)
                    for entry_id, fields in reply_entries(reply):
                        await self._submit(entry_id, fields, delivery_count=1)
            except CONNECTION_ERRORS as exc:
                await self._down(exc)
            except ResponseError as exc:
                # NOGROUP (the group or stream was deleted, or create-group = false and it
                # was never made), a Redis without streams, ACL refusals: keep retrying,
                # the operator may fix it while we wait.
                hint = (f"create it with XGROUP CREATE {self.stream} {self.group} $ MKSTREAM"
                        " or set create-group = true") if "NOGROUP" in str(exc) else None
                if self._watch.state != "down":
                    log.error("redis refused the consumer group read", stream=self.stream,
                              group=self.group, error=describe(exc), hint=hint)
                await self._down(exc)
            except RedisError as exc:
                log.exception("unexpected redis error in the consume loop", stream=self.stream)
                await self._down(exc)

    async def _down(self, exc: BaseException) -> None:
        """Not accepting until the loop is back; back off before the next attempt."""
        self.ready.clear()
        await self._watch.down(exc)

    @property
    def _redis(self) -> aioredis.Redis:
        assert self._reader is not None, "start() first"
        return self._reader

    @property
    def _settle(self) -> aioredis.Redis:
        assert self._writer is not None, "start() first"
        return self._writer

    async def _ensure_group(self) -> None:
        if not self.config.create_group:
            return
        try:
            await self._redis.xgroup_create(self.stream, self.group, id=self.config.start_id,
                                            mkstream=True)
            log.info("consumer group created", stream=self.stream, group=self.group,
                     start_id=self.config.start_id)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def _recover_own_pending(self) -> None:
        """Re-run what this consumer was delivered and never acked (a crash, a lost reply)."""
        after = b"0"
        recovered = 0
        while not self._stopping.is_set():
            reply = await self._redis.xreadgroup(self.group, self.consumer, {self.stream: after},
                                                 count=self.config.batch_size)
            entries = list(reply_entries(reply))
            if not entries:
                break
            after = entries[-1][0]
            fresh = [(i, f) for i, f in entries if i not in self._held]
            counts = await self._delivery_counts([i for i, _ in fresh])
            for entry_id, fields in fresh:
                recovered += 1
                await self._submit(entry_id, fields, delivery_count=counts.get(entry_id, 2))
        if recovered:
            log.warning("re-running entries this consumer held when it last stopped",
                        stream=self.stream, consumer=self.consumer, entries=recovered)

    async def _reclaim_idle(self) -> None:
        """XAUTOCLAIM entries pending past the visibility timeout (their consumer is dead)."""
        while not self._stopping.is_set():
            reply = await self._redis.xautoclaim(
                self.stream, self.group, self.consumer, self.config.claim_idle_ms,
                start_id=self._claim_cursor, count=self.config.batch_size)
            self._claim_cursor = reply[0]
            claimed = [(i, f) for i, f in reply[1] if i not in self._held]
            if claimed:
                log.warning("reclaimed entries idle past the visibility timeout",
                            stream=self.stream, consumer=self.consumer, entries=len(claimed),
                            claim_idle_ms=self.config.claim_idle_ms)
                counts = await self._delivery_counts([i for i, _ in claimed])
                for entry_id, fields in claimed:
                    await self._submit(entry_id, fields, delivery_count=counts.get(entry_id, 2))
            if len(reply) > 2 and reply[2]:
                log.warning("dropped pending entries deleted from the stream",
                            stream=self.stream, entries=len(reply[2]))
            if self._claim_cursor in (b"0-0", "0-0"):
                return

    async def _delivery_counts(self, ids: list[bytes]) -> dict[bytes, int]:
        """XPENDING times-delivered of ``ids`` (entries this consumer owns)."""
        if not ids:
            return {}
        rows = await self._redis.xpending_range(
            self.stream, self.group, min=min(ids, key=id_order), max=max(ids, key=id_order),
            count=len(ids) + len(self._held) + self.config.batch_size,
            consumername=self.consumer)
        return {as_bytes(row["message_id"]): int(row["times_delivered"]) for row in rows}

    async def _submit(self, entry_id: bytes, fields: Fields, *, delivery_count: int) -> None:
        if not fields:
            # Pending, but deleted from the stream (XDEL, XTRIM): nothing left to run.
            log.warning("pending entry no longer in the stream; acking it", stream=self.stream,
                        entry_id=entry_id.decode())
            await self._settle.xack(self.stream, self.group, entry_id)
            return
        self._held.add(entry_id)
        event = self._event(entry_id, fields, delivery_count)
        lane = lane_key(self.config.ordering, event.key, self.stream)
        try:
            await self._lanes.submit(lane, lambda: self._deliver(entry_id, fields, event))
        except BaseException:
            self._held.discard(entry_id)  # never started: it stays pending in Redis
            raise

    def _event(self, entry_id: bytes, fields: Fields, delivery_count: int) -> Event:
        return entry_to_event(self.stream, entry_id, fields, source=self.source,
                              group=self.group, consumer=self.consumer,
                              delivery_count=delivery_count)

    # -- one entry, from dispatch to settle -----------------------------------------------

    async def _deliver(self, entry_id: bytes, fields: Fields, event: Event) -> None:
        assert self._dispatch is not None
        try:
            await deliver(event, _Settle(self, entry_id, fields, event), run=self._dispatch,
                          component=self.component, policy=self.retry_policy,
                          http_path=self.config.http_path,
                          mode="in-process",
                          delivery_count=int(event.meta("delivery-count") or 1))
        finally:
            self._held.discard(entry_id)

    async def _stopped_within(self, seconds: float) -> bool:
        return await set_within(self._stopping, seconds)


class _Settle(Settle):
    """XACK; dead-letter = XADD then XACK in one script; a retry re-claims the entry (XCLAIM
    bumps Redis's delivery count, the next attempt's number). Anything unsettled stays
    pending and comes back (own-pending re-read or XAUTOCLAIM)."""

    def __init__(self, trigger: RedisStreamsTrigger, entry_id: bytes, fields: Fields,
                 event: Event) -> None:
        self.trigger, self.entry_id, self.fields, self.event = trigger, entry_id, fields, event

    async def ack(self, outcome: Outcome) -> None:
        t = self.trigger
        await t._settle.xack(t.stream, t.group, self.entry_id)

    async def dead_letter(self, outcome: Outcome, reason: str) -> None:
        t = self.trigger
        event = self.event
        if t.config.dead_letter is None:
            await t._settle.xack(t.stream, t.group, self.entry_id)
            return
        extra = dead_letter_headers(event, outcome, t.component)[len(event.headers):]
        fields = dead_letter_fields(self.fields, extra)
        flat = [part for pair in fields.items() for part in pair]
        # Acks nothing when the XADD is refused: the entry stays pending and comes back
        # through the crash-loop guard after claim-idle-ms.
        try:
            await t._settle.eval(_DEAD_LETTER_THEN_ACK, 2, t.stream, t.config.dead_letter,
                                 t.group, self.entry_id, *flat)
        except RedisError as exc:
            dead_letter_refused(t.component, t.config.dead_letter, event.id, exc,
                                held="left pending, reclaimed after claim-idle-ms")

    async def next_attempt(self, event: Event, attempt: int, delay_s: float) -> Event | None:
        t, entry = self.trigger, self.entry_id.decode()
        claimed = None if await t._stopped_within(delay_s) else await self._claim_again()
        if claimed is None:
            log.info("stopping: entry left pending for the next start", stream=t.stream,
                     entry_id=entry)
            return None
        found = [f for i, f in claimed if f]
        if not found:
            log.warning("entry deleted from the stream before its retry", stream=t.stream,
                        entry_id=entry)
            await t._settle.xack(t.stream, t.group, self.entry_id)
            return None
        self.fields = found[0]
        counts = await t._delivery_counts([self.entry_id])
        self.event = t._event(self.entry_id, self.fields, counts.get(self.entry_id, attempt))
        return self.event

    async def _claim_again(self) -> list[Any] | None:
        """XCLAIM the entry for its next attempt, waiting for Redis while it is away (None:
        the trigger is stopping). Giving up released the key's lane: the entries behind
        this one ran first, and the retry, reclaimed later, came after them."""
        t = self.trigger
        backoff_s = t.spec.reconnect_min_ms / 1000
        while True:
            try:
                claimed: list[Any] = await t._settle.xclaim(t.stream, t.group, t.consumer, 0,
                                                            [self.entry_id])
                return claimed
            except CONNECTION_ERRORS as exc:
                log.warning("redis unavailable for a retry; the entry keeps its key's place",
                            stream=t.stream, entry_id=self.entry_id.decode(),
                            error=describe(exc), retry_in_s=backoff_s)
                if await t._stopped_within(backoff_s):
                    return None
                backoff_s = min(backoff_s * 2, t.spec.reconnect_max_ms / 1000)


def build_redis_streams_trigger(config: dict[str, Any], *, context: TriggerContext
                                ) -> RedisStreamsTrigger:
    """Decode and validate one ``[[trigger.redis-streams]]`` table (the registered factory)."""
    decoded = decode_config(config, RedisStreamsConfig, context)
    validate(decoded, context)
    return RedisStreamsTrigger(decoded, context)


register("redis-streams", build_redis_streams_trigger)

__all__ = ["RedisStreamsConfig", "RedisStreamsTrigger", "build_redis_streams_trigger"]
