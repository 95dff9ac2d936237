"""The key-value host import's backend: one SQLite file per store.

Calls arrive on executor worker threads, so one connection is shared behind a lock
(``check_same_thread=False``). The file is in WAL mode and holds::

    kv(key TEXT PRIMARY KEY, value BLOB NOT NULL, expires_at INTEGER NULL)
    kv_usage(id INTEGER PRIMARY KEY CHECK (id = 0), bytes INTEGER NOT NULL)

``expires_at`` is wall-clock milliseconds since the Unix epoch (it must survive restarts);
an expired key reads as missing everywhere and is physically removed lazily.

``kv_usage`` holds the store's size (UTF-8 bytes of every key plus its value), kept by
triggers in the same transaction as each write, so every process sharing the file sees
the same figure. A write that would take it past ``max-total-bytes`` first purges expired
keys, then is refused.
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Protocol

from gateway import deadline
from gateway.errors import DeadlineExceeded, WasmgateError
from gateway.redaction import cut_masked

MAX_KEY_BYTES = 1024
# The longest TTL a set takes: 100 years, well inside a 64-bit expiry and a Lua double.
MAX_TTL_MS = 100 * 365 * 24 * 3600 * 1000
DEFAULT_MAX_VALUE_BYTES = 1 << 20
DEFAULT_MAX_TOTAL_BYTES = 64 << 20
_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1
_DECIMAL = re.compile(rb"^-?[0-9]+$")

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS kv (
        key TEXT PRIMARY KEY,
        value BLOB NOT NULL,
        expires_at INTEGER NULL
    )""",
    """CREATE TABLE IF NOT EXISTS kv_usage (
        id INTEGER PRIMARY KEY CHECK (id = 0),
        bytes INTEGER NOT NULL
    )""",
    # A file from before kv_usage existed: count what it already holds.
    """INSERT OR IGNORE INTO kv_usage (id, bytes)
        SELECT 0, coalesce(sum(length(CAST(key AS BLOB)) + length(value)), 0) FROM kv""",
    """CREATE TRIGGER IF NOT EXISTS kv_usage_insert AFTER INSERT ON kv BEGIN
        UPDATE kv_usage SET bytes = bytes + length(CAST(new.key AS BLOB))
                                          + length(new.value);
    END""",
    """CREATE TRIGGER IF NOT EXISTS kv_usage_delete AFTER DELETE ON kv BEGIN
        UPDATE kv_usage SET bytes = bytes - length(CAST(old.key AS BLOB))
                                          - length(old.value);
    END""",
    """CREATE TRIGGER IF NOT EXISTS kv_usage_update AFTER UPDATE ON kv BEGIN
        UPDATE kv_usage SET bytes = bytes - length(CAST(old.key AS BLOB)) - length(old.value)
                                          + length(CAST(new.key AS BLOB)) + length(new.value);
    END""",
)
_UPSERT = ("INSERT INTO kv (key, value, expires_at) VALUES (?, ?, ?) "
           "ON CONFLICT(key) DO UPDATE SET value = excluded.value, "
           "expires_at = excluded.expires_at")
_LIVE = "(expires_at IS NULL OR expires_at > ?)"


# How long SQLite waits for another process's lock on the file, outside any event's deadline.
_BUSY_TIMEOUT_MS = 10_000


class KeyValueError(WasmgateError):
    """A key-value call was refused: key or value too large, not an integer, store closed."""


def _wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class SqliteKeyValue:
    """A thread-safe key-value store over one SQLite file."""

    def __init__(
        self,
        path: Path,
        *,
        name: str = "default",
        max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
        max_total_bytes: int = DEFAULT_MAX_TOTAL_BYTES,
        now_ms: Callable[[], int] | None = None,
    ) -> None:
        self.path = Path(path)
        self.name = name
        self.max_value_bytes = max_value_bytes
        self.max_total_bytes = max_total_bytes
        self._now_ms = now_ms or _wall_clock_ms
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                self.path, check_same_thread=False, isolation_level=None,
                timeout=_BUSY_TIMEOUT_MS / 1000
            )
        except (OSError, sqlite3.Error) as exc:
            raise KeyValueError(
                f"key-value store {name!r}: cannot open {self.path}: {exc}"
            ) from exc
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            # One transaction, so two processes opening an older file at once count its
            # existing keys into kv_usage exactly once.
            conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in _SCHEMA:
                    conn.execute(statement)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            conn.close()
            raise KeyValueError(
                f"key-value store {name!r}: {self.path} is not a usable SQLite file: {exc}"
            ) from exc
        self._conn: sqlite3.Connection | None = conn

    # -- public API -------------------------------------------------------------------------

    def get(self, key: str) -> bytes | None:
        """The value of ``key``, or None if it is missing or expired."""
        self._check_key(key)
        with self._locked() as db:
            row = db.execute(
                f"SELECT value FROM kv WHERE key = ? AND {_LIVE}", (key, self._now_ms())
            ).fetchone()
        return None if row is None else bytes(row[0])

    def set(self, key: str, value: bytes, ttl_ms: int | None = None) -> None:
        """Store ``value`` under ``key``; with ``ttl_ms`` it expires that many ms from now."""
        data = check_write(self.name, key, value, ttl_ms, self.max_value_bytes)
        with self._locked() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                now = self._now_ms()
                self._make_room(db, key, data, now)
                expires_at = None if ttl_ms is None else now + ttl_ms
                db.execute(_UPSERT, (key, data, expires_at))
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def delete(self, key: str) -> None:
        """Remove ``key``; deleting a missing key is not an error."""
        self._check_key(key)
        with self._locked() as db:
            db.execute("DELETE FROM kv WHERE key = ?", (key,))

    def exists(self, key: str) -> bool:
        """Whether ``key`` holds a live (unexpired) value."""
        self._check_key(key)
        with self._locked() as db:
            row = db.execute(
                f"SELECT 1 FROM kv WHERE key = ? AND {_LIVE}", (key, self._now_ms())
            ).fetchone()
        return row is not None

    def list_keys(self, prefix: str = "") -> list[str]:
        """Live keys starting with ``prefix`` (taken literally: no wildcards), sorted."""
        with self._locked() as db:
            rows = db.execute(
                f"SELECT key FROM kv WHERE key >= ? AND substr(key, 1, ?) = ? AND {_LIVE} "
                "ORDER BY key",
                (prefix, len(prefix), prefix, self._now_ms()),
            ).fetchall()
        return [str(r[0]) for r in rows]

    def increment(self, key: str, delta: int = 1) -> int:
        """Atomically add ``delta`` to the integer at ``key`` (missing counts as 0).

        The value is stored as ASCII decimal bytes; an existing TTL is kept.
        """
        self._check_key(key)
        with self._locked() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                now = self._now_ms()
                row = db.execute(
                    f"SELECT value, expires_at FROM kv WHERE key = ? AND {_LIVE}", (key, now)
                ).fetchone()
                current, expires_at = (0, None) if row is None else (
                    self._parse_int(key, bytes(row[0])), row[1]
                )
                new = current + delta
                if not _INT64_MIN <= new <= _INT64_MAX:
                    raise KeyValueError(
                        f"key-value store {self.name!r}: incrementing key {key!r} by {delta} "
                        "overflows a signed 64-bit integer"
                    )
                data = str(new).encode("ascii")
                self._make_room(db, key, data, now)
                db.execute(_UPSERT, (key, data, expires_at))
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        return new

    def claim(self, key: str, value: bytes, ttl_ms: int) -> bool:
        """Set ``key`` only if it holds no live value; True if this call set it.

        The building block of a lease: of several processes claiming the same key, exactly
        one wins until the TTL expires.
        """
        data = check_write(self.name, key, value, ttl_ms, self.max_value_bytes)
        with self._locked() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                now = self._now_ms()
                taken = db.execute(f"SELECT 1 FROM kv WHERE key = ? AND {_LIVE}",
                                   (key, now)).fetchone()
                if taken is None:
                    self._make_room(db, key, data, now)
                    db.execute(_UPSERT, (key, data, now + ttl_ms))
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        return taken is None

    def purge_expired(self) -> int:
        """Physically delete expired rows; returns how many were removed."""
        with self._locked() as db:
            cur = db.execute(
                "DELETE FROM kv WHERE expires_at IS NOT NULL AND expires_at <= ?",
                (self._now_ms(),),
            )
        return cur.rowcount

    def close(self) -> None:
        """Close the connection. Idempotent; later calls raise KeyValueError."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> SqliteKeyValue:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SqliteKeyValue(name={self.name!r}, path={str(self.path)!r})"

    # -- helpers ----------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[sqlite3.Connection]:
        """The connection, held for one operation. Waiting for it (this process's lock, or
        another process's write lock on the file) lasts at most what is left of the
        event's deadline; past it the call fails with DeadlineExceeded."""
        left = deadline.remaining()
        if not self._lock.acquire(timeout=-1 if left is None else left):
            raise self._late()
        try:
            db = self._db()
            # SQLite's own wait for another process's lock, bounded the same way.
            busy_ms = _BUSY_TIMEOUT_MS if left is None else min(
                _BUSY_TIMEOUT_MS, int(max(deadline.remaining() or 0.0, 0.0) * 1000))
            db.execute(f"PRAGMA busy_timeout = {busy_ms}")
            try:
                yield db
            except sqlite3.OperationalError as exc:
                if left is not None and "locked" in str(exc):
                    raise self._late() from None
                raise
        finally:
            self._lock.release()

    def _late(self) -> DeadlineExceeded:
        return DeadlineExceeded(
            f"key-value store {self.name!r}: the event's deadline (`timeout-ms`) passed "
            "while waiting for the store (another call or process holds it)")

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise KeyValueError(f"key-value store {self.name!r} is closed")
        return self._conn

    def _check_key(self, key: str) -> None:
        check_key(self.name, key)

    def _make_room(self, db: sqlite3.Connection, key: str, data: bytes, now: int) -> None:
        """Refuse writing ``data`` under ``key`` when the store would pass
        ``max_total_bytes``; expired keys are purged first. Runs inside the write's
        transaction."""
        added = entry_size(key, data)
        (used,) = db.execute("SELECT bytes FROM kv_usage WHERE id = 0").fetchone()
        if int(used) + added <= self.max_total_bytes:
            return  # fits even without counting the value it replaces: the common case
        if self._grown_size(db, key, added) <= self.max_total_bytes:
            return
        db.execute("DELETE FROM kv WHERE expires_at IS NOT NULL AND expires_at <= ?", (now,))
        total = self._grown_size(db, key, added)
        if total > self.max_total_bytes:
            raise over_quota(self.name, key, total, self.max_total_bytes)

    def _grown_size(self, db: sqlite3.Connection, key: str, added: int) -> int:
        """The store's size once ``key`` holds an entry of ``added`` bytes."""
        (used,) = db.execute("SELECT bytes FROM kv_usage WHERE id = 0").fetchone()
        row = db.execute("SELECT length(CAST(key AS BLOB)) + length(value) FROM kv "
                         "WHERE key = ?", (key,)).fetchone()
        return int(used) - (0 if row is None else int(row[0])) + added

    def usage_bytes(self) -> int:
        """The store's size: UTF-8 bytes of every key plus its value (expired included
        until purged)."""
        with self._lock:
            (used,) = self._db().execute("SELECT bytes FROM kv_usage WHERE id = 0").fetchone()
        return int(used)

    def _parse_int(self, key: str, value: bytes) -> int:
        if not _DECIMAL.match(value):
            raise not_an_integer(self.name, key, value)
        return int(value)


# -- checks shared by every backend ----------------------------------------------------------


def check_key(store: str, key: str) -> None:
    """Keys are strings of at most MAX_KEY_BYTES of UTF-8."""
    if not isinstance(key, str):
        raise KeyValueError(
            f"key-value store {store!r}: keys are strings, got {type(key).__name__}"
        )
    size = len(key.encode("utf-8", errors="surrogatepass"))
    if size > MAX_KEY_BYTES:
        raise KeyValueError(
            f"key-value store {store!r}: key {cut_masked(key, 64)!r}... is {size} bytes of "
            f"UTF-8, over the limit of {MAX_KEY_BYTES} bytes"
        )


def check_write(store: str, key: str, value: bytes, ttl_ms: int | None,
                max_value_bytes: int) -> bytes:
    """Validate a set: key, value size and TTL. Returns the value as bytes."""
    check_key(store, key)
    data = bytes(value)
    if len(data) > max_value_bytes:
        raise KeyValueError(
            f"key-value store {store!r}: value for key {key!r} is {len(data)} bytes, "
            f"over the limit of {max_value_bytes} bytes set by `max-value-bytes` of "
            f"[key-value.{store}]"
        )
    if ttl_ms is not None and ttl_ms <= 0:
        raise KeyValueError(
            f"key-value store {store!r}: ttl for key {key!r} must be a positive number "
            f"of milliseconds, got {ttl_ms}"
        )
    if ttl_ms is not None and ttl_ms > MAX_TTL_MS:
        # Past this, SQLite's expiry overflowed a 64-bit integer (a raw OverflowError) and
        # Redis's script answered "value is not an integer or out of range".
        raise KeyValueError(
            f"key-value store {store!r}: ttl for key {key!r} is {ttl_ms} ms, over the "
            f"longest supported, {MAX_TTL_MS} ms (100 years); pass none to keep the key")
    return data


def entry_size(key: str, value: bytes) -> int:
    """What one entry counts against ``max-total-bytes``: its key's UTF-8 plus its value."""
    return len(key.encode("utf-8", errors="surrogatepass")) + len(value)


def over_quota(store: str, key: str, total: int, max_total_bytes: int) -> KeyValueError:
    return KeyValueError(
        f"key-value store {store!r}: writing key {key!r} would make the store {total} bytes "
        f"(keys plus values), over the limit of {max_total_bytes} bytes set by "
        f"`max-total-bytes` of [key-value.{store}]; delete keys, give them a TTL, or raise "
        "`max-total-bytes`")


def not_an_integer(store: str, key: str, value: bytes) -> KeyValueError:
    # Masked before it is cut (a cut secret's head would stay unmasked); bytes that are
    # not UTF-8 show as \xNN escapes.
    text = value.decode("utf-8", "backslashreplace")
    shown = cut_masked(text, 32) + ("..." if len(text) > 32 else "")
    return KeyValueError(
        f"key-value store {store!r}: cannot increment key {key!r}: its value "
        f"{shown!r} is not an ASCII decimal integer"
    )


class KeyValueStore(Protocol):
    """What the kv import needs from a backend (SQLite here, Redis in kv_redis)."""

    name: str

    def get(self, key: str) -> bytes | None: ...
    def set(self, key: str, value: bytes, ttl_ms: int | None = None) -> None: ...
    def delete(self, key: str) -> None: ...
    def exists(self, key: str) -> bool: ...
    def list_keys(self, prefix: str = "") -> list[str]: ...
    def increment(self, key: str, delta: int = 1) -> int: ...
    def claim(self, key: str, value: bytes, ttl_ms: int) -> bool: ...
    def close(self) -> None: ...


__all__ = [
    "DEFAULT_MAX_TOTAL_BYTES",
    "DEFAULT_MAX_VALUE_BYTES",
    "MAX_KEY_BYTES",
    "MAX_TTL_MS",
    "KeyValueError",
    "KeyValueStore",
    "SqliteKeyValue",
    "check_key",
    "check_write",
    "entry_size",
    "not_an_integer",
    "over_quota",
]
