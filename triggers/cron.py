"""The cron trigger: call a component on a schedule.

Each ``[[trigger.cron]]`` table names a component and a cron ``schedule`` evaluated in an
IANA ``timezone`` (default UTC). The schedule has either 5 fields (minute hour
day-of-month month day-of-week) or 6 fields whose *first* field is seconds, so
``"*/5 * * * * *"`` fires every five seconds; the ``@hourly``-style aliases also work. At
every fire time the trigger builds one :class:`~bindings.types.Event` (type
``wasmgate.cron.tick``, ``time`` = the *scheduled* instant, ``data`` = the configured
``data`` string) and awaits ``dispatch(component, event)``.

Delivery semantics:

* **No overlap.** At most one run of a schedule is in flight. If the previous run (with
  its in-tick retries, see ``retry``) is still going when the next fire time arrives, that
  tick is *skipped*: logged as a warning and counted in :attr:`CronTrigger.skipped_ticks`.
  Skipped ticks are never replayed later.
* **At most one run per tick per process.** A tick whose time passed while the process
  was not scheduling (suspended, event loop blocked) is dropped, not caught up in a burst.
  A failed run (non-ACK outcome or an exception from dispatch) is logged and counted in
  :attr:`CronTrigger.failed_runs`; it never stops the schedule.
* **Per process, not per deployment.** Every replica of the gateway runs its own schedule,
  so N replicas fire each tick N times. Leader election among replicas (so that exactly one
  replica fires) is future work; until then run cron triggers in a single replica.

Time is read through an injectable :class:`Clock` so that tests never sleep for real.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec
import structlog
from croniter import CroniterBadDateError, CroniterError, croniter

from bindings.types import Event, new_event_id
from gateway.dispatch import RetryPolicy, Verdict
from gateway.errors import ConfigError, WasmgateError
from gateway.workers import worker_index
from triggers.base import Dispatch, TriggerContext, decode_config, register
from triggers.delivery import HttpPath, NothingToSettle, deliver

log = structlog.get_logger("wasmgate.cron")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MICROSECOND = timedelta(microseconds=1)
_VALID_SCHEDULE_HINT = (
    'a valid schedule has 5 fields "minute hour day-of-month month day-of-week" '
    '(e.g. "0 9 * * mon-fri" = 09:00 on weekdays), or 6 fields with seconds first '
    '(e.g. "*/5 * * * * *" = every 5 seconds), or an alias such as "@hourly"'
)


class CronConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, rename="kebab"):
    """The schema of one ``[[trigger.cron]]`` table."""

    component: str
    schedule: str
    timezone: str = "UTC"
    data: str = ""
    retry: RetryPolicy = RetryPolicy()
    # With replicas: each tick runs on exactly one of them, the first to claim it in this
    # key-value store (Redis for replicas on several hosts, SQLite for processes on one).
    claim_store: str | None = None
    # For a wasi:http component: the path each tick is POSTed to (default: the component's
    # `http-path`, itself "/").
    http_path: HttpPath | None = None


class Clock(Protocol):
    """Where the trigger reads the time and waits for the next fire time."""

    def now(self) -> datetime:
        """Return the current time as an aware datetime."""
        ...

    async def sleep_until(self, when: datetime) -> None:
        """Return once ``now() >= when`` (at once if ``when`` is already past)."""
        ...


class SystemClock:
    """The wall clock, waited on with :func:`asyncio.sleep`."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep_until(self, when: datetime) -> None:
        # Loop: asyncio sleeps on the monotonic clock, which may drift from the wall clock.
        while (delay := (when - self.now()).total_seconds()) > 0:
            await asyncio.sleep(delay)


def _micros_since_epoch(when: datetime) -> int:
    return (when - _EPOCH) // _ONE_MICROSECOND


class CronTrigger:
    """One ``[[trigger.cron]]`` table: fires ``component`` at every tick of ``schedule``."""

    kind: ClassVar[str] = "cron"

    def __init__(self, config: CronConfig, context: TriggerContext, *,
                 clock: Clock | None = None) -> None:
        # Set first thing in start(): stop() of a trigger never started (a manifest check
        # builds every trigger to validate it) does nothing and logs nothing.
        self._started = False
        self.config = config
        self.component = config.component
        self.schedule = config.schedule
        # Retries happen within the tick (deliver, in process); a failed run is logged.
        self.retry_policy: RetryPolicy = config.retry
        self.tz = _load_timezone(config.timezone, context)
        self._clock: Clock = clock or SystemClock()
        _validate_schedule(config.schedule, self.tz, self._clock.now(), context)
        self._claims = context.store(config.claim_store, "claim-store")
        self._claim_prefix = (f"wasmgate-cron:{context.application}:{config.component}:"
                              f"{config.schedule}:")
        self._replica = new_event_id()
        self.claimed_elsewhere = 0
        self.skipped_ticks = 0
        self.failed_runs = 0
        self.runs = 0
        self._dispatch: Dispatch | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._inflight: asyncio.Task[None] | None = None
        self._stopping = False

    async def start(self, dispatch: Dispatch) -> None:
        """Spawn the schedule loop and return."""
        self._started = True
        if self._loop_task is not None:
            raise RuntimeError(f"cron trigger for {self.component!r} already started")
        self._dispatch = dispatch
        self._stopping = False
        if self._claims is None and worker_index() != 0:
            # `--workers N` on one host: without a claim store every worker would fire.
            log.info("cron trigger left to worker 0", component=self.component,
                     schedule=self.schedule, worker=worker_index())
            return
        self._loop_task = asyncio.create_task(
            self._schedule_loop(), name=f"wasmgate-cron:{self.component}:{self.schedule}"
        )
        log.info("cron trigger started", component=self.component, schedule=self.schedule,
                 timezone=self.config.timezone)

    async def stop(self) -> None:
        """Stop scheduling, wait for an in-flight run to finish, then return."""
        if not self._started:
            return
        self._stopping = True
        loop_task, self._loop_task = self._loop_task, None
        if loop_task is not None:
            # The loop only ever awaits the clock, so cancelling it never interrupts a run.
            loop_task.cancel()
            # asyncio.wait never raises, so a cancellation of stop() itself still propagates.
            await asyncio.wait([loop_task])
            if not loop_task.cancelled() and (exc := loop_task.exception()) is not None:
                log.error("cron schedule loop had crashed", component=self.component,
                          schedule=self.schedule, exc_info=exc)
        inflight = self._inflight
        if inflight is not None and not inflight.done():
            log.info("waiting for in-flight cron run", component=self.component,
                     schedule=self.schedule)
            await inflight
        self._inflight = None
        log.info("cron trigger stopped", component=self.component, schedule=self.schedule,
                 runs=self.runs, skipped_ticks=self.skipped_ticks, failed_runs=self.failed_runs)

    async def _schedule_loop(self) -> None:
        cursor = self._clock.now().astimezone(self.tz)
        while not self._stopping:
            try:
                fire: datetime = croniter(
                    self.schedule, cursor, second_at_beginning=True
                ).get_next(datetime)
            except CroniterBadDateError:
                log.error("cron schedule has no further fire time; stopping it",
                          component=self.component, schedule=self.schedule)
                return
            await self._clock.sleep_until(fire)
            if self._stopping:
                return
            self._fire(fire)
            # Continue after the later of the tick and now: ticks that passed while this
            # loop was not running are dropped rather than fired in a burst.
            cursor = max(fire, self._clock.now().astimezone(self.tz))

    def _claimed_here(self, scheduled: datetime) -> bool:
        """With a claim store: whether this replica won the tick. Called on the loop: one
        short write per tick is cheaper than a thread hop, and keeps ticks in order."""
        if self._claims is None:
            return True
        key = self._claim_prefix + scheduled.isoformat()
        try:
            # The claim outlives any clock skew between replicas, then expires by itself.
            won = self._claims.claim(key, self._replica.encode(), _CLAIM_TTL_MS)
        except WasmgateError as exc:
            # Skipping is the safe side: a job that must run once per tick must not run
            # on every replica because the claim store is down.
            self.skipped_ticks += 1
            log.error("cron tick skipped: claim store unavailable", component=self.component,
                      schedule=self.schedule, scheduled_time=scheduled.isoformat(),
                      error=str(exc))
            return False
        if not won:
            self.claimed_elsewhere += 1
            log.debug("cron tick claimed by another replica", component=self.component,
                      schedule=self.schedule, scheduled_time=scheduled.isoformat())
        return won

    def _fire(self, scheduled: datetime) -> None:
        if not self._claimed_here(scheduled):
            return
        if self._inflight is not None and not self._inflight.done():
            self.skipped_ticks += 1
            log.warning("cron tick skipped: previous run still in flight",
                        component=self.component, schedule=self.schedule,
                        scheduled_time=scheduled.isoformat(), skipped_ticks=self.skipped_ticks)
            return
        self._inflight = asyncio.create_task(
            self._run(self.build_event(scheduled)),
            name=f"wasmgate-cron-run:{self.component}:{scheduled.isoformat()}",
        )

    def build_event(self, scheduled: datetime) -> Event:
        """The event for the tick scheduled at ``scheduled`` (an aware datetime)."""
        scheduled = scheduled.astimezone(self.tz)
        data = self.config.data
        return Event(
            id=new_event_id(),
            # A CloudEvents source is a URI-reference: no spaces, so the schedule goes in
            # `subject` and metadata, not here.
            source="wasmgate/cron",
            type="wasmgate.cron.tick",
            subject=self.schedule,
            time=_micros_since_epoch(scheduled),
            content_type="text/plain" if data else None,
            metadata=[
                ("scheduled-time", scheduled.isoformat()),
                ("schedule", self.schedule),
                ("trigger", "cron"),
            ],
            data=data.encode(),
        )

    async def _run(self, event: Event) -> None:
        assert self._dispatch is not None
        self.runs += 1
        try:
            outcome = await deliver(event, NothingToSettle(), run=self._dispatch,
                                    component=self.component, policy=self.retry_policy,
                                    http_path=self.config.http_path,
                                    mode="in-process")
        except Exception:
            self.failed_runs += 1
            log.exception("cron run raised", component=self.component, event_id=event.id,
                          schedule=self.schedule)
            return
        if outcome.verdict is not Verdict.ACK:
            # deliver() logged it and counted it in wasmgate_dead_letters_total.
            self.failed_runs += 1


_CLAIM_TTL_MS = 24 * 3600 * 1000


def _load_timezone(name: str, context: TriggerContext) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    # OSError: a name too long for the file system ("File name too long") is not a zone either.
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        reason = str(exc).strip("'\"")
        raise ConfigError(
            f"unknown timezone {name!r} ({reason}); use an IANA name such as "
            '"UTC", "Europe/Paris" or "America/New_York"',
            path=context.manifest_path, field=f"{context.field}.timezone",
        ) from None


def _validate_schedule(schedule: str, tz: ZoneInfo, now: datetime,
                       context: TriggerContext) -> None:
    field = f"{context.field}.schedule"
    n_fields = len(schedule.split())
    if not schedule.strip().startswith("@") and n_fields not in (5, 6):
        raise ConfigError(
            f"invalid cron schedule {schedule!r}: it has {n_fields} fields, expected 5 or 6; "
            f"{_VALID_SCHEDULE_HINT}",
            path=context.manifest_path, field=field,
        )
    try:
        croniter(schedule, now.astimezone(tz), second_at_beginning=True).get_next(datetime)
    except CroniterBadDateError:
        raise ConfigError(
            f"cron schedule {schedule!r} never fires (no matching date, e.g. February 31st); "
            f"{_VALID_SCHEDULE_HINT}",
            path=context.manifest_path, field=field,
        ) from None
    except (CroniterError, ValueError) as exc:
        # croniter sometimes wraps a whole traceback; its last line is the reason.
        lines = str(exc).strip().splitlines()
        reason = lines[-1] if lines else type(exc).__name__
        raise ConfigError(
            f"invalid cron schedule {schedule!r}: {reason}; {_VALID_SCHEDULE_HINT}",
            path=context.manifest_path, field=field,
        ) from None


def build_cron_trigger(config: dict[str, Any], *, context: TriggerContext) -> CronTrigger:
    """Decode and validate one ``[[trigger.cron]]`` table (the registered factory)."""
    return CronTrigger(decode_config(config, CronConfig, context), context)


register("cron", build_cron_trigger)

__all__ = ["Clock", "CronConfig", "CronTrigger", "SystemClock", "build_cron_trigger"]
