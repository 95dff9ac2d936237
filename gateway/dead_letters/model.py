"""What every dead-letter store reads and does, whatever the broker.

A :class:`DeadLetter` is one message at a trigger's dead-letter destination, normalised:
its id there, when and why it was dead-lettered, where it came from, its headers and body.
A :class:`DeadLetterStore` lists them without disturbing them, replays one onto its
original source (confirmed by the broker before the dead letter is removed) and purges.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from gateway.errors import WasmgateError
from triggers.delivery import (
    DL_ATTEMPTS,
    DL_COMPONENT,
    DL_ERROR_KIND,
    DL_ORIGIN,
    DL_REASON,
    DL_STATUS,
    DL_SUBJECT,
    DL_TIME,
    REPLAYED_FROM,
)

_DEAD_LETTER_PREFIX = "wasmgate-dead-letter-"


class DeadLetterNotFound(WasmgateError):
    """No dead letter with that id at the trigger's dead-letter destination."""


class NotReplayable(WasmgateError):
    """This dead letter cannot be replayed (it does not say where it came from: something
    other than the gateway put it there). A bulk replay skips it and goes on."""


@dataclass
class DeadLetter:
    """One message at a dead-letter destination."""

    id: str
    headers: list[tuple[str, str]]
    body: bytes
    key: bytes | None = None
    # When the broker stored it, if the dead-letter headers do not say (older gateways).
    stored_at: datetime | None = None
    # Where the message sits in the dead-letter destination (topic/partition/offset ...).
    location: dict[str, str] = field(default_factory=dict)

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k == name), None)

    @property
    def reason(self) -> str:
        return self.header(DL_REASON) or ""

    @property
    def error_kind(self) -> str:
        return self.header(DL_ERROR_KIND) or ""

    @property
    def status(self) -> str:
        return self.header(DL_STATUS) or ""

    @property
    def attempts(self) -> str:
        return self.header(DL_ATTEMPTS) or ""

    @property
    def component(self) -> str:
        return self.header(DL_COMPONENT) or ""

    @property
    def time(self) -> str:
        stamped = self.header(DL_TIME)
        if stamped:
            return stamped
        if self.stored_at is not None:
            return self.stored_at.astimezone(UTC).isoformat(timespec="milliseconds")
        return ""

    @property
    def origin(self) -> dict[str, str]:
        """Where it was consumed from: topic/partition/offset, stream/entry-id, subject,
        queue... (from the ``wasmgate-dead-letter-origin-*`` headers, else the subject)."""
        found = {k.removeprefix(DL_ORIGIN): v for k, v in self.headers
                 if k.startswith(DL_ORIGIN)}
        if not found and (subject := self.header(DL_SUBJECT)):
            found["subject"] = subject
        return found

    def original_headers(self) -> list[tuple[str, str]]:
        """Its headers without the ``wasmgate-dead-letter-*`` ones: what to replay with."""
        return [(k, v) for k, v in self.headers if not k.startswith(_DEAD_LETTER_PREFIX)
                and k != REPLAYED_FROM]

    def summary(self) -> dict[str, object]:
        """The fields `list` shows (and prints as JSON)."""
        return {"id": self.id, "time": self.time, "reason": self.reason,
                "error_kind": self.error_kind, "status": self.status,
                "attempts": self.attempts, "component": self.component,
                "origin": self.origin}


class DeadLetterStore(Protocol):
    """One trigger's dead-letter destination on its broker."""

    # Where it is, for messages: "kafka topic orders-dlq on broker `b`".
    describe: str

    async def open(self) -> None:
        """Connect (one attempt: a command line does not wait for a broker to come back)."""
        ...

    async def letters(self) -> list[DeadLetter]:
        """Every dead letter not yet replayed or purged, oldest first, left in place."""
        ...

    async def replay(self, letter: DeadLetter, *, replayed_from: str) -> str:
        """Publish ``letter`` back onto its original source (original key and headers, a
        fresh attempt count, ``wasmgate-replayed-from``), wait for the broker's confirm,
        then remove it from the dead-letter destination. Returns where it went."""
        ...

    async def purge(self, letters: list[DeadLetter]) -> int:
        """Remove ``letters`` (those listed just before) without replaying them."""
        ...

    async def close(self) -> None:
        ...


__all__ = ["REPLAYED_FROM", "DeadLetter", "DeadLetterNotFound", "DeadLetterStore",
           "NotReplayable"]
