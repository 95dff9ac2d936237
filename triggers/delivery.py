"""The delivery policy of every broker adapter, in one function, and what the adapters share.

:func:`deliver` owns what happens to one source message: the crash-loop guard, running it
(one classified call per attempt, :class:`~gateway.dispatch.Dispatcher`), the retry mode,
dead-lettering and the retry / dead-letter metrics. An adapter supplies intake and a
:class:`Settle` per message: ack, retry after a delay (broker redelivery), dead-letter with
a reason, reply, and, for in-process retries, how the next attempt is obtained.

======================  ==========================================================
the message             deliver
======================  ==========================================================
delivered more than     dead-letter it without running it: it stopped or crashed
``max-attempts`` times  the gateway on every delivery (error kind ``redelivery``)
call answered 2xx       reply, ack
call RETRY (429, 5xx,   last attempt: dead-letter. Otherwise retry after the
err, trap, timeout)     backoff: ``in-process`` runs it again here (the message
                        held); ``broker`` hands it back (nak with delay)
call 4xx                reply, dead-letter at once
======================  ==========================================================

Metrics: ``wasmgate_retries_total`` counts each retry once, when it is decided, in either
mode; ``wasmgate_dead_letters_total`` each dead letter (``error_kind`` says why).

Also here: :class:`BrokerTriggerConfig` (the fields every broker trigger table has),
:class:`OrderedLanes` (bounded concurrency, in order per key), :func:`dead_letter_headers`
and :class:`ConnectionWatch` (reconnect with backoff, logged once per state change).
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import Awaitable, Callable, Hashable
from datetime import UTC, datetime
from typing import Annotated, Literal

import msgspec
import structlog

from bindings.types import Event
from gateway import metrics
from gateway.dispatch import Outcome, RetryPolicy, Verdict, attempt_of, with_attempt
from gateway.manifest import BrokerSpec
from gateway.redaction import cut_masked, redact_url
from gateway.wasi_http import HTTP_PATH_METADATA

log = structlog.get_logger("wasmgate.delivery")

Positive = Annotated[int, msgspec.Meta(ge=1)]
HttpPath = Annotated[str, msgspec.Meta(pattern=r"^/\S*$")]
Ordering = Literal["partition", "key", "none"]
# in-process: a failed attempt runs again here after the backoff, the message held.
# broker: it goes back to the broker, which redelivers it after the backoff.
RetryMode = Literal["in-process", "broker"]
Run = Callable[[str, Event], Awaitable[Outcome]]

# Headers added to a dead-lettered message (the original headers are kept alongside).
DL_REASON = "wasmgate-dead-letter-reason"
DL_ERROR_KIND = "wasmgate-dead-letter-error-kind"
DL_STATUS = "wasmgate-dead-letter-status"
DL_ATTEMPTS = "wasmgate-dead-letter-attempts"
DL_COMPONENT = "wasmgate-dead-letter-component"
DL_SOURCE = "wasmgate-dead-letter-source"
DL_SUBJECT = "wasmgate-dead-letter-subject"
DL_EVENT_ID = "wasmgate-dead-letter-event-id"
# When it was dead-lettered (ISO 8601, UTC) and a unique id for it (AMQP messages have no
# stable position an operator could name); read by `wasmgate dead-letters`.
DL_TIME = "wasmgate-dead-letter-time"
DL_ID = "wasmgate-dead-letter-id"
# Added to a replayed message: the dead letter it came from (``<trigger>:<id>``).
REPLAYED_FROM = "wasmgate-replayed-from"
# Where it came from: DL_ORIGIN + a metadata name (topic, partition, offset, stream, ...).
DL_ORIGIN = "wasmgate-dead-letter-origin-"
ORIGIN_METADATA = ("topic", "partition", "offset", "stream", "stream-seq", "entry-id", "queue",
                   "exchange", "routing-key", "subject")


class BrokerTriggerConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True,
                          rename="kebab"):
    """Fields shared by every ``[[trigger.<broker>]]`` table; adapters subclass it."""

    component: str
    broker: str
    # Events of this trigger in flight at once (also bounded by the component's pool).
    concurrency: Positive = 16
    ordering: Ordering = "key"
    max_attempts: Positive = 5
    initial_backoff_ms: Positive = 200
    max_backoff_ms: Positive = 30_000
    backoff_multiplier: Annotated[float, msgspec.Meta(ge=1.0)] = 2.0
    # Where a message goes after its last attempt or on a 4xx (topic / subject / exchange /
    # stream, per broker). None: dead-lettered messages are logged and dropped.
    dead_letter: str | None = None
    # For a wasi:http component: the path this trigger's events are POSTed to (default: the
    # component's `http-path`, itself "/").
    http_path: HttpPath | None = None
    # At stop, how long events already handed to the handler may take to finish and settle;
    # what is still running then is left unsettled (redelivered by a durable broker).
    stop_grace_ms: Positive = 30_000

    @property
    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(max_attempts=self.max_attempts,
                           initial_backoff_ms=self.initial_backoff_ms,
                           max_backoff_ms=self.max_backoff_ms,
                           multiplier=self.backoff_multiplier)


class Settle:
    """How one source message is settled; an adapter subclasses it (one object per message,
    or one per trigger taking the message in its methods' closure)."""

    async def ack(self, outcome: Outcome) -> None:
        """The message is done: ack / commit / XACK."""
        raise NotImplementedError

    async def retry(self, outcome: Outcome, delay_s: float) -> None:
        """``broker`` mode: hand the message back to be redelivered after ``delay_s``."""
        raise NotImplementedError(f"{type(self).__name__} retries in process only")

    async def dead_letter(self, outcome: Outcome, reason: str) -> None:
        """Move the message to the dead-letter destination (or log and drop it without one),
        then settle the source. ``reason`` is also in ``outcome.error`` / headers."""
        raise NotImplementedError

    async def reply(self, outcome: Outcome) -> None:
        """Answer the requester where the source has replies (NATS request, AMQP reply-to);
        called once, before ack or dead-letter. Default: no replies."""

    async def next_attempt(self, event: Event, attempt: int, delay_s: float) -> Event | None:
        """``in-process`` mode: after ``delay_s``, the event to run as the next attempt
        (its ``attempt`` metadata may be above ``attempt`` when the broker counts more); None
        leaves the message unsettled for the broker (stopping, or deleted meanwhile)."""
        await asyncio.sleep(delay_s)
        return with_attempt(event, attempt)


class NothingToSettle(Settle):
    """A source with nothing to ack and nowhere to send a dead letter (cron, Redis pub/sub):
    deliver's log line and ``wasmgate_dead_letters_total`` are the only record."""

    async def ack(self, outcome: Outcome) -> None:
        return

    async def dead_letter(self, outcome: Outcome, reason: str) -> None:
        return


async def deliver(event: Event, settle: Settle, *, run: Run, component: str,
                  policy: RetryPolicy, mode: RetryMode, delivery_count: int = 1,
                  http_path: str | None = None) -> Outcome:
    """Run one source message through ``component`` and settle it; return the last outcome.

    ``delivery_count`` is how often the broker has handed this message out, this delivery
    included (1 where the source does not count); it is the first attempt's number. A
    settle call that fails is logged and the message left to the broker's redelivery.
    ``http_path`` is the trigger's ``http-path`` (where a wasi:http component gets it).
    """
    if http_path is not None:
        event = msgspec.structs.replace(
            event, metadata=[*event.metadata, (HTTP_PATH_METADATA, http_path)])
    if delivery_count > policy.max_attempts:
        outcome = _exhausted(delivery_count)
        await _settle_final(event, settle, outcome, component)
        return outcome
    attempt = max(1, delivery_count)
    event = with_attempt(event, attempt)
    while True:
        outcome = await run(component, event)
        if outcome.verdict is Verdict.RETRY and attempt >= policy.max_attempts:
            outcome.verdict = Verdict.DEAD_LETTER
        if outcome.verdict is not Verdict.RETRY:
            await _settle_final(event, settle, outcome, component)
            return outcome
        delay = policy.backoff_seconds(attempt)
        _count_retry(component)
        log.info("event will be retried", component=component, event_id=event.id,
                 attempt=attempt, status=outcome.status, error=outcome.error,
                 mode=mode, delay_s=round(delay, 3))
        try:
            if mode == "broker":
                await settle.retry(outcome, delay)
                return outcome
            again = await settle.next_attempt(event, attempt + 1, delay)
        except Exception as exc:
            _unsettled(event, component, outcome, exc)
            return outcome
        if again is None:
            return outcome
        event, attempt = again, max(attempt + 1, attempt_of(again))
        if attempt > policy.max_attempts:  # the broker counted deliveries we did not see
            outcome = _exhausted(attempt)
            await _settle_final(event, settle, outcome, component)
            return outcome


async def _settle_final(event: Event, settle: Settle, outcome: Outcome, component: str) -> None:
    try:
        await settle.reply(outcome)
        if outcome.verdict is Verdict.ACK:
            await settle.ack(outcome)
            return
        reason = failure_reason(outcome)
        log.error("event dead-lettered", component=component, event_id=event.id,
                  subject=event.subject, status=outcome.status, error=reason,
                  error_kind=dead_letter_kind(outcome), attempts=outcome.attempts)
        # source names the trigger kind and broker (wasmgate/kafka/<broker>); error_kind is
        # the reason, kept to a closed set (the free-text reason would explode the series).
        metrics.counter("wasmgate_dead_letters_total", "Messages dead-lettered, by why.",
                        component=component, source=event.source,
                        error_kind=dead_letter_kind(outcome))
        await settle.dead_letter(outcome, reason)
    except Exception as exc:
        _unsettled(event, component, outcome, exc)


def dead_letter_refused(component: str, destination: str, event_id: str,
                        error: BaseException, *, held: str) -> None:
    """Log and count a dead letter its destination did not confirm. The one policy on every
    durable broker: the message is neither acked nor dropped; ``held`` says where it waits
    for the next try (in process, requeued, nak'd, left pending)."""
    log.error("dead letter not confirmed; message held", component=component,
              dead_letter=destination, event_id=event_id, error=describe(error), held=held)
    metrics.counter("wasmgate_dead_letter_failures_total",
                    "Dead letters their destination did not confirm (the message was held "
                    "and tried again).", component=component)


def failure_reason(outcome: Outcome) -> str:
    """Why ``outcome`` failed, in words: its error, or the status the handler answered."""
    return outcome.error or f"handler answered status {outcome.status}"


def dead_letter_kind(outcome: Outcome) -> str:
    """Return why ``outcome`` was dead-lettered, as the log line, the metric and the
    dead-letter header all say it: the error kind, or "status" for a handler's own 4xx."""
    return outcome.error_kind or "status"


def _count_retry(component: str) -> None:
    metrics.counter("wasmgate_retries_total", "Retries decided (in process or by the broker).",
                    component=component)


def _unsettled(event: Event, component: str, outcome: Outcome, exc: Exception) -> None:
    log.warning("could not settle the message; the broker will redeliver it",
                component=component, event_id=event.id, verdict=outcome.verdict.value,
                error=describe(exc))


def _exhausted(count: int) -> Outcome:
    return Outcome(verdict=Verdict.DEAD_LETTER, error_kind="redelivery", attempts=count - 1,
                   error=f"delivered {count} times without an outcome (the gateway stopped "
                         "or crashed during every attempt); max-attempts reached")


def dead_letter_headers(event: Event, outcome: Outcome, component: str) -> list[tuple[str, str]]:
    """The event's own headers plus why, after how many attempts and where it failed."""
    extra = [
        (DL_REASON, cut_masked(failure_reason(outcome), 1000)),
        (DL_ERROR_KIND, dead_letter_kind(outcome)),
        (DL_STATUS, str(outcome.status)),
        (DL_ATTEMPTS, str(outcome.attempts)),
        (DL_COMPONENT, component),
        (DL_SOURCE, event.source),
        (DL_SUBJECT, event.subject),
        (DL_EVENT_ID, event.id),
        (DL_TIME, datetime.now(UTC).isoformat(timespec="milliseconds")),
        (DL_ID, stable_dead_letter_id(component, event)),
        *((DL_ORIGIN + name, value) for name, value in event.metadata
          if name in ORIGIN_METADATA),
    ]
    return [*event.headers, *extra]


def stable_dead_letter_id(component: str, event: Event) -> str:
    """The id of ``event``'s dead letter, the same each time it is written. A kill between
    writing a dead letter and settling its message writes it again on redelivery; with one
    id, ``wasmgate dead-letters`` lists and replays the copies as one. Derived from the
    component, the event's source and id (its position where the broker has one: topic,
    partition and offset, stream sequence, entry id), the dead letter it was replayed from,
    if any (a replay that fails again is a new dead letter), and its payload: an AMQP
    message id is the producer's own and may repeat for different messages."""
    replayed_from = next((v for k, v in event.headers if k == REPLAYED_FROM), "")
    digest = hashlib.sha256()
    for part in (component, event.source, event.id, replayed_from):
        digest.update(part.encode())
        digest.update(b"\0")
    digest.update(event.data)
    return digest.hexdigest()[:32]


def attempt_metadata(delivery_count: int) -> list[tuple[str, str]]:
    """The ``attempt`` metadata for a message the broker has delivered ``delivery_count``
    times (1 on first delivery), so retries continue counting across redeliveries."""
    return [("attempt", str(max(1, delivery_count)))]


class OrderedLanes:
    """Concurrency-limited runner that keeps events with the same key in order.

    ``key=None`` means "no ordering constraint": such jobs only share the concurrency
    limit. A key's jobs are chained: each starts after the previous one of that key ended.
    """

    def __init__(self, concurrency: int) -> None:
        self._slots = asyncio.Semaphore(concurrency)
        self._tails: dict[Hashable, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    async def submit(self, key: Hashable | None, job: Callable[[], Awaitable[None]]) -> None:
        """Schedule ``job``; returns once it holds a slot (waits while all are busy)."""
        await self._slots.acquire()
        previous = self._tails.get(key) if key is not None else None
        task = asyncio.create_task(self._run(previous, job))
        self._tasks.add(task)
        if key is not None:
            self._tails[key] = task
        task.add_done_callback(lambda t: self._forget(key, t))

    async def _run(self, previous: asyncio.Task[None] | None,
                   job: Callable[[], Awaitable[None]]) -> None:
        try:
            if previous is not None:
                # Order only; the previous job's failure is its own business.
                await asyncio.wait([previous])
            await job()
        except Exception:
            log.exception("event job failed outside the delivery policy")
        finally:
            self._slots.release()

    def _forget(self, key: Hashable | None, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if key is not None and self._tails.get(key) is task:
            del self._tails[key]

    async def drain(self) -> None:
        """Wait until every submitted job has finished."""
        while self._tasks:
            await asyncio.wait(list(self._tasks))

    async def cancel(self) -> None:
        """Cancel every job still running (hard stop); their messages stay unsettled."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def drain_within(self, grace_s: float) -> int:
        """Wait up to ``grace_s`` for every job to finish, then cancel the rest; return how
        many were cancelled (their messages stay unsettled)."""
        try:
            await asyncio.wait_for(self.drain(), grace_s)
            return 0
        except TimeoutError:
            abandoned = self.in_flight
            await self.cancel()
            return abandoned


async def drain_at_stop(lanes: OrderedLanes, config: BrokerTriggerConfig, *,
                        redelivered: bool, **where: object) -> None:
    """A trigger's stop, once intake has stopped: let running events finish for up to
    ``stop-grace-ms``, then cancel the rest and say what became of their messages."""
    abandoned = await lanes.drain_within(config.stop_grace_ms / 1000)
    if abandoned:
        fate = ("left unsettled: the broker redelivers them" if redelivered
                else "dropped (this trigger is at most once)")
        log.warning(f"events still running at the end of stop-grace-ms; {fate}",
                    component=config.component, abandoned=abandoned,
                    stop_grace_ms=config.stop_grace_ms, **where)


async def set_within(event: asyncio.Event, seconds: float) -> bool:
    """Wait up to ``seconds`` for ``event``; True when it was set by then (a trigger's stop
    ending a retry's backoff early)."""
    try:
        await asyncio.wait_for(event.wait(), seconds)
    except TimeoutError:
        return False
    return True


def lane_key(ordering: Ordering, key: bytes | None, partition: Hashable = None) -> Hashable | None:
    """The lane a message runs in: its partition, its key (falling back to the partition
    when it has none) or no lane at all."""
    if ordering == "none":
        return None
    if ordering == "key" and key is not None:
        return (partition, key)
    return (partition, None)


class ConnectionWatch:
    """Reconnect forever with backoff; log once per state change.

    ``state`` is "connecting" until the first success, then "up" / "down". A broker that is
    down at start is not fatal: intake starts when it answers.
    """

    def __init__(self, trigger: str, broker: str, spec: BrokerSpec,
                 *, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.trigger = trigger
        self.broker = broker
        self.address = redact_url(spec.url)
        self._min = spec.reconnect_min_ms / 1000
        self._max = spec.reconnect_max_ms / 1000
        self._sleep = sleep
        self._failures = 0
        self.state = "connecting"

    @property
    def failures(self) -> int:
        """Failed attempts since the last success."""
        return self._failures

    def up(self) -> None:
        if self.state != "up":
            log.info("broker connected", trigger=self.trigger, broker=self.broker,
                     address=self.address, after_failures=self._failures)
        self.state = "up"
        self._failures = 0

    async def down(self, error: BaseException) -> None:
        """Record a failure and wait the backoff before the next try."""
        self.lost(error)
        ceiling = min(self._max, self._min * 2 ** min(self._failures - 1, 30))
        await self._sleep(random.uniform(0.5, 1.0) * ceiling)

    def lost(self, error: BaseException) -> None:
        """Record a failure without waiting: for clients that reconnect by themselves
        (nats-py) and only report state changes through callbacks."""
        if self.state != "down":
            log.warning("broker unavailable; retrying with backoff", trigger=self.trigger,
                        broker=self.broker, address=self.address, error=describe(error))
        self.state = "down"
        self._failures += 1


def describe(error: BaseException) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


__all__ = [
    "DL_ATTEMPTS",
    "DL_COMPONENT",
    "DL_ERROR_KIND",
    "DL_EVENT_ID",
    "DL_ID",
    "DL_ORIGIN",
    "DL_REASON",
    "DL_SOURCE",
    "DL_STATUS",
    "DL_SUBJECT",
    "DL_TIME",
    "ORIGIN_METADATA",
    "REPLAYED_FROM",
    "BrokerTriggerConfig",
    "ConnectionWatch",
    "HttpPath",
    "NothingToSettle",
    "OrderedLanes",
    "RetryMode",
    "Run",
    "Settle",
    "attempt_metadata",
    "dead_letter_headers",
    "dead_letter_kind",
    "dead_letter_refused",
    "deliver",
    "describe",
    "drain_at_stop",
    "failure_reason",
    "lane_key",
    "set_within",
    "stable_dead_letter_id",
]
