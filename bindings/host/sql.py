"""The ``sql`` import: parameterised statements against SQLite or PostgreSQL.

Values cross the boundary as the WIT variant ``value`` (null / integer / real / text /
blob), which wasmtime-py lowers from and lifts to plain ``None / int / float / str /
bytes``. Types without a variant case are converted on the way out: booleans to integer,
decimals to real, dates, times, UUIDs, JSON and the rest to their text form.

Host calls run on the executor's worker threads, so both backends are blocking clients
guarded for use from many threads: SQLite with one connection behind a lock (SQLite
serialises writers anyway), PostgreSQL with a small pool of psycopg connections.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import queue
import sqlite3
import threading
from pathlib import Path
from typing import Any, Protocol

from gateway.errors import WasmgateError

SqlValue = None | int | float | str | bytes


class SqlError(WasmgateError):
    """A refused or failed statement (the message goes back to the guest)."""


@dataclasses.dataclass
class RowSet:
    columns: list[str]
    rows: list[list[SqlValue]]


class SqlDatabase(Protocol):
    name: str

    def query(self, statement: str, params: list[SqlValue]) -> RowSet: ...

    def execute(self, statement: str, params: list[SqlValue]) -> int: ...

    def close(self) -> None: ...


def to_value(value: Any) -> SqlValue:
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


def _check_params(name: str, params: list[SqlValue]) -> list[SqlValue]:
    for i, p in enumerate(params):
        if p is not None and not isinstance(p, int | float | str | bytes):
            raise SqlError(f"database `{name}`: parameter {i + 1} has unsupported type "
                           f"{type(p).__name__}")
    return params


class SqliteDatabase:
    """One SQLite file (WAL), shared by every thread behind a lock."""

    def __init__(self, name: str, path: Path) -> None:
        self.name = name
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None,
                                     timeout=5.0)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._lock = threading.Lock()

    def query(self, statement: str, params: list[SqlValue]) -> RowSet:
        with self._lock:
            try:
                cursor = self._conn.execute(statement, _check_params(self.name, params))
                columns = [d[0] for d in cursor.description or ()]
                rows = [[to_value(v) for v in row] for row in cursor.fetchall()]
            except sqlite3.Error as exc:
                raise SqlError(f"database `{self.name}`: {exc}") from None
        return RowSet(columns=columns, rows=rows)

    def execute(self, statement: str, params: list[SqlValue]) -> int:
        with self._lock:
            try:
                cursor = self._conn.execute(statement, _check_params(self.name, params))
            except sqlite3.Error as exc:
                raise SqlError(f"database `{self.name}`: {exc}") from None
        return max(cursor.rowcount, 0)

    def close(self) -> None:
        with self._lock:
            self._conn.close()


class PostgresDatabase:
    """A PostgreSQL database through a small pool of psycopg connections (autocommit)."""

    def __init__(self, name: str, url: str, *, max_connections: int = 4,
                 connect_timeout_s: float = 5.0) -> None:
        self.name = name
        self._url = url
        self._timeout = connect_timeout_s
        self._idle: queue.LifoQueue[Any] = queue.LifoQueue()
        self._slots = threading.BoundedSemaphore(max_connections)

    def _connect(self) -> Any:
        import psycopg

        try:
            return psycopg.connect(self._url, autocommit=True,
                                   connect_timeout=max(1, int(self._timeout)))
        except psycopg.Error as exc:
            raise SqlError(f"database `{self.name}`: cannot connect: {exc}") from None

    def _run(self, statement: str, params: list[SqlValue], *, fetch: bool) -> Any:
        import psycopg

        # Our placeholders are PostgreSQL's own ($1, $2 ...); psycopg's are %s. Translate
        # only outside quotes so a literal '$1' in a string stays untouched.
        text = _dollar_to_pyformat(statement)
        if not self._slots.acquire(timeout=30):
            raise SqlError(f"database `{self.name}`: no connection free within 30 s")
        conn = None
        try:
            try:
                conn = self._idle.get_nowait()
            except queue.Empty:
                conn = self._connect()
            with conn.cursor() as cursor:
                args = {f"p{i + 1}": v for i, v in enumerate(_check_params(self.name, params))}
                cursor.execute(text, args)
                if fetch:
                    columns = [d.name for d in cursor.description or ()]
                    rows = [[to_value(v) for v in row] for row in cursor.fetchall()]
                    return RowSet(columns=columns, rows=rows)
                return max(cursor.rowcount, 0)
        except psycopg.Error as exc:
            if conn is not None and conn.closed:
                conn = None  # a broken connection is not returned to the pool
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
            raise SqlError(f"database `{self.name}`: {message}") from None
        finally:
            if conn is not None:
                self._idle.put(conn)
            self._slots.release()

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


def _dollar_to_pyformat(statement: str) -> str:
    out: list[str] = []
    quote: str | None = None
    i = 0
    while i < len(statement):
        ch = statement[i]
        if quote:
            out.append(ch)
            if ch == quote:
                quote = None
        elif ch in ("'", '"'):
            quote = ch
            out.append(ch)
        elif ch == "%":
            out.append("%%")
        elif ch == "$" and i + 1 < len(statement) and statement[i + 1].isdigit():
            j = i + 1
            while j < len(statement) and statement[j].isdigit():
                j += 1
            out.append(f"%(p{statement[i + 1:j]})s")
            i = j
            continue
        else:
            out.append(ch)
        i += 1
    return "".join(out)
