"""What every broker adapter shares: its common config, ordered lanes, dead-letter envelopes
and the reconnect loop.

The delivery *policy* (status vocabulary, retries, backoff, when to dead-letter) lives in
:mod:`gateway.dispatch`. This module holds the *mechanics* that would otherwise be copied
into each adapter:

* :class:`BrokerTriggerConfig`: the fields every broker trigger table has (component,
  broker, concurrency, ordering, max-attempts and backoff, dead-letter destination).
* :class:`OrderedLanes`: runs events concurrently up to a limit while events that share a
  key run one after another, in arrival order. ``submit`` waits when the limit is reached,
  which is how a full pool pushes back on the consume loop.
* :func:`dead_letter_headers`: the reason, attempt count and component added to a
  dead-lettered message, whose payload and original headers are kept.
* :class:`ConnectionWatch`: reconnect with exponential backoff, forever, logging once per
  state change (not once per failed attempt).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Hashable
from typing import Annotated, Literal

import msgspec
import structlog

from bindings.types import Event
from gateway.dispatch import Outcome, RetryPolicy, Verdict
from gateway.manifest import BrokerSpec
from gateway.redaction import redact_url

log = structlog.get_logger("wasmgate.delivery")

Positive = Annotated[int, msgspec.Meta(ge=1)]
Ordering = Literal["partition", "key", "none"]

# Headers added to a dead-lettered message (the original headers are kept alongside).
DL_REASON = "wasmgate-dead-letter-reason"
DL_ERROR_KIND = "wasmgate-dead-letter-error-kind"
DL_STATUS = "wasmgate-dead-letter-status"
DL_ATTEMPTS = "wasmgate-dead-letter-attempts"
DL_COMPONENT = "wasmgate-dead-letter-component"
DL_SOURCE = "wasmgate-dead-letter-source"
DL_SUBJECT = "wasmgate-dead-letter-subject"
DL_EVENT_ID = "wasmgate-dead-letter-event-id"


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

    @property
    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(max_attempts=self.max_attempts,
                           initial_backoff_ms=self.initial_backoff_ms,
                           max_backoff_ms=self.max_backoff_ms,
                           multiplier=self.backoff_multiplier)


def is_dead_letter(outcome: Outcome) -> bool:
    """True when the source message must leave for the dead-letter destination.

    A RETRY that carries no ``retry_delay_s`` was the last allowed attempt of a policy with
    ``max-attempts = 1``; for a broker that is a dead letter too, never a silent drop.
    """
    return outcome.verdict is Verdict.DEAD_LETTER or (
        outcome.verdict is Verdict.RETRY and outcome.retry_delay_s is None)


def dead_letter_headers(event: Event, outcome: Outcome, component: str) -> list[tuple[str, str]]:
    """The event's own headers plus why, after how many attempts and where it failed."""
    reason = outcome.error or f"handler answered status {outcome.status}"
    extra = [
        (DL_REASON, reason[:1000]),
        (DL_ERROR_KIND, outcome.error_kind or "status"),
        (DL_STATUS, str(outcome.status)),
        (DL_ATTEMPTS, str(outcome.attempts)),
        (DL_COMPONENT, component),
        (DL_SOURCE, event.source),
        (DL_SUBJECT, event.subject),
        (DL_EVENT_ID, event.id),
    ]
    return [*event.headers, *extra]


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
    "DL_REASON",
    "DL_STATUS",
    "BrokerTriggerConfig",
    "ConnectionWatch",
    "OrderedLanes",
    "attempt_metadata",
    "dead_letter_headers",
    "describe",
    "is_dead_letter",
    "lane_key",
]
