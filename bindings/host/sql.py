"""The ``sql`` import: parameterised statements against SQLite or PostgreSQL.

Values cross the boundary as the WIT variant ``value`` (null / integer / real / text /
blob), which wasmtime-py lowers from and lifts to plain ``None / int / float / str /
bytes``. Types without a variant case are converted on the way out: booleans to integer,
decimals to real, dates, times, UUIDs, JSON and the rest to their text form.

Host calls run on the executor's worker threads, so both backends are blocking clients
guarded for use from many threads: SQLite with one connection behind a lock (SQLite
serialises writers anyway), PostgreSQL with a small pool of psycopg connections.

What a grant reaches, and for how long (docs/security.md):

- A SQLite grant is that one file. An authorizer on the connection refuses ATTACH,
  DETACH, ``VACUUM INTO``, extension loading, file-reaching functions and every PRAGMA
  but a few read-only ones, so a guest cannot open, copy into or read another file (the
  key-value store's included) nor change the journal or safety settings every component
  sharing the connection relies on. Transaction statements and TEMP objects are refused
  too: on a shared connection they would outlive the call and reach other events.
- A PostgreSQL grant is whatever the configured role may do: the gateway warns at the
  first connection when that role is a superuser. Statements reach the server as written
  (``$1``-style parameters, no client-side ``%`` parsing). A connection goes back to the
  pool only after ``ROLLBACK`` (if needed) and ``DISCARD ALL``, so no session state (temp
  tables, settings, role, prepared statements, advisory locks) reaches the next event.
- Every statement ends by the event's deadline (gateway/deadline.py), whatever it does:
  SQLite is interrupted from a timer thread (bindings/host/deadline_timer.py) at its next
  VM step, and the built-in functions whose one step took seconds are replaced or bounded
  (bindings/host/sqlite_functions.py, the LIKE pattern limit); PostgreSQL statements are
  cancelled from this side at the deadline, and their connection closed if that does not
  end them (bindings/host/pg_connection.py), so a guest's ``SET statement_timeout = 0``
  changes nothing. The instance slot and the connection come back on time.
- Results are bounded before they reach the guest: ``max-rows`` and ``max-result-bytes``
  of ``[sql.<name>]``; SQLite also refuses to build any single value larger than
  ``max-result-bytes`` (``SELECT zeroblob(1000000000)`` fails instead of allocating 1 GB),
  and PostgreSQL results are streamed and the statement cancelled past the limits. The
  bytes PostgreSQL sends for one statement (``query`` or ``execute``) are counted on the
  socket and bounded too, so a single huge value is never held whole.
- A connection error never carries the URL's password (masked before anything is cut).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import decimal
import math
import queue
import re
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import structlog

from bindings.host.deadline_timer import TIMER
from bindings.host.sqlite_functions import SqliteFunctions
from gateway import deadline
from gateway.errors import DeadlineExceeded, WasmgateError
from gateway.redaction import MASK, SecretRedactor, redact_url

SqlValue = None | int | float | str | bytes

DEFAULT_MAX_ROWS = 10_000
DEFAULT_MAX_RESULT_BYTES = 16 * 1024 * 1024
# The longest LIKE or GLOB pattern (characters). One LIKE of a pattern this long against a
# value of `max-result-bytes` (16 MiB) is one VM step of about 2.5 s here (1.6 ns per
# character pair), which no interrupt can cut short; SQLite's default is 50000.
_LIKE_PATTERN_CHARS = 100
# SQLite's heap, for the whole process (PRAGMA hard_heap_limit is process-wide): a row holds
# all its values at once, so a row of many large values (k columns of max-result-bytes each)
# would be allocated whole before any per-value or per-result check sees it. At least this
# much, or 4 x the largest max-result-bytes of any [sql.x] plus 64 MiB.
_MIN_SQLITE_HEAP_BYTES = 256 * 1024 * 1024
# Waiting for a connection slot when no event deadline is set (a direct call, a test).
_NO_DEADLINE_WAIT_S = 30.0

log = structlog.get_logger("wasmgate.sql")


class SqlError(WasmgateError):
    """A refused or failed statement (the message goes back to the guest)."""


@dataclasses.dataclass
class RowSet:
    columns: list[str]
    rows: list[list[SqlValue]]


@dataclasses.dataclass(frozen=True)
class ResultLimits:
    """Bounds on what one query may return (``[sql.<name>]`` ``max-rows`` and
    ``max-result-bytes``)."""

    max_rows: int = DEFAULT_MAX_ROWS
    max_bytes: int = DEFAULT_MAX_RESULT_BYTES


class SqlDatabase(Protocol):
    name: str

    def query(self, statement: str, params: list[SqlValue]) -> RowSet: ...

    def execute(self, statement: str, params: list[SqlValue]) -> int: ...

    def close(self) -> None: ...


def _to_value(value: Any) -> SqlValue:
    """A column value as one of the WIT variant's cases."""
    if value is None or isinstance(value, str | bytes | float):
        return value
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, memoryview | bytearray):
        return bytes(value)
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    return str(value)


def _size(value: SqlValue) -> int:
    """Bytes ``value`` takes in the guest: text as UTF-8, blobs as is, 8 for a number."""
    if isinstance(value, str):
        return len(value.encode("utf-8", errors="surrogatepass"))
    if isinstance(value, bytes):
        return len(value)
    return 8 if value is not None else 1


def _bounded_rows(name: str, limits: ResultLimits, rows: Iterable[Sequence[Any]]
                  ) -> list[list[SqlValue]]:
    """Convert ``rows``, refusing as soon as the result passes ``limits`` (before the rest
    is read or anything is copied to the guest)."""
    out: list[list[SqlValue]] = []
    total = 0
    for row in rows:
        if len(out) == limits.max_rows:
            raise SqlError(
                f"database `{name}`: the result has more than {limits.max_rows} rows, the "
                f"limit set by `max-rows` of [sql.{name}]; add a LIMIT to the query or raise "
                "`max-rows`")
        values = [_to_value(v) for v in row]
        total += sum(_size(v) for v in values)
        if total > limits.max_bytes:
            raise SqlError(
                f"database `{name}`: the result is over {limits.max_bytes} bytes, the limit "
                f"set by `max-result-bytes` of [sql.{name}]; select fewer rows or columns or "
                "raise `max-result-bytes`")
        out.append(values)
    return out


def _check_params(name: str, params: list[SqlValue]) -> list[SqlValue]:
    for i, p in enumerate(params):
        if p is not None and not isinstance(p, int | float | str | bytes):
            raise SqlError(f"database `{name}`: parameter {i + 1} has unsupported type "
                           f"{type(p).__name__}")
    return params


# How long SQLite waits for another process's lock on the file, outside any event's deadline.
_BUSY_TIMEOUT_MS = 5_000


def _deadline_passed(name: str) -> DeadlineExceeded:
    return DeadlineExceeded(
        f"database `{name}`: the statement was stopped at the event's deadline "
        "(`timeout-ms` of the component); make the statement cheaper or raise `timeout-ms`")


# -- SQLite ------------------------------------------------------------------------------------

# PRAGMAs a guest may run: ones that take a table or index name and only describe it...
_DESCRIBING_PRAGMAS = frozenset({
    "table_info", "table_xinfo", "table_list", "index_list", "index_info", "index_xinfo",
    "foreign_key_list", "foreign_key_check", "integrity_check", "quick_check",
})
# ...and settings that may be read but not changed (changing any of them would change the
# file or the connection every component sharing this grant relies on).
_READABLE_PRAGMAS = frozenset({
    "user_version", "application_id", "schema_version", "data_version", "page_count",
    "page_size", "freelist_count", "encoding", "foreign_keys", "journal_mode",
    "collation_list", "function_list", "pragma_list", "module_list", "compile_options",
})
# SQL functions that reach files or load code, refused even where this build of SQLite
# would have them (readfile/writefile/edit come with the CLI's fileio extension).
_REFUSED_FUNCTIONS = frozenset({"load_extension", "readfile", "writefile", "edit",
                                "fts3_tokenizer"})
# TEMP objects, refused: see SqliteDatabase._refusal.
_TEMP_CREATES = {
    sqlite3.SQLITE_CREATE_TEMP_TABLE: "CREATE TEMP TABLE",
    sqlite3.SQLITE_CREATE_TEMP_VIEW: "CREATE TEMP VIEW",
    sqlite3.SQLITE_CREATE_TEMP_TRIGGER: "CREATE TEMP TRIGGER",
    sqlite3.SQLITE_CREATE_TEMP_INDEX: "CREATE TEMP INDEX",
}
_CREATES = {
    sqlite3.SQLITE_CREATE_TABLE: "CREATE TABLE",
    sqlite3.SQLITE_CREATE_VIEW: "CREATE VIEW",
    sqlite3.SQLITE_CREATE_TRIGGER: "CREATE TRIGGER",
    sqlite3.SQLITE_CREATE_INDEX: "CREATE INDEX",
    sqlite3.SQLITE_CREATE_VTABLE: "CREATE VIRTUAL TABLE",
}
_TRANSACTION_WHY = (" (each statement is its own transaction: every event shares the "
                    "connection, so a transaction would take in other events' statements)")
_VACUUM = re.compile(r"^\s*vacuum\b", re.IGNORECASE)
# VACUUM of the main database in place: SQLite implements it with an ATTACH of a nameless
# temporary database, which the authorizer lets through for this statement only.
_PLAIN_VACUUM = re.compile(r"^\s*vacuum(\s+main)?\s*;?\s*$", re.IGNORECASE)


class SqliteDatabase:
    """One SQLite file (WAL), shared by every thread behind a lock, confined to that file."""

    def __init__(self, name: str, path: Path, *, limits: ResultLimits | None = None) -> None:
        self.name = name
        self.limits = limits or ResultLimits()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(path, check_same_thread=False,
                                         isolation_level=None,
                                         timeout=_BUSY_TIMEOUT_MS / 1000)
            self._conn.execute("PRAGMA journal_mode=WAL")
        except (OSError, sqlite3.Error) as exc:
            raise SqlError(f"database `{name}`: cannot open {path} as a SQLite file ({exc}); "
                           f"check `path` of [sql.{name}]") from None
        # Python may be built with extension loading; make sure it is off either way.
        if hasattr(self._conn, "enable_load_extension"):
            self._conn.enable_load_extension(False)
        # No string, blob or row may be built larger than what a result may carry:
        # `zeroblob(1000000000)` fails at once instead of allocating 1 GB.
        self._conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, max(1, self.limits.max_bytes))
        # LIKE and GLOB compare the pattern at every position of the text within one VM
        # step, which no interrupt reaches: the pattern's length bounds that step.
        self._conn.setlimit(sqlite3.SQLITE_LIMIT_LIKE_PATTERN_LENGTH, _LIKE_PATTERN_CHARS)
        # instr, replace and trim are quadratic in one VM step; these stand-ins are not.
        self._functions = SqliteFunctions(max(1, self.limits.max_bytes))
        self._functions.install(self._conn)
        self.heap_limit = _raise_heap_limit(self._conn, self.limits.max_bytes)
        self._lock = threading.Lock()
        # Per-statement state for the authorizer and the progress handler; only touched
        # while holding the lock.
        self._refused: str | None = None
        self._vacuum = False
        self._plain_vacuum = False
        self._interrupted = False
        self._own_pragma = False
        self._conn.set_authorizer(self._authorize)

    def query(self, statement: str, params: list[SqlValue]) -> RowSet:
        with self._statement(statement) as cursor:
            try:
                cursor.execute(statement, _check_params(self.name, params))
                columns = [d[0] for d in cursor.description or ()]
                rows = _bounded_rows(self.name, self.limits, cursor)
            except sqlite3.Error as exc:
                raise self._error(exc) from None
            except MemoryError:
                raise self._out_of_heap() from None
        return RowSet(columns=columns, rows=rows)

    def execute(self, statement: str, params: list[SqlValue]) -> int:
        with self._statement(statement) as cursor:
            try:
                cursor.execute(statement, _check_params(self.name, params))
            except sqlite3.Error as exc:
                raise self._error(exc) from None
            except MemoryError:
                raise self._out_of_heap() from None
            return max(cursor.rowcount, 0)

    def close(self) -> None:
        with self._lock:
            self._conn.close()
            self._functions.close()

    # -- confinement -----------------------------------------------------------------------

    def _authorize(self, action: int, arg1: str | None, arg2: str | None,
                   db: str | None, _trigger: str | None) -> int:
        refused = self._refusal(action, arg1, arg2, db)
        if refused is None:
            return sqlite3.SQLITE_OK
        self._refused = refused
        return sqlite3.SQLITE_DENY

    def _refusal(self, action: int, arg1: str | None, arg2: str | None,
                 db: str | None) -> str | None:
        """What ``action`` would do that the grant does not allow, or None if allowed."""
        # The connection is shared by every event and component granted the database:
        # a transaction left open by one would take in the others' writes (and a later
        # ROLLBACK would erase them), and a TEMP object would live on the connection,
        # outside the file, shadowing the file's table of the same name for everyone.
        # (Plain VACUUM runs its own BEGIN inside the statement.)
        if (action in (sqlite3.SQLITE_TRANSACTION, sqlite3.SQLITE_SAVEPOINT)
                and not self._plain_vacuum):
            return f"the transaction statement {arg1}{_TRANSACTION_WHY}"
        if action in _TEMP_CREATES:
            return f"{_TEMP_CREATES[action]} {arg1}"
        if action in _CREATES and db == "temp":
            return f"{_CREATES[action]} {arg1} in the TEMP schema"
        if action == sqlite3.SQLITE_ATTACH:
            if self._plain_vacuum and arg1 == "":
                return None
            return "VACUUM INTO" if self._vacuum else f"ATTACH of {arg1!r}"
        if action == sqlite3.SQLITE_DETACH:
            return "DETACH"
        if action == sqlite3.SQLITE_PRAGMA:
            pragma = (arg1 or "").lower()
            if self._own_pragma and pragma == "busy_timeout":
                return None
            if pragma in _DESCRIBING_PRAGMAS or (pragma in _READABLE_PRAGMAS and arg2 is None):
                return None
            return f"PRAGMA {pragma}" + ("" if arg2 is None else f" = {arg2}")
        if action == sqlite3.SQLITE_FUNCTION and (arg2 or "").lower() in _REFUSED_FUNCTIONS:
            return f"the function {arg2}()"
        return None

    def _interrupt(self) -> None:
        # On the timer's thread, at the deadline: SQLite stops the statement at its next
        # VM step (sqlite3.OperationalError "interrupted").
        self._interrupted = True
        self._conn.interrupt()

    @contextlib.contextmanager
    def _statement(self, statement: str) -> Iterator[sqlite3.Cursor]:
        """Hold the lock for one statement, with its deadline and refusal state set; the
        cursor to run it on."""
        left = deadline.check(f"database `{self.name}`")
        # Waiting for another statement counts against this event's deadline too.
        if not self._lock.acquire(timeout=-1 if left is None else left):
            raise DeadlineExceeded(
                f"database `{self.name}`: still busy with another statement at the event's "
                "deadline (`timeout-ms` of the component)")
        try:
            self._refused = None
            self._interrupted = False
            self._vacuum = bool(_VACUUM.match(statement))
            self._plain_vacuum = bool(_PLAIN_VACUUM.match(statement))
            left = deadline.remaining()
            stop_at = None if left is None else time.monotonic() + left
            self._functions.stop_at = stop_at
            self._functions.failure = None
            # SQLite's wait for another process's lock on the file is bounded the same way
            # (the progress handler does not run while SQLite waits). The gateway's own
            # PRAGMA is let through the authorizer by this flag.
            busy_ms = _BUSY_TIMEOUT_MS if left is None else min(_BUSY_TIMEOUT_MS,
                                                                int(left * 1000))
            self._own_pragma = True
            try:
                self._conn.execute(f"PRAGMA busy_timeout = {busy_ms}")
            finally:
                self._own_pragma = False
            # A timer, not a progress handler: one VM step can take seconds (randomblob of
            # 16 MB in a loop ran 4 s past a 2 s deadline with a check every 1000 steps).
            alarm = None if stop_at is None else TIMER.arm(stop_at, self._interrupt)
            cursor = self._conn.cursor()
            try:
                yield cursor
            finally:
                if alarm is not None:
                    TIMER.disarm(alarm)
                # Closing ends the statement, which clears an interrupt that came after it
                # had produced its last row, so the flag cannot reach the next statement.
                cursor.close()
        finally:
            self._functions.stop_at = None
            self._lock.release()

    def _out_of_heap(self) -> SqlError:
        # SQLite answers SQLITE_NOMEM at the heap limit; Python turns that into MemoryError.
        return SqlError(
            f"database `{self.name}`: the statement needs more memory than SQLite may use in "
            f"the gateway ({self.heap_limit} bytes: 4 x the largest `max-result-bytes` plus "
            "64 MiB, at least 256 MiB); return fewer or smaller values per row")

    def _error(self, exc: sqlite3.Error) -> WasmgateError:
        """The guest-facing error for a failed statement."""
        if self._refused is not None:
            return SqlError(
                f"database `{self.name}`: {self._refused} is refused: the grant [sql.{self.name}]"
                " reaches this one database file and nothing else")
        if self._interrupted or self._functions.failure == "interrupted":
            return _deadline_passed(self.name)
        if self._functions.failure is not None:
            exc = sqlite3.DataError(self._functions.failure)
        if isinstance(exc, sqlite3.DataError) and "too big" in str(exc):
            return SqlError(
                f"database `{self.name}`: {exc}: no value may be over {self.limits.max_bytes} "
                f"bytes, the limit set by `max-result-bytes` of [sql.{self.name}]")
        if "pattern too complex" in str(exc):
            return SqlError(
                f"database `{self.name}`: {exc}: LIKE and GLOB patterns may be at most "
                f"{_LIKE_PATTERN_CHARS} characters (each is matched at every position of the "
                "text in one step, which the deadline cannot interrupt)")
        return SqlError(f"database `{self.name}`: {exc}")


def _raise_heap_limit(conn: sqlite3.Connection, max_result_bytes: int) -> int:
    """Set SQLite's process-wide heap limit to at least what this database needs (never
    lower: another database may need more) and return the limit now in force."""
    wanted = max(_MIN_SQLITE_HEAP_BYTES, 4 * max_result_bytes + 64 * 1024 * 1024)
    current = int(conn.execute("PRAGMA hard_heap_limit").fetchone()[0])
    if current < wanted:
        conn.execute(f"PRAGMA hard_heap_limit={wanted}")
        current = wanted
    return current


# -- PostgreSQL --------------------------------------------------------------------------------

# Rows a query's result is streamed in (libpq 17's chunked mode; one row at a time before it).
_STREAM_ROWS = 16


def _libpq_chunks() -> bool:
    try:
        import psycopg
    except ImportError:  # pragma: no cover - the postgres extra is not installed
        return False
    return bool(psycopg.pq.version() >= 170000)


_CHUNKED = _libpq_chunks()

# Built-in roles whose members reach the server's file system or run programs on it.
_FILE_ROLES = ("pg_read_server_files", "pg_write_server_files", "pg_execute_server_program")
# Run when a connection goes back to the pool, so the next event (maybe another
# component's) starts on a fresh session: temp tables, settings (search_path, TimeZone,
# default_transaction_read_only, role), prepared statements, cursors, LISTENs and
# session-level advisory locks all go. DISCARD ALL refuses to run inside a transaction
# block, hence the ROLLBACK first when a guest left one open.
_RESET_SESSION = "DISCARD ALL"
# The housekeeping above gets this long past the event's deadline (a statement cancelled
# at the deadline leaves the session to clean); past it the connection is closed instead.
_RESET_BUDGET_S = 1.0
# Bytes the server may send for one statement on top of twice `max-result-bytes`: a value
# takes at most about twice its counted size on the wire (bytea goes as hex), plus a
# header per row and per value; this slack covers those for `max-rows` rows of small
# values and the result's description.
_WIRE_SLACK_PER_ROW = 64
_WIRE_SLACK = 1 << 20

_PASSWORD_IN_DSN = re.compile(r"\bpassword\s*=\s*('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


def _passwords(url: str) -> list[str]:
    """The password in a connection URL or ``key=value`` string: as written, decoded,
    and its pieces between ``/ ? #`` (libpq splits the URL there, and quotes the piece
    after the split in its error), so an error that echoes any of them can be masked."""
    found: list[str] = []
    _, sep, rest = url.partition("://")
    if sep and "@" in rest:
        userinfo = rest.rpartition("@")[0]
        if ":" in userinfo:
            found.append(userinfo.split(":", 1)[1])
    found += [m.group(1).strip("'") for m in _PASSWORD_IN_DSN.finditer(url)]
    for password in list(found):
        found.append(urllib.parse.unquote(password))
        found += re.split(r"[/?#]", password)
    return sorted({p for p in found if p}, key=len, reverse=True)


def _mask_connection_error(url: str, text: str) -> str:
    """``text`` (a libpq error) with the URL's password masked: libpq echoes a password
    with a bad ``%`` escape whole in its message (``invalid percent-encoded token``)."""
    masked = text.replace(url, redact_url(url))
    passwords = _passwords(url)
    # Too short for the redactor (it would mask innocent text everywhere): masked where
    # libpq's quoted token starts.
    for password in passwords:
        masked = masked.replace(f'"{password}', f'"{MASK}')
    return SecretRedactor(passwords)(masked)


class PostgresDatabase:
    """A PostgreSQL database through a small pool of psycopg connections (autocommit).

    Statements go through psycopg's raw cursor: PostgreSQL's own ``$1`` placeholders, the
    text sent as written (a ``%`` in a literal or a ``$1`` inside a ``$$`` body is the
    server's business, not a placeholder). Each connection is a
    :class:`~bindings.host.pg_connection.GuardedConnection`: the event's deadline and a
    byte budget bound every statement on it, and its session is discarded before it goes
    back to the pool.
    """

    def __init__(self, name: str, url: str, *, max_connections: int = 4,
                 connect_timeout_s: float = 5.0, limits: ResultLimits | None = None) -> None:
        self.name = name
        self.limits = limits or ResultLimits()
        self._url = url
        self._timeout = connect_timeout_s
        self._idle: queue.LifoQueue[Any] = queue.LifoQueue()
        self._slots = threading.BoundedSemaphore(max_connections)
        self._role_checked = threading.Event()
        self.max_wire_bytes = (2 * self.limits.max_bytes
                               + _WIRE_SLACK_PER_ROW * self.limits.max_rows + _WIRE_SLACK)

    def _connect(self, left: float | None) -> Any:
        import psycopg

        from bindings.host.pg_connection import GuardedConnection

        timeout = self._timeout if left is None else min(self._timeout, left)
        try:
            # libpq waits at least 2 s whatever is asked for.
            conn = GuardedConnection.connect(self._url, autocommit=True,
                                             connect_timeout=max(2, math.ceil(timeout)),
                                             cursor_factory=psycopg.RawCursor,
                                             # psycopg prepares a statement on the server
                                             # after 5 runs and reuses it by name; the
                                             # session reset drops it there (and psycopg's
                                             # own bookkeeping of that misses cases).
                                             prepare_threshold=None)
        except psycopg.Error as exc:
            # Masked before anything is cut: a cut could leave part of the password.
            text = _mask_connection_error(self._url, str(exc).strip() or repr(exc))
            raise SqlError(f"database `{self.name}`: cannot connect: {text}; check `url` of "
                           f"[sql.{self.name}]") from None
        if not self._role_checked.is_set():
            self._role_checked.set()
            self._warn_if_superuser(conn)
        return conn

    def _warn_if_superuser(self, conn: Any) -> None:
        """Log once when the configured role is a superuser: a handler could then read the
        server's files (``pg_read_file``) or run programs (``COPY ... PROGRAM``)."""
        import psycopg

        try:
            row = conn.execute("SELECT current_user, rolsuper FROM pg_roles "
                               "WHERE rolname = current_user").fetchone()
        except psycopg.Error:
            return  # the statement that follows reports a broken connection
        if row is not None and row[1]:
            log.warning(
                "sql database connects as a superuser", database=self.name, role=row[0],
                hint=f"set `url` of [sql.{self.name}] to a role with only the privileges the "
                     "handlers need (see docs/security.md); a handler granted this database "
                     "can read the server's files")
            return
        # Not a superuser, but a member of a role that reaches the server's files or runs
        # programs on it: `pg_read_file` and `COPY ... PROGRAM` work all the same.
        try:
            reach = conn.execute(
                "SELECT coalesce(array_agg(r), '{}') FROM unnest($1::text[]) AS r "
                "WHERE pg_has_role(current_user, r, 'MEMBER')", [list(_FILE_ROLES)]).fetchone()
        except psycopg.Error:
            return  # a server without these roles (before PostgreSQL 11)
        if reach is not None and reach[0]:
            log.warning(
                "sql database role reaches the server's files", database=self.name,
                role=row[0] if row is not None else None, through=list(reach[0]),
                hint=f"revoke {', '.join(reach[0])} from the role of `url` of "
                     f"[sql.{self.name}] (see docs/security.md); a handler granted this "
                     "database can read or write the server's files or run programs there")

    def _run(self, statement: str, params: list[SqlValue], *, fetch: bool) -> Any:
        import psycopg

        from bindings.host.pg_connection import StatementAbandoned, StatementGuard

        left = deadline.check(f"database `{self.name}`")
        if not self._slots.acquire(timeout=_NO_DEADLINE_WAIT_S if left is None else left):
            if left is not None:
                raise DeadlineExceeded(
                    f"database `{self.name}`: no connection free before the event's deadline "
                    f"(`timeout-ms` of the component); raise `max-connections` of "
                    f"[sql.{self.name}]")
            raise SqlError(f"database `{self.name}`: no connection free within "
                           f"{_NO_DEADLINE_WAIT_S:.0f} s; raise `max-connections` of "
                           f"[sql.{self.name}]")
        conn = None
        guard = None
        try:
            try:
                conn = self._idle.get_nowait()
            except queue.Empty:
                conn = self._connect(deadline.remaining())
            left = deadline.remaining()
            if left is not None and left <= 0:
                raise _deadline_passed(self.name)
            # The deadline is kept on this side (a cancel request when it passes) rather
            # than in `statement_timeout`, which the guest's own statement can change.
            guard = conn.guarded(StatementGuard(
                stop_at=None if left is None else time.monotonic() + left,
                max_wire_bytes=self.max_wire_bytes))
            with conn.cursor() as cursor:
                if fetch:
                    return self._fetch_bounded(cursor, statement, params)
                cursor.execute(statement, _check_params(self.name, params))
                return max(cursor.rowcount, 0)
        except (psycopg.Error, StatementAbandoned) as exc:
            if isinstance(exc, StatementAbandoned) and conn is not None:
                conn.close()  # libpq's side is closed already; this is psycopg's
            if guard is not None and guard.over_budget:
                raise SqlError(
                    f"database `{self.name}`: the server sent over {self.max_wire_bytes} "
                    f"bytes for one statement, the most a result within `max-result-bytes` "
                    f"({self.limits.max_bytes}) of [sql.{self.name}] can take; the statement "
                    "was cancelled. Select fewer rows or smaller values (an `execute` "
                    "is bounded too, though it returns no rows)") from None
            if guard is not None and guard.cancelled:
                raise _deadline_passed(self.name) from None
            text = str(exc).strip()
            message = text.splitlines()[0] if text else repr(exc)
            raise SqlError(f"database `{self.name}`: {message}") from None
        finally:
            if conn is not None:
                conn.unguard()
                self._give_back(conn)
            self._slots.release()

    def _give_back(self, conn: Any) -> None:
        """Return ``conn`` to the pool on a fresh session, or close it."""
        import psycopg
        from psycopg import pq

        from bindings.host.pg_connection import StatementAbandoned, StatementGuard

        if conn.closed:
            conn.close()  # libpq's side may be closed already; this releases the rest
            return
        left = deadline.remaining()
        budget = _RESET_BUDGET_S if left is None else left + _RESET_BUDGET_S
        conn.guarded(StatementGuard(stop_at=time.monotonic() + budget, cancel=False))
        try:
            status = conn.info.transaction_status
            if status in (pq.TransactionStatus.INTRANS, pq.TransactionStatus.INERROR):
                conn.execute("ROLLBACK")
            elif status != pq.TransactionStatus.IDLE:
                raise StatementAbandoned("mid-statement")
            conn.execute(_RESET_SESSION)
        except (psycopg.Error, StatementAbandoned):
            conn.close()  # not left mid-statement or dirty for the next event
            return
        finally:
            conn.unguard()
        self._idle.put(conn)

    def _fetch_bounded(self, cursor: Any, statement: str, params: list[SqlValue]) -> RowSet:
        """The statement's rows, streamed from the server a chunk at a time and refused as
        soon as they pass the limits. A plain execute had libpq hold the whole result first:
        400 MB of rows reached the gateway's memory before `max-result-bytes` (16 MiB) was
        checked, and a few GB would end the process."""
        import psycopg

        stream = cursor.stream(statement, _check_params(self.name, params),
                               size=_STREAM_ROWS if _CHUNKED else 1)
        try:
            rows = _bounded_rows(self.name, self.limits, stream)
        except psycopg.ProgrammingError as exc:
            # A statement without rows (DDL, an INSERT without RETURNING) ran, but stream()
            # says so with this client-side error; `query` answered no rows for it before.
            if exc.sqlstate is None and "didn't produce a result" in str(exc):
                return RowSet(columns=[], rows=[])
            raise
        finally:
            # Past a limit: psycopg cancels the statement and drains what already arrived.
            stream.close()
        return RowSet(columns=[d.name for d in cursor.description or ()], rows=rows)

    def query(self, statement: str, params: list[SqlValue]) -> RowSet:
        result: RowSet = self._run(statement, params, fetch=True)
        return result

    def execute(self, statement: str, params: list[SqlValue]) -> int:
        count: int = self._run(statement, params, fetch=False)
        return count

    def close(self) -> None:
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return


__all__ = [
    "DEFAULT_MAX_RESULT_BYTES",
    "DEFAULT_MAX_ROWS",
    "PostgresDatabase",
    "ResultLimits",
    "RowSet",
    "SqlDatabase",
    "SqlError",
    "SqlValue",
    "SqliteDatabase",
]
