"""The dispatcher: one call, classified by the status vocabulary; backoff arithmetic."""

from __future__ import annotations

import random
import uuid

import pytest

from bindings.types import Event, Response
from gateway.dispatch import Dispatcher, RetryPolicy, Verdict, verdict_for_status
from gateway.errors import HandlerTimeout, HandlerTrap


def _event() -> Event:
    return Event(id="e1", source="test", type="t")


@pytest.mark.parametrize(
    ("status", "verdict"),
    [(200, Verdict.ACK), (204, Verdict.ACK), (302, Verdict.ACK), (400, Verdict.DEAD_LETTER),
     (404, Verdict.DEAD_LETTER), (429, Verdict.RETRY), (500, Verdict.RETRY),
     (503, Verdict.RETRY)],
)
def test_status_vocabulary(status: int, verdict: Verdict) -> None:
    assert verdict_for_status(status) is verdict


class Script:
    """An invoke() that plays back a list of results and records the events it saw."""

    def __init__(self, *results: Response | Exception) -> None:
        self.results = list(results)
        self.seen: list[Event] = []

    async def __call__(self, component: str, event: Event) -> Response:
        self.seen.append(event)
        result = self.results.pop(0)
        if isinstance(result, Exception):
            raise result
        return result


async def test_one_call_classified_with_its_attempt_number() -> None:
    script = Script(HandlerTimeout("late"))
    event = Event(id="e1", source="test", type="t", metadata=[("attempt", "3")])
    outcome = await Dispatcher(script).dispatch("c", event)
    assert outcome.verdict is Verdict.RETRY
    assert outcome.error_kind == "timeout"
    assert outcome.status == 504
    assert outcome.attempts == 3
    assert len(script.seen) == 1


async def test_a_trap_is_a_retry_with_its_kind() -> None:
    outcome = await Dispatcher(Script(HandlerTrap("boom"))).dispatch("c", _event())
    assert (outcome.verdict, outcome.error_kind, outcome.status) == (Verdict.RETRY, "trap", 500)


async def test_client_error_dead_letters_at_once() -> None:
    script = Script(Response(status=422))
    outcome = await Dispatcher(script).dispatch("c", _event())
    assert outcome.verdict is Verdict.DEAD_LETTER
    assert len(script.seen) == 1


async def test_a_server_error_stays_retryable_for_the_source() -> None:
    # One call; the caller (deliver, or HTTP) decides what RETRY means.
    outcome = await Dispatcher(Script(Response(status=500))).dispatch("c", _event())
    assert outcome.verdict is Verdict.RETRY


def test_backoff_is_capped() -> None:
    policy = RetryPolicy(initial_backoff_ms=100, max_backoff_ms=1000, multiplier=10)
    assert policy.backoff_seconds(10, random.Random(1)) <= 1.0


async def test_each_call_is_counted_in_metrics() -> None:
    from gateway import metrics

    async def answer(component: str, event: Event) -> Response:
        return Response(status=404)

    # A component name no other test uses: the registry is process-wide.
    name = f"metered-{uuid.uuid4().hex[:8]}"
    await Dispatcher(answer).dispatch(name, Event(id="1", source="s", type="t"))
    after = metrics.render()
    assert f'wasmgate_events_total{{component="{name}",error_kind="",verdict="dead-letter"}} 1' \
        in after
    assert f'wasmgate_event_duration_seconds_count{{component="{name}"}} 1' in after
    assert f'wasmgate_event_duration_seconds_bucket{{component="{name}",le="+Inf"}} 1' in after
