"""Linear-time stand-ins for SQLite's string searches that take quadratic time.

SQLite checks for interrupts between virtual-machine steps, never inside one, and its
``instr``, ``replace`` and two-argument ``trim``/``ltrim``/``rtrim`` compare the needle at
every position of the haystack: ``instr(<16 MB of 'a'>, <40 KB of 'a'> || 'b')`` is one
step of about 12 s here, past any deadline and with the database's lock held. These
replacements, registered on the guest-facing connection, search with Python's
``str.find``/``str.replace`` (linear) and answer the same as SQLite on valid text and
blobs. Arguments of other types (numbers, a blob against text) are turned into text the
way SQLite does it, by asking a private in-memory connection to do it.

LIKE and GLOB are not replaced (their pattern semantics are SQLite's own); their patterns
are bounded instead (``SQLITE_LIMIT_LIKE_PATTERN_LENGTH``, see SqliteDatabase).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable

Arg = None | int | float | str | bytes
# A trim set with more distinct characters than this is scanned in Python, with a
# deadline check every _POLL characters: str.strip would be quadratic on it too.
_STRIP_SET = 64
_POLL = 1 << 16


class SqliteFunctions:
    """The replacements for one connection; ``stop_at`` (``time.monotonic()``) bounds
    the one slow loop (a trim set of many distinct characters)."""

    def __init__(self, max_length: int) -> None:
        self._builtin = sqlite3.connect(":memory:", check_same_thread=False)
        self._builtin.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, max_length)
        self._lock = threading.Lock()
        self._max_length = max_length
        self.stop_at: float | None = None
        # Why a replacement failed the statement, for its error message (reset per statement).
        self.failure: str | None = None

    def install(self, conn: sqlite3.Connection) -> None:
        conn.create_function("instr", 2, self.instr, deterministic=True)
        conn.create_function("replace", 3, self.replace, deterministic=True)
        for name, side in (("trim", "both"), ("ltrim", "left"), ("rtrim", "right")):
            conn.create_function(name, 2, self._trimmer(side), deterministic=True)

    def close(self) -> None:
        self._builtin.close()

    def _text(self, value: int | float | str | bytes) -> str:
        """``value`` as SQLite renders it as text (``1.0e+20``, a blob's bytes as UTF-8)."""
        if isinstance(value, str):
            return value
        if isinstance(value, int):
            return str(value)
        with self._lock:
            row = self._builtin.execute("SELECT CAST(? AS TEXT)", (value,)).fetchone()
        text: str = row[0]
        return text

    def instr(self, haystack: Arg, needle: Arg) -> int | None:
        if haystack is None or needle is None:
            return None
        if isinstance(haystack, bytes) and isinstance(needle, bytes):
            return haystack.find(needle) + 1  # byte offsets for two blobs
        return self._text(haystack).find(self._text(needle)) + 1

    def replace(self, text: Arg, old: Arg, new: Arg) -> Arg:
        # In SQLite's order: an empty pattern (or one starting with NUL, read as a C
        # string) returns the first argument as it is, even with a NULL replacement.
        if text is None or old is None:
            return None
        old_text = self._text(old)
        if not old_text or old_text[0] == "\x00":
            # ... as it is after SQLite read it as text: a blob comes back as text.
            return self._text(text) if isinstance(text, bytes) else text
        if new is None:
            return None
        source, new_text = self._text(text), self._text(new)
        # Refuse a result over the length limit before building it, as SQLite does.
        grows = len(new_text) - len(old_text)
        if grows > 0 and len(source) + source.count(old_text) * grows > self._max_length:
            # SQLite reports an exception from a function only as "user-defined function
            # raised exception"; the statement's error is taken from here instead.
            self.failure = "string or blob too big"
            raise sqlite3.DataError(self.failure)
        return source.replace(old_text, new_text)

    def _trimmer(self, side: str) -> Callable[[Arg, Arg], Arg]:
        def trim(text: Arg, chars: Arg) -> Arg:
            if text is None or chars is None:
                return None
            # SQLite reads the set as a C string: it ends at the first NUL.
            return self._trim(self._text(text), set(self._text(chars).split("\x00", 1)[0]),
                              side)
        return trim

    def _trim(self, text: str, chars: set[str], side: str) -> str:
        if len(chars) <= _STRIP_SET:
            strip = "".join(chars)
            if side == "left":
                return text.lstrip(strip)
            return text.rstrip(strip) if side == "right" else text.strip(strip)
        start, end = 0, len(text)
        if side in ("left", "both"):
            while start < end and text[start] in chars:
                start += 1
                if start % _POLL == 0:
                    self._check_deadline()
        if side in ("right", "both"):
            while end > start and text[end - 1] in chars:
                end -= 1
                if end % _POLL == 0:
                    self._check_deadline()
        return text[start:end]

    def _check_deadline(self) -> None:
        if self.stop_at is not None and time.monotonic() >= self.stop_at:
            self.failure = "interrupted"
            raise sqlite3.OperationalError(self.failure)


__all__ = ["SqliteFunctions"]
