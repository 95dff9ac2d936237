"""One call's budget for what its guest makes the gateway log (``log-emit-max-bytes``).

A module of its own so that every host module can reach it without importing the others:
:func:`log_budget_allows` before any log line whose text or number a guest decides. The
executor (gateway/executor.py) puts a fresh :class:`LogBudget` into each call's context and
logs once, when the call ends, what was dropped.
"""

from __future__ import annotations

import dataclasses
import json
from contextvars import ContextVar

# What one record costs a call's log budget beyond its text: the JSON around it (time,
# level, event, component, event id) is 180-200 bytes, so that a flood of empty messages or
# of short refusals is bounded like one of long ones.
LOG_RECORD_BYTES = 256
# The JSON log's own encoding of a text (structlog's JSONRenderer: json.dumps' defaults).
_JSON_TEXT = json.JSONEncoder()


@dataclasses.dataclass
class LogBudget:
    """What one call may still make the gateway log (``log-emit-max-bytes`` of the
    component), and what it had dropped, by kind. The executor puts a fresh one into each
    call's context (:data:`LOG_BUDGET`) and logs the drops once when the call ends.

    Every record whose text or number the guest decides counts: ``log.emit`` messages,
    refused or failed host calls (a guest calling ``log.emit`` in a loop wrote 160 MB to the
    log in one second; one refusing a 1 MB store name in a loop, 15 MB in two) and the
    lines of its stderr. Each record costs its text's size as the JSON log writes it
    (escapes included: a control character takes 6 bytes there) plus LOG_RECORD_BYTES."""

    left: int
    dropped_records: int = 0
    dropped_bytes: int = 0
    dropped_by_kind: dict[str, int] = dataclasses.field(default_factory=dict)

    def take(self, text: str, kind: str) -> bool:
        """Whether a record of ``text`` fits (it is then taken); else it is counted as
        dropped (its UTF-8 bytes) under ``kind``."""
        if self.left > 0:  # once spent, nothing is measured against it
            size = len(_JSON_TEXT.encode(text)) - 2  # the quotes are in LOG_RECORD_BYTES
            if size + LOG_RECORD_BYTES <= self.left:
                self.left -= size + LOG_RECORD_BYTES
                return True
            self.left = 0  # later, smaller records are dropped too: the log stays in order
        self.dropped_records += 1
        self.dropped_bytes += len(text.encode("utf-8", "replace"))
        self.dropped_by_kind[kind] = self.dropped_by_kind.get(kind, 0) + 1
        return False


LOG_BUDGET: ContextVar[LogBudget | None] = ContextVar("wasmgate_log_budget", default=None)


def log_budget_allows(text: str, kind: str) -> bool:
    """Whether the call in progress may log a record of ``text`` (a record of guest-chosen
    text, of kind ``kind``); True outside a call. For every log line a guest can cause,
    whatever module writes it."""
    budget = LOG_BUDGET.get()
    return budget is None or budget.take(text, kind)


__all__ = ["LOG_BUDGET", "LOG_RECORD_BYTES", "LogBudget", "log_budget_allows"]
