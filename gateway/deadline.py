"""The event's deadline, visible to every host call the event makes.

The executor sets it when a call starts (``timeout-ms`` from then); host implementations
in ``bindings/host/`` read what is left with :func:`remaining` and bound their own waits by
it (SQLite interrupted, an outbound request bounded in total time, a publish confirmation,
a PostgreSQL statement), so a slow host call never holds an instance slot past the event's
deadline. It lives in a context variable because host calls run on the executor's worker
threads with the caller's context copied in.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from contextvars import ContextVar, Token

from gateway.errors import DeadlineExceeded

# time.monotonic() at which the current event's call must have finished; None outside a call.
_DEADLINE: ContextVar[float | None] = ContextVar("wasmgate_deadline", default=None)


@contextlib.contextmanager
def deadline_after(seconds: float) -> Iterator[float]:
    """Set the current event's deadline ``seconds`` from now for the ``with`` block."""
    at = time.monotonic() + seconds
    token = _DEADLINE.set(at)
    try:
        yield at
    finally:
        _DEADLINE.reset(token)


def set_deadline(at: float | None) -> Token[float | None]:
    """Set the deadline (a ``time.monotonic()`` value) in the current context; the token
    undoes it (:func:`reset_deadline`). The executor's hot path uses this pair rather than
    :func:`deadline_after`, which costs a generator per call."""
    return _DEADLINE.set(at)


def reset_deadline(token: Token[float | None]) -> None:
    """Undo the :func:`set_deadline` that returned ``token``."""
    _DEADLINE.reset(token)


def remaining(cap: float | None = None) -> float | None:
    """Seconds left before the event's deadline, at most ``cap``; None when no deadline is
    set and no cap given. Never negative: 0.0 means the deadline has passed."""
    at = _DEADLINE.get()
    left = None if at is None else max(0.0, at - time.monotonic())
    if cap is not None:
        left = cap if left is None else min(left, cap)
    return left


def check(what: str) -> float | None:
    """Return :func:`remaining`, raising :class:`DeadlineExceeded` naming ``what`` when
    the deadline has already passed."""
    left = remaining()
    if left is not None and left <= 0.0:
        raise DeadlineExceeded(f"{what}: the event's deadline (`timeout-ms`) has passed")
    return left


__all__ = ["check", "deadline_after", "remaining", "reset_deadline", "set_deadline"]
