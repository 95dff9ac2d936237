"""deliver(): the one delivery policy, driven by a scripted run and a recording settle.

The fakes stand in only for logic: what the handler answered (a script of outcomes) and
what the adapter was asked to do (a list of settle calls). Brokers are tested for real in
tests/contract.
"""

from __future__ import annotations

import uuid

import pytest
from structlog.testing import capture_logs

from bindings.types import Event, Response
from gateway import metrics
from gateway.dispatch import Outcome, RetryPolicy, Verdict, attempt_of, with_attempt
from triggers.delivery import (
    DL_ERROR_KIND,
    DL_ID,
    RetryMode,
    Settle,
    dead_letter_headers,
    deliver,
    stable_dead_letter_id,
)


def _event() -> Event:
    return Event(id="e1", source="test", type="t")


def _ok() -> Outcome:
    return Outcome(verdict=Verdict.ACK, response=Response(status=200))


def _failed(kind: str = "trap") -> Outcome:
    return Outcome(verdict=Verdict.RETRY, error="boom", error_kind=kind)


def _status(status: int) -> Outcome:
    return Outcome(verdict=Verdict.DEAD_LETTER, response=Response(status=status))


class Script:
    """A run(): plays back outcomes and records the attempt number each call saw."""

    def __init__(self, *outcomes: Outcome) -> None:
        self.outcomes = list(outcomes)
        self.attempts: list[int] = []

    async def __call__(self, component: str, event: Event) -> Outcome:
        self.attempts.append(attempt_of(event))
        outcome = self.outcomes.pop(0)
        outcome.attempts = attempt_of(event)
        return outcome


class Recorder(Settle):
    """Records every settle call; in-process retries do not sleep."""

    def __init__(self, *, broker_counts: list[int] | None = None,
                 fail_on: str | None = None) -> None:
        self.calls: list[tuple[str, object]] = []
        self._broker_counts = broker_counts
        self._fail_on = fail_on

    def _note(self, name: str, value: object) -> None:
        if name == self._fail_on:
            raise ConnectionError("broker gone")
        self.calls.append((name, value))

    async def ack(self, outcome: Outcome) -> None:
        self._note("ack", outcome.attempts)

    async def retry(self, outcome: Outcome, delay_s: float) -> None:
        self._note("retry", round(delay_s, 3))

    async def dead_letter(self, outcome: Outcome, reason: str) -> None:
        self._note("dead-letter", (outcome.error_kind, outcome.attempts, reason))

    async def reply(self, outcome: Outcome) -> None:
        self._note("reply", outcome.status)

    async def next_attempt(self, event: Event, attempt: int, delay_s: float) -> Event | None:
        self._note("wait", round(delay_s, 3))
        if self._broker_counts is not None:
            # The broker's own count (Redis XCLAIM, Kafka's ledger) may be ahead of ours.
            return with_attempt(event, self._broker_counts.pop(0))
        return with_attempt(event, attempt)


POLICY = RetryPolicy(max_attempts=3, initial_backoff_ms=100, max_backoff_ms=100,
                     multiplier=1.0)


async def _deliver(script: Script, settle: Recorder, *, mode: RetryMode = "in-process",
                   count: int = 1, component: str = "c") -> Outcome:
    return await deliver(_event(), settle, run=script, component=component, policy=POLICY,
                         mode=mode, delivery_count=count)


async def test_success_replies_then_acks() -> None:
    settle = Recorder()
    outcome = await _deliver(Script(_ok()), settle)
    assert outcome.verdict is Verdict.ACK
    assert settle.calls == [("reply", 200), ("ack", 1)]


async def test_in_process_retries_until_success_with_attempt_numbers() -> None:
    script, settle = Script(_failed(), _failed(), _ok()), Recorder()
    outcome = await _deliver(script, settle)
    assert outcome.verdict is Verdict.ACK
    assert script.attempts == [1, 2, 3]
    assert [name for name, _ in settle.calls] == ["wait", "wait", "reply", "ack"]
    assert all(0.05 <= delay <= 0.1 for name, delay in settle.calls if name == "wait")


async def test_the_last_attempt_dead_letters_with_the_reason() -> None:
    script, settle = Script(_failed("timeout"), _failed("timeout"), _failed("timeout")), \
        Recorder()
    outcome = await _deliver(script, settle)
    assert outcome.verdict is Verdict.DEAD_LETTER
    assert settle.calls[-1] == ("dead-letter", ("timeout", 3, "boom"))


async def test_max_attempts_one_dead_letters_at_the_first_failure() -> None:
    # Once patched outside the policy (is_dead_letter); now the same rule as any other.
    settle = Recorder()
    await deliver(_event(), settle, run=Script(_failed()), component="c",
                  policy=RetryPolicy(max_attempts=1), mode="broker")
    assert [name for name, _ in settle.calls] == ["reply", "dead-letter"]


async def test_a_4xx_dead_letters_at_once() -> None:
    script, settle = Script(_status(422)), Recorder()
    await _deliver(script, settle)
    assert script.attempts == [1]
    assert settle.calls == [("reply", 422),
                            ("dead-letter", (None, 1, "handler answered status 422"))]


async def test_a_4xx_dead_letter_says_status_in_its_log_line_as_in_header_and_metric() -> None:
    # The log line said error_kind None while the dead-letter header and the metric said
    # "status": one reason, worded the same in all three places.
    with capture_logs() as logs:
        await _deliver(Script(_status(400)), Recorder())
    [line] = [entry for entry in logs if entry["event"] == "event dead-lettered"]
    assert line["error_kind"] == "status"
    assert dict(dead_letter_headers(_event(), _status(400), "c"))[DL_ERROR_KIND] == "status"


async def test_broker_mode_hands_a_failure_back_with_the_backoff() -> None:
    script, settle = Script(_failed()), Recorder()
    outcome = await _deliver(script, settle, mode="broker", count=2)
    assert outcome.verdict is Verdict.RETRY
    assert script.attempts == [2]  # the broker's delivery count is the attempt number
    [(name, delay)] = settle.calls
    assert name == "retry" and 0.05 <= delay <= 0.1  # type: ignore[operator]


async def test_broker_mode_dead_letters_on_the_last_delivery() -> None:
    settle = Recorder()
    await _deliver(Script(_failed()), settle, mode="broker", count=3)
    assert [name for name, _ in settle.calls] == ["reply", "dead-letter"]


@pytest.mark.parametrize("mode", ["in-process", "broker"])
async def test_crash_loop_guard_dead_letters_without_running(mode: RetryMode) -> None:
    script, settle = Script(), Recorder()
    outcome = await _deliver(script, settle, mode=mode, count=4)
    assert script.attempts == []
    assert outcome.verdict is Verdict.DEAD_LETTER
    assert outcome.error_kind == "redelivery"
    [reply, (name, (kind, attempts, reason))] = settle.calls  # type: ignore[misc]
    assert reply == ("reply", 500)
    assert (name, kind, attempts) == ("dead-letter", "redelivery", 3)
    assert "delivered 4 times" in reason


async def test_a_broker_count_ahead_of_ours_is_the_next_attempt_number() -> None:
    # Redis re-claimed it and counts 3: that is the last attempt, not the second.
    script, settle = Script(_failed(), _failed()), Recorder(broker_counts=[3])
    outcome = await _deliver(script, settle)
    assert script.attempts == [1, 3]
    assert outcome.verdict is Verdict.DEAD_LETTER


async def test_a_broker_count_past_max_attempts_is_the_crash_loop_guard() -> None:
    script, settle = Script(_failed()), Recorder(broker_counts=[5])
    outcome = await _deliver(script, settle)
    assert script.attempts == [1]
    assert outcome.error_kind == "redelivery"


async def test_next_attempt_none_leaves_the_message_to_the_broker() -> None:
    class Stopping(Recorder):
        async def next_attempt(self, event: Event, attempt: int, delay_s: float) -> None:
            self._note("wait", attempt)

    script, settle = Script(_failed()), Stopping()
    outcome = await _deliver(script, settle)
    assert outcome.verdict is Verdict.RETRY
    assert settle.calls == [("wait", 2)]


async def test_a_failing_settle_is_logged_not_raised() -> None:
    settle = Recorder(fail_on="ack")
    outcome = await _deliver(Script(_ok()), settle)
    assert outcome.verdict is Verdict.ACK
    assert settle.calls == [("reply", 200)]


def _counter(name: str, component: str, **labels: str) -> float:
    wanted = {"component": component, **labels}
    prefix = name + "{"
    for line in metrics.render().splitlines():
        if line.startswith(prefix):
            body, _, value = line[len(prefix):].rpartition("} ")
            pairs = dict(p.split("=", 1) for p in body.split(","))
            if {k: v.strip('"') for k, v in pairs.items()} == wanted:
                return float(value)
    return 0.0


async def test_retries_metric_counts_each_retry_once_in_both_modes() -> None:
    # Before: a JetStream message delivered 4 times counted 1+2+3 = 6 "retries".
    broker = f"c-{uuid.uuid4().hex[:8]}"
    for count in (1, 2, 3):
        await _deliver(Script(_failed()), Recorder(), mode="broker", count=count,
                       component=broker)
    assert _counter("wasmgate_retries_total", broker) == 2
    assert _counter("wasmgate_dead_letters_total", broker, source="test", error_kind="trap") == 1

    local = f"c-{uuid.uuid4().hex[:8]}"
    await _deliver(Script(_failed(), _failed(), _ok()), Recorder(), component=local)
    assert _counter("wasmgate_retries_total", local) == 2
    assert _counter("wasmgate_dead_letters_total", local, source="test", error_kind="trap") == 0


async def test_the_crash_loop_guard_is_counted_as_a_redelivery_dead_letter() -> None:
    name = f"c-{uuid.uuid4().hex[:8]}"
    await _deliver(Script(), Recorder(), count=9, component=name)
    assert _counter("wasmgate_dead_letters_total", name, source="test",
                    error_kind="redelivery") == 1
    assert _counter("wasmgate_retries_total", name) == 0


def test_a_dead_letter_id_is_the_same_for_every_copy_of_one_message() -> None:
    # A kill between writing a dead letter and settling its message writes it again on
    # redelivery: the copies share the id, so `wasmgate dead-letters` shows them as one.
    event = Event(id="orders-0-42", source="wasmgate/kafka/b", type="t", data=b"{}")
    first = dict(dead_letter_headers(event, _status(422), "c"))[DL_ID]
    assert dict(dead_letter_headers(event, _failed(), "c"))[DL_ID] == first
    assert first != stable_dead_letter_id("c", Event(id="orders-0-43", source=event.source,
                                                      type="t", data=b"{}"))
    # An AMQP message id is the producer's and may repeat: the payload tells them apart.
    assert first != stable_dead_letter_id("c", Event(id=event.id, source=event.source,
                                                      type="t", data=b"[]"))
