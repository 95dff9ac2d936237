"""The dispatcher: one call of a component, classified with one status vocabulary (HTTP's).

It routes an event to a component's executor and turns what came back into an
:class:`Outcome`. What happens to the source message next (a retry here or by the broker,
the crash-loop guard, the dead letter) is decided in one place for every broker,
:func:`triggers.delivery.deliver`; HTTP answers its caller with the status.

=====================  =============================================
result                 verdict
=====================  =============================================
2xx (and 1xx/3xx)      ACK
429, 5xx, err, trap,   RETRY (deliver: until max-attempts, then
timeout                DEAD_LETTER)
other 4xx              DEAD_LETTER at once: a poison message is never
                       retried forever
=====================  =============================================

An event that ends without a response gets a status from its error: 504 a timeout, 503 no
free instance (admission), 502 a response that cannot be sent on, 500 anything else.
"""

from __future__ import annotations

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


class Dispatcher:
    """Runs one attempt of an event through its component and classifies the result."""

    def __init__(self, invoke: Invoke) -> None:
        self._invoke = invoke

    async def dispatch(self, component: str, event: Event) -> Outcome:
        """Run ``event`` through ``component`` once; never raise for handler failures (they
        come back as an Outcome: RETRY or DEAD_LETTER by the status vocabulary).

        What a RETRY means for the source message (run again here, hand it back to the
        broker, or dead-letter it after the last attempt) is :func:`triggers.delivery.deliver`'s
        business; HTTP answers the caller with the status.
        """
        started = time.perf_counter()
        outcome = await self._run_once(component, event)
        _record(component, outcome, time.perf_counter() - started)
        return outcome

    async def _run_once(self, component: str, event: Event) -> Outcome:
        attempt = attempt_of(event)
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
    # One count per handler call. Retries and dead letters are counted where they are
    # decided, in triggers.delivery.deliver.
    metrics.counter("wasmgate_events_total", "Handler calls, by the verdict of the call.",
                    component=component, verdict=outcome.verdict.value,
                    error_kind=outcome.error_kind or "")
    metrics.observe("wasmgate_event_duration_seconds", "Time of one handler call.", seconds,
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


# Past this many digits an attempt count is not one (and int() refuses 4300 digits).
_ATTEMPT_MAX_DIGITS = 18


def attempt_of(event: Event) -> int:
    """The event's ``attempt`` metadata (1 when missing or not a count)."""
    value = event.meta("attempt")
    # ASCII digits only: str.isdigit() takes "²", which int() refuses. The metadata comes
    # from outside (a CloudEvent given to `wasmgate invoke`, a message's headers).
    if value and len(value) <= _ATTEMPT_MAX_DIGITS and value.isascii() and value.isdigit():
        return int(value)
    return 1


def with_attempt(event: Event, attempt: int) -> Event:
    """``event`` with its ``attempt`` metadata set to ``attempt``."""
    metadata = [(k, v) for k, v in event.metadata if k != "attempt"]
    metadata.append(("attempt", str(attempt)))
    return msgspec.structs.replace(event, metadata=metadata)


__all__ = ["NO_RETRY", "Dispatcher", "Invoke", "Outcome", "RetryPolicy", "Verdict", "attempt_of",
           "verdict_for_status", "with_attempt"]
