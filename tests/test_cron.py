"""Unit tests for the cron trigger, on a virtual clock (nothing here sleeps for real)."""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from structlog.testing import capture_logs

from bindings.types import Event, Response
from gateway.dispatch import Outcome, RetryPolicy, Verdict
from gateway.errors import ConfigError
from triggers.base import TriggerContext
from triggers.cron import CronConfig, CronTrigger, build_cron_trigger

MANIFEST = "/srv/app/wasmgate.toml"
CONTEXT = TriggerContext(manifest_path=MANIFEST, field="trigger.cron[0]")
ACK = Outcome(verdict=Verdict.ACK, response=Response(status=200))


async def settle() -> None:
    """Let every runnable task run until the event loop is idle."""
    for _ in range(50):
        await asyncio.sleep(0)


class FakeClock:
    """Virtual time: sleepers wake only when the test calls :meth:`advance`."""

    def __init__(self, start: datetime) -> None:
        self._now = start
        self._sleepers: list[tuple[datetime, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def now(self) -> datetime:
        return self._now

    async def sleep_until(self, when: datetime) -> None:
        if when <= self._now:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (when, next(self._seq), future))
        await future

    async def advance(self, delta: timedelta) -> None:
        """Move time forward by ``delta``, waking sleepers in time order."""
        target = self._now + delta
        await settle()
        while self._sleepers and self._sleepers[0][0] <= target:
            when, _, future = heapq.heappop(self._sleepers)
            self._now = max(self._now, when)
            if not future.done():
                future.set_result(None)
            await settle()
        self._now = target
        await settle()


def utc(*fields: int) -> datetime:
    """``utc(2025, 1, 15, 12)``: a UTC datetime from year, month, day[, h, m, s]."""
    return datetime(*fields[:3], *fields[3:], tzinfo=UTC)  # type: ignore[arg-type, misc]


def make_trigger(clock: FakeClock, **config: Any) -> CronTrigger:
    return CronTrigger(CronConfig(**config), CONTEXT, clock=clock)


def recorder(
    outcome: Outcome = ACK,
) -> tuple[list[tuple[str, Event]], Callable[[str, Event], Awaitable[Outcome]]]:
    calls: list[tuple[str, Event]] = []

    async def dispatch(component: str, event: Event) -> Outcome:
        calls.append((component, event))
        return outcome

    return calls, dispatch


def micros(when: datetime) -> int:
    return int(when.timestamp()) * 1_000_000 + when.microsecond


async def test_six_field_schedule_fires_every_five_seconds_at_scheduled_times() -> None:
    clock = FakeClock(utc(2025, 1, 15, 12, 0, 0) + timedelta(seconds=1, microseconds=250))
    trigger = make_trigger(clock, component="ticker", schedule="*/5 * * * * *", data="ping")
    calls, dispatch = recorder()

    await trigger.start(dispatch)
    await clock.advance(timedelta(seconds=15))
    await trigger.stop()

    expected = [utc(2025, 1, 15, 12, 0, s) for s in (5, 10, 15)]
    assert [component for component, _ in calls] == ["ticker"] * 3
    events = [event for _, event in calls]
    assert [e.time for e in events] == [micros(t) for t in expected]
    assert [e.meta("scheduled-time") for e in events] == [t.isoformat() for t in expected]
    first = events[0]
    assert first.type == "wasmgate.cron.tick"
    assert first.source == "wasmgate/cron"
    assert first.subject == "*/5 * * * * *"
    assert first.subject == "*/5 * * * * *"
    assert first.meta("schedule") == "*/5 * * * * *"
    assert first.meta("trigger") == "cron"
    assert first.content_type == "text/plain"
    assert first.data == b"ping"
    assert len({e.id for e in events}) == 3
    assert trigger.skipped_ticks == 0
    assert trigger.failed_runs == 0


async def test_five_field_schedule_without_data_has_no_content_type() -> None:
    clock = FakeClock(utc(2025, 1, 15, 12, 0, 30))
    trigger = make_trigger(clock, component="c", schedule="* * * * *")
    calls, dispatch = recorder()

    await trigger.start(dispatch)
    await clock.advance(timedelta(minutes=2))
    await trigger.stop()

    assert [e.time for _, e in calls] == [micros(utc(2025, 1, 15, 12, m)) for m in (1, 2)]
    assert calls[0][1].content_type is None
    assert calls[0][1].data == b""


@pytest.mark.parametrize(
    ("day", "expected_utc"),
    [
        (utc(2025, 1, 15), utc(2025, 1, 15, 8, 0)),  # CET, UTC+1
        (utc(2025, 7, 15), utc(2025, 7, 15, 7, 0)),  # CEST, UTC+2
    ],
)
async def test_timezone_is_respected(day: datetime, expected_utc: datetime) -> None:
    clock = FakeClock(day)
    trigger = make_trigger(clock, component="c", schedule="0 9 * * *", timezone="Europe/Paris")
    calls, dispatch = recorder()

    await trigger.start(dispatch)
    await clock.advance(timedelta(hours=23))
    await trigger.stop()

    assert len(calls) == 1
    event = calls[0][1]
    assert event.time == micros(expected_utc)
    scheduled = datetime.fromisoformat(event.meta("scheduled-time") or "")
    assert scheduled == expected_utc
    assert scheduled.hour == 9  # local wall time in Paris


async def test_overlapping_ticks_are_skipped_and_counted() -> None:
    clock = FakeClock(utc(2025, 1, 15, 12, 0, 0) + timedelta(milliseconds=500))
    trigger = make_trigger(clock, component="slow", schedule="*/5 * * * * *")
    calls: list[datetime] = []

    async def slow_dispatch(component: str, event: Event) -> Outcome:
        calls.append(clock.now())
        await clock.sleep_until(clock.now() + timedelta(seconds=12))  # longer than 2 ticks
        return ACK

    with capture_logs() as logs:
        await trigger.start(slow_dispatch)
        await clock.advance(timedelta(seconds=16))  # ticks at :05 :10 :15
        # the :05 run lasts until :17, so :10 and :15 are skipped
        assert calls == [utc(2025, 1, 15, 12, 0, 5)]
        assert trigger.skipped_ticks == 2
        await clock.advance(timedelta(seconds=4))  # tick at :20 runs again
        assert calls == [utc(2025, 1, 15, 12, 0, 5), utc(2025, 1, 15, 12, 0, 20)]
        stopping = asyncio.create_task(trigger.stop())
        await clock.advance(timedelta(seconds=12))
        await stopping

    skipped = [e for e in logs if e["event"].startswith("cron tick skipped")]
    assert [e["log_level"] for e in skipped] == ["warning", "warning"]
    assert skipped[0]["scheduled_time"] == utc(2025, 1, 15, 12, 0, 10).isoformat()
    assert trigger.skipped_ticks == 2


async def test_failing_runs_do_not_stop_the_loop() -> None:
    clock = FakeClock(utc(2025, 1, 15, 12, 0, 0))
    trigger = make_trigger(clock, component="flaky", schedule="* * * * * *")
    results: list[Outcome | Exception] = [
        Outcome(verdict=Verdict.DEAD_LETTER, response=Response(status=400), error="bad input"),
        RuntimeError("dispatcher exploded"),
        Outcome(verdict=Verdict.RETRY, error="trap", error_kind="trap", attempts=3),
        ACK,
    ]
    seen: list[Event] = []

    async def dispatch(component: str, event: Event) -> Outcome:
        seen.append(event)
        result = results[len(seen) - 1]
        if isinstance(result, Exception):
            raise result
        return result

    with capture_logs() as logs:
        await trigger.start(dispatch)
        await clock.advance(timedelta(seconds=4))
        await trigger.stop()

    assert len(seen) == 4
    assert trigger.failed_runs == 3
    errors = [e for e in logs if e["log_level"] == "error"]
    # A failed run is cron's dead letter: logged (and counted) by deliver().
    assert [e["event"] for e in errors] == ["event dead-lettered", "cron run raised",
                                            "event dead-lettered"]
    assert errors[0]["status"] == 400
    assert errors[0]["error"] == "bad input"
    assert errors[0]["event_id"] == seen[0].id
    assert errors[0]["component"] == "flaky"
    assert errors[2]["status"] == 500


async def test_stop_waits_for_the_in_flight_run() -> None:
    clock = FakeClock(utc(2025, 1, 15, 12, 0, 0))
    trigger = make_trigger(clock, component="c", schedule="* * * * * *")
    release = asyncio.Event()
    finished: list[str] = []

    async def dispatch(component: str, event: Event) -> Outcome:
        await release.wait()
        finished.append(event.id)
        return ACK

    await trigger.start(dispatch)
    await clock.advance(timedelta(seconds=1))
    stopping = asyncio.create_task(trigger.stop())
    await settle()
    assert not stopping.done()
    assert finished == []

    release.set()
    await stopping
    assert len(finished) == 1
    # No further ticks after stop.
    await clock.advance(timedelta(seconds=10))
    assert len(finished) == 1


async def test_stop_when_idle_returns_and_fires_nothing_more() -> None:
    clock = FakeClock(utc(2025, 1, 15, 12, 0, 0))
    trigger = make_trigger(clock, component="c", schedule="* * * * * *")
    calls, dispatch = recorder()
    await trigger.start(dispatch)
    await trigger.stop()
    await clock.advance(timedelta(seconds=5))
    assert calls == []


def test_retry_policy_is_exposed_for_the_dispatcher() -> None:
    trigger = build_cron_trigger(
        {"component": "c", "schedule": "0 * * * *", "retry": {"max-attempts": 3}},
        context=CONTEXT,
    )
    assert trigger.kind == "cron"
    assert trigger.component == "c"
    assert trigger.retry_policy == RetryPolicy(max_attempts=3)


@pytest.mark.parametrize("schedule", ["61 * * * *", "every minute", "* * *", "0 0 * * * * 2025"])
def test_bad_schedule_is_a_config_error(schedule: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_cron_trigger({"component": "c", "schedule": schedule}, context=CONTEXT)
    message = str(info.value)
    assert MANIFEST in message
    assert "trigger.cron[0].schedule" in message
    assert repr(schedule) in message
    assert "*/5 * * * * *" in message  # says what a valid expression looks like
    assert info.value.path == MANIFEST


def test_impossible_schedule_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="never fires"):
        build_cron_trigger({"component": "c", "schedule": "0 0 31 2 *"}, context=CONTEXT)


@pytest.mark.parametrize("tz", ["Mars/Olympus_Mons", "", "../etc/passwd"])
def test_unknown_timezone_is_a_config_error(tz: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_cron_trigger(
            {"component": "c", "schedule": "0 * * * *", "timezone": tz}, context=CONTEXT
        )
    message = str(info.value)
    assert MANIFEST in message
    assert "trigger.cron[0].timezone" in message
    assert repr(tz) in message


def test_unknown_config_key_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as info:
        build_cron_trigger(
            {"component": "c", "schedule": "0 * * * *", "shedule-tz": "UTC"}, context=CONTEXT
        )
    message = str(info.value)
    assert MANIFEST in message
    assert "shedule-tz" in message


def test_a_misspelt_field_gets_the_manifests_did_you_mean() -> None:
    with pytest.raises(ConfigError) as info:
        build_cron_trigger(
            {"component": "c", "schedule": "0 * * * *", "timezon": "UTC"}, context=CONTEXT
        )
    message = str(info.value)
    assert "at `trigger.cron[0].timezon`: unknown field `timezon`; did you mean `timezone`?" \
        in message
    assert "Object contains unknown field" not in message


def test_missing_schedule_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="schedule"):
        build_cron_trigger({"component": "c"}, context=CONTEXT)


# -- one run per tick among replicas ---------------------------------------------------------


def _replica(clock: FakeClock, store: Any, app: str = "shop") -> CronTrigger:
    context = TriggerContext(manifest_path=MANIFEST, field="trigger.cron[0]", application=app,
                             key_value=lambda name: store)
    return CronTrigger(CronConfig(component="report", schedule="*/5 * * * * *",
                                  claim_store="shared"), context, clock=clock)


async def test_replicas_sharing_a_claim_store_run_each_tick_once(tmp_path: Any) -> None:
    from bindings.host.kv import SqliteKeyValue

    clock = FakeClock(utc(2025, 1, 15, 12, 0, 1))
    # Two stores on one file: two processes on one host, each with its own connection.
    first_store = SqliteKeyValue(tmp_path / "claims.sqlite", name="shared")
    second_store = SqliteKeyValue(tmp_path / "claims.sqlite", name="shared")
    replicas = [_replica(clock, first_store), _replica(clock, second_store)]
    calls, dispatch = recorder()
    for replica in replicas:
        await replica.start(dispatch)
    await clock.advance(timedelta(seconds=20))
    for replica in replicas:
        await replica.stop()

    ticks = [e.meta("scheduled-time") for _, e in calls]
    assert sorted(ticks) == [utc(2025, 1, 15, 12, 0, s).isoformat() for s in (5, 10, 15, 20)]
    assert sum(r.claimed_elsewhere for r in replicas) == 4
    first_store.close()
    second_store.close()


async def test_without_a_claim_store_every_replica_runs_every_tick() -> None:
    clock = FakeClock(utc(2025, 1, 15, 12, 0, 1))
    replicas = [make_trigger(clock, component="report", schedule="*/5 * * * * *")
                for _ in range(2)]
    calls, dispatch = recorder()
    for replica in replicas:
        await replica.start(dispatch)
    await clock.advance(timedelta(seconds=10))
    for replica in replicas:
        await replica.stop()
    assert len(calls) == 4


async def test_an_unavailable_claim_store_skips_the_tick_and_says_why() -> None:
    from bindings.host.kv import KeyValueError

    class DownStore:
        def claim(self, key: str, value: bytes, ttl_ms: int) -> bool:
            raise KeyValueError("key-value store 'shared': Redis at redis://h:6379 is down")

    clock = FakeClock(utc(2025, 1, 15, 12, 0, 1))
    trigger = _replica(clock, DownStore())
    calls, dispatch = recorder()
    await trigger.start(dispatch)
    with capture_logs() as logs:
        await clock.advance(timedelta(seconds=5))
    await trigger.stop()
    assert calls == []
    assert trigger.skipped_ticks == 1
    assert any(e["event"] == "cron tick skipped: claim store unavailable" for e in logs)


@pytest.mark.wasm
def test_claim_store_must_be_declared(tmp_path: Any) -> None:
    from gateway.app import App
    from tests.fixtures.build import build_handler

    (tmp_path / "wasmgate.toml").write_text(f"""
[application]
name = "x"
[component.report]
source = "{build_handler('echo')}"
[[trigger.cron]]
component = "report"
schedule = "* * * * *"
claim-store = "shraed"
""")
    with pytest.raises(ConfigError) as info:
        App.load(tmp_path / "wasmgate.toml")
    assert info.value.field == "trigger.cron[0].claim-store"
    assert "no key-value store named 'shraed'" in str(info.value)


def test_redis_claim_is_set_if_absent() -> None:
    import uuid

    from bindings.host.kv_redis import RedisKeyValue

    store = RedisKeyValue("redis://127.0.0.1:6379/0", name="shared",
                          prefix=f"test-claims-{uuid.uuid4().hex[:8]}:")
    try:
        assert store.claim("tick-1", b"replica-a", 5000) is True
        assert store.claim("tick-1", b"replica-b", 5000) is False
        assert store.get("tick-1") == b"replica-a"
        assert store.claim("tick-2", b"replica-b", 5000) is True
    finally:
        for key in store.list_keys():
            store.delete(key)
        store.close()
