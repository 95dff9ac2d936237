"""The shared delivery policy: status vocabulary, retries with backoff, dead-lettering."""

from __future__ import annotations

import random

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


async def test_retries_then_succeeds_and_counts_attempts() -> None:
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    script = Script(HandlerTrap("boom"), Response(status=503), Response(status=200, body=b"ok"))
    outcome = await Dispatcher(script, sleep=sleep).dispatch(
        "c", _event(), RetryPolicy(max_attempts=5, initial_backoff_ms=100))
    assert outcome.verdict is Verdict.ACK
    assert outcome.attempts == 3
    assert [e.meta("attempt") for e in script.seen] == [None, "2", "3"]
    assert len(sleeps) == 2
    assert 0.05 <= sleeps[0] <= 0.1 and 0.1 <= sleeps[1] <= 0.2


async def test_exhausted_retries_dead_letter_with_reason() -> None:
    async def sleep(seconds: float) -> None:
        return None

    script = Script(HandlerTimeout("late"), HandlerTimeout("late"))
    outcome = await Dispatcher(script, sleep=sleep).dispatch(
        "c", _event(), RetryPolicy(max_attempts=2))
    assert outcome.verdict is Verdict.DEAD_LETTER
    assert outcome.error_kind == "timeout"
    assert outcome.status == 504
    assert outcome.attempts == 2


async def test_client_error_dead_letters_at_once() -> None:
    script = Script(Response(status=422))
    outcome = await Dispatcher(script).dispatch("c", _event(), RetryPolicy(max_attempts=5))
    assert outcome.verdict is Verdict.DEAD_LETTER
    assert len(script.seen) == 1


async def test_without_retry_policy_a_failure_stays_retryable_for_the_source() -> None:
    # HTTP and at-most-once sources run one attempt; the caller decides what RETRY means.
    outcome = await Dispatcher(Script(Response(status=500))).dispatch("c", _event())
    assert outcome.verdict is Verdict.RETRY


def test_backoff_is_capped() -> None:
    policy = RetryPolicy(initial_backoff_ms=100, max_backoff_ms=1000, multiplier=10)
    assert policy.backoff_seconds(10, random.Random(1)) <= 1.0


async def test_outcomes_are_counted_in_metrics() -> None:
    from gateway import metrics

    async def answer(component: str, event: Event) -> Response:
        return Response(status=404)

    before = metrics.render()
    await Dispatcher(answer).dispatch("metered", Event(id="1", source="s", type="t"))
    after = metrics.render()
    line = ('wasmgate_events_total{component="metered",error_kind="",'
            'verdict="dead-letter"} 1')
    assert line not in before and line in after
    assert 'wasmgate_event_duration_seconds_count{component="metered"} 1' in after
    assert 'wasmgate_event_duration_seconds_bucket{component="metered",le="+Inf"} 1' in after
