"""The dispatcher: policy that is the same for every source.

It routes an event to a component's executor, classifies the result with one status
vocabulary (HTTP's), and retries with exponential backoff and jitter up to the trigger's
``max-attempts``. Adapters only translate the :class:`Outcome` into their own settle call
(reply, ack, nak, commit, dead-letter).

=====================  =============================================
result                 verdict
=====================  =============================================
2xx (and 1xx/3xx)      ACK
429, 5xx, err, trap,   RETRY (until max-attempts, then DEAD_LETTER)
timeout
other 4xx              DEAD_LETTER at once: a poison message is never
                       retried forever
=====================  =============================================

An event that ends without a response gets a status from its error: 504 a timeout, 503 no
free instance (admission), 502 a response that cannot be sent on, 500 anything else.
"""

from __future__ import annotations

import asyncio
import enum
import random
import time
from collections.abc import Awaitable, Callable, Mapping

import msgspec
import structlog

from bindings.types import Event, Response
from gateway import metrics
from gateway.errors import (
    AdmissionTimeout,
    HandlerError,
    HandlerReturnedError,
    HandlerTimeout,
    HandlerTrap,
    InvalidResponse,
    WasmgateError,
)
from gateway.redaction import redact_secrets

log = structlog.get_logger("wasmgate.dispatch")


class Verdict(enum.Enum):
    ACK = "ack"
    RETRY = "retry"
    DEAD_LETTER = "dead-letter"


class Outcome(msgspec.Struct, kw_only=True):
    """How one event ended: what the adapter should do with the source message."""

    verdict: Verdict
    response: Response | None = None
    error: str | None = None
    error_kind: str | None = None  # "trap", "timeout", "admission", "invalid-response", ...
    attempts: int = 1
    # Set on RETRY when the broker does the redelivery (``in_process=False``): how long the
    # adapter should ask the broker to wait (JetStream nak(delay), a delayed requeue).
    retry_delay_s: float | None = None

    @property
    def status(self) -> int:
        """The HTTP-style status: the response's, or one derived from the error."""
        if self.response is not None:
            return self.response.status
        return _ERROR_STATUSES.get(self.error_kind or "", 500)


class RetryPolicy(msgspec.Struct, kw_only=True, frozen=True, rename="kebab",
                  forbid_unknown_fields=True):
    """How often and how patiently one trigger retries a failed event in-process."""

    max_attempts: int = 1
    initial_backoff_ms: int = 100
    max_backoff_ms: int = 10_000
    multiplier: float = 2.0

    def backoff_seconds(self, attempt: int, rng: random.Random | None = None) -> float:
        """Delay before attempt ``attempt + 1``: exponential with full jitter."""
        growth = self.multiplier ** (attempt - 1)
        ceiling = min(self.max_backoff_ms, self.initial_backoff_ms * growth)
        return (rng or random).uniform(0.5, 1.0) * ceiling / 1000.0


NO_RETRY = RetryPolicy()


def verdict_for_status(status: int) -> Verdict:
    """Classify an HTTP-style status into ack / retry / dead-letter."""
    if status < 400:
        return Verdict.ACK
    if status == 429 or status >= 500:
        return Verdict.RETRY
    return Verdict.DEAD_LETTER


# call(component_id, event) -> Response; raises HandlerError for trap/timeout/err.
Invoke = Callable[[str, Event], Awaitable[Response]]
Sleep = Callable[[float], Awaitable[None]]


class Dispatcher:
    """Routes events to components and applies the shared delivery policy."""

    def __init__(self, invoke: Invoke, *, sleep: Sleep = asyncio.sleep) -> None:
        self._invoke = invoke
        self._sleep = sleep

    async def dispatch(self, component: str, event: Event,
                       policy: RetryPolicy = NO_RETRY, *, in_process: bool = True) -> Outcome:
        """Run ``event`` through ``component``; retry per ``policy``; never raise for handler
        failures (they come back as an Outcome).

        The attempt number starts from the event's ``attempt`` metadata (an adapter sets it
        from the broker's delivery count on a redelivery). With ``in_process`` the retries
        happen here, holding the message. Without it (the broker redelivers: JetStream
        nak(delay)) one attempt runs and a RETRY comes back with ``retry_delay_s`` set.
        Either way the last allowed attempt turns RETRY into DEAD_LETTER.
        """
        started = time.perf_counter()
        outcome = await self._dispatch(component, event, policy, in_process)
        _record(component, outcome, time.perf_counter() - started)
        return outcome

    async def _dispatch(self, component: str, event: Event, policy: RetryPolicy,
                        in_process: bool) -> Outcome:
        attempt = _attempt_of(event)
        while True:
            outcome = await self._run_once(component, event, attempt)
            if outcome.verdict is not Verdict.RETRY:
                return outcome
            if attempt >= policy.max_attempts:
                if policy.max_attempts > 1:
                    outcome.verdict = Verdict.DEAD_LETTER
                return outcome
            if not in_process:
                outcome.retry_delay_s = policy.backoff_seconds(attempt)
                return outcome
            delay = policy.backoff_seconds(attempt)
            log.info("retrying event", component=component, event_id=event.id, attempt=attempt,
                     status=outcome.status, error=outcome.error, delay_s=round(delay, 3))
            await self._sleep(delay)
            attempt += 1
            event = _with_attempt(event, attempt)

    async def _run_once(self, component: str, event: Event, attempt: int) -> Outcome:
        try:
            response = await self._invoke(component, event)
        # The error text leaves the process (logs, dead-letter headers, replies, invoke's
        # output), and a handler may have put a secret into it: masked here, once.
        except HandlerError as exc:
            return Outcome(verdict=Verdict.RETRY, error=redact_secrets(str(exc)),
                           error_kind=_kind_of(exc), attempts=attempt)
        except WasmgateError as exc:
            return Outcome(verdict=Verdict.RETRY, error=redact_secrets(str(exc)),
                           error_kind=_gateway_kind(exc), attempts=attempt)
        return Outcome(verdict=verdict_for_status(response.status), response=response,
                       attempts=attempt)


def _record(component: str, outcome: Outcome, seconds: float) -> None:
    metrics.counter("wasmgate_events_total", "Events dispatched, by final verdict.",
                    component=component, verdict=outcome.verdict.value,
                    error_kind=outcome.error_kind or "")
    if outcome.attempts > 1:
        metrics.counter("wasmgate_retries_total", "Extra attempts made in process.",
                        outcome.attempts - 1, component=component)
    metrics.observe("wasmgate_event_duration_seconds",
                    "Time from dispatch to outcome, retries included.", seconds,
                    component=component)


_ERROR_KINDS: Mapping[type[HandlerError], str] = {
    HandlerTrap: "trap", HandlerTimeout: "timeout", HandlerReturnedError: "returned-error",
    InvalidResponse: "invalid-response",
}
_ERROR_STATUSES: Mapping[str, int] = {"timeout": 504, "admission": 503, "invalid-response": 502}


def _kind_of(exc: HandlerError) -> str:
    return _ERROR_KINDS.get(type(exc), "handler")


def _gateway_kind(exc: WasmgateError) -> str:
    # A full pool is the gateway's state, not the handler's fault: a trigger answers it as
    # "busy, come back later" (HTTP 503 + Retry-After), not as a failure.
    return "admission" if isinstance(exc, AdmissionTimeout) else "gateway"


def _attempt_of(event: Event) -> int:
    value = event.meta("attempt")
    return int(value) if value and value.isdigit() else 1


def _with_attempt(event: Event, attempt: int) -> Event:
    metadata = [(k, v) for k, v in event.metadata if k != "attempt"]
    metadata.append(("attempt", str(attempt)))
    return msgspec.structs.replace(event, metadata=metadata)


__all__ = ["NO_RETRY", "Dispatcher", "Outcome", "RetryPolicy", "Verdict", "verdict_for_status"]
