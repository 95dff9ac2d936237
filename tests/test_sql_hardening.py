"""A SQL grant through a real component (tests/fixtures/handlers/caps) reaches that one
database, for no longer than the event's deadline, and returns bounded results.

SQLite: ATTACH (any file, the key-value store's included), DETACH, VACUUM INTO, extension
loading and file- or safety-changing PRAGMAs are refused with an error value naming what
was refused; a huge value, too many rows or too many bytes fail with the setting to raise;
a runaway statement is stopped at the deadline and the pool serves the next event.
PostgreSQL: statements reach the server as written (`%` in a literal, `$1` inside a `$$`
body), a superuser role is warned about, a statement is stopped at the deadline.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
import structlog

from bindings.types import Event, new_event_id
from gateway.app import App
from tests.test_capabilities import POSTGRES_URL, _manifest

pytestmark = pytest.mark.wasm

# Counts forever: only the deadline stops it.
RUNAWAY = ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) "
           "SELECT count(*) FROM c")
TIMEOUT_MS = 1000

Call = Callable[..., Any]


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[Callable[..., App]]:
    apps: list[App] = []

    def make(component_extra: str = "", extra: str = "") -> App:
        app = App.load(_manifest(tmp_path, component_extra, extra))
        apps.append(app)
        return app

    yield make
    for app in apps:
        await app.stop()


async def _send(app: App, **msg: Any) -> tuple[int, Any]:
    event = Event(id=new_event_id(), source="test", type="test", data=json.dumps(msg).encode())
    response = await app.invoke("caps", event)
    return response.status, json.loads(response.body) if response.status == 200 else None


def _caller(app: App) -> Call:
    async def call(**msg: Any) -> Any:
        status, body = await _send(app, **msg)
        assert status == 200
        return body
    return call


@pytest.fixture
async def local(gateway: Callable[..., App]) -> Call:
    """A component granted the SQLite database `local` and the `default` kv store."""
    call = _caller(gateway('sql-databases = ["local"]\nkey-value-stores = ["default"]'))
    await call(op="sql-exec", db="local", sql="CREATE TABLE IF NOT EXISTS t (v TEXT)")
    await call(op="sql-exec", db="local", sql="INSERT INTO t VALUES ('kept')")
    return call


def _refused(result: Any, what: str) -> None:
    assert "err" in result, result
    assert what in result["err"] and "is refused" in result["err"], result["err"]
    assert "database `local`" in result["err"]
    assert "[sql.local] reaches this one database file and nothing else" in result["err"]


async def _still_serves(call: Call) -> None:
    rows = await call(op="sql-query", db="local", sql="SELECT v FROM t")
    assert rows == {"ok": {"columns": ["v"], "rows": [["kept"]]}}


# -- SQLite: the grant is one file ---------------------------------------------------------


async def test_sqlite_attach_of_another_file_is_refused(local: Call, tmp_path: Path) -> None:
    other = tmp_path / "elsewhere.db"
    result = await local(op="sql-exec", db="local", sql=f"ATTACH '{other}' AS x")
    _refused(result, "ATTACH")
    written = await local(op="sql-exec", db="local", sql="CREATE TABLE x.stolen (v)")
    assert "unknown database x" in written["err"]
    assert not other.exists()
    await _still_serves(local)


async def test_sqlite_attaching_the_kv_database_is_refused(local: Call, tmp_path: Path) -> None:
    assert await local(op="kv-set", store="default", key="secret", value="v") == {"ok": True}
    kv_file = tmp_path / ".wasmgate" / "default.sqlite"
    assert kv_file.is_file()
    attached = await local(op="sql-exec", db="local", sql=f"ATTACH '{kv_file}' AS kv")
    _refused(attached, "ATTACH")
    read = await local(op="sql-query", db="local", sql="SELECT value FROM kv.kv")
    assert "err" in read and "secret" not in json.dumps(read)


async def test_sqlite_detach_is_refused(local: Call) -> None:
    _refused(await local(op="sql-exec", db="local", sql="DETACH DATABASE main"), "DETACH")
    await _still_serves(local)


async def test_sqlite_vacuum_into_is_refused_and_plain_vacuum_works(local: Call,
                                                                    tmp_path: Path) -> None:
    copy = tmp_path / "copy.db"
    _refused(await local(op="sql-exec", db="local", sql=f"VACUUM INTO '{copy}'"),
             "VACUUM INTO")
    _refused(await local(op="sql-exec", db="local", sql=f"VACUUM main INTO '{copy}'"),
             "VACUUM INTO")
    assert not copy.exists()
    assert await local(op="sql-exec", db="local", sql="VACUUM") == {"ok": 0}
    await _still_serves(local)


async def test_sqlite_load_extension_is_refused(local: Call) -> None:
    result = await local(op="sql-query", db="local",
                         sql="SELECT load_extension('/tmp/evil.so')")
    _refused(result, "load_extension()")


@pytest.mark.parametrize("pragma", [
    "PRAGMA journal_mode = DELETE", "PRAGMA synchronous = OFF", "PRAGMA writable_schema = 1",
    "PRAGMA trusted_schema = 1", "PRAGMA foreign_keys = OFF", "PRAGMA database_list",
    "PRAGMA temp_store_directory = '/tmp'", "PRAGMA query_only = 1",
])
async def test_sqlite_file_and_safety_pragmas_are_refused(local: Call, pragma: str) -> None:
    _refused(await local(op="sql-query", db="local", sql=pragma), "PRAGMA")
    mode = await local(op="sql-query", db="local", sql="PRAGMA journal_mode")
    assert mode["ok"]["rows"] == [["wal"]]


async def test_sqlite_describing_pragmas_still_work(local: Call) -> None:
    info = await local(op="sql-query", db="local", sql="PRAGMA table_info(t)")
    assert [row[1] for row in info["ok"]["rows"]] == ["v"]
    same = await local(op="sql-query", db="local", sql="SELECT name FROM pragma_table_info('t')")
    assert same["ok"]["rows"] == [["v"]]


async def test_sqlite_transaction_cannot_span_events(local: Call) -> None:
    """The connection is shared by every event: a BEGIN left open by one would take the
    next events' writes into it (a later ROLLBACK erasing them) and hold the file's write
    lock against other processes."""
    for statement in ("BEGIN", "BEGIN IMMEDIATE", "SAVEPOINT s"):
        _refused(await local(op="sql-exec", db="local", sql=statement), "transaction")
    await local(op="sql-exec", db="local", sql="INSERT INTO t VALUES ('written')")
    for statement in ("ROLLBACK", "ROLLBACK TO s", "RELEASE s"):
        _refused(await local(op="sql-exec", db="local", sql=statement), "transaction")
    rows = await local(op="sql-query", db="local", sql="SELECT v FROM t ORDER BY v")
    assert rows["ok"]["rows"] == [["kept"], ["written"]]


@pytest.mark.parametrize("statement", [
    "CREATE TEMP TABLE t (v TEXT)", "CREATE TABLE temp.t (v TEXT)",
    "CREATE TEMP VIEW t AS SELECT 'forged' AS v",
    "CREATE TEMP TRIGGER tr AFTER INSERT ON t BEGIN DELETE FROM t; END",
    "CREATE VIRTUAL TABLE temp.t USING fts5(v)",
])
async def test_sqlite_temp_objects_are_refused(local: Call, statement: str) -> None:
    """A TEMP object lives on the shared connection, not in the file, and shadows the
    file's table of the same name for every later event."""
    _refused(await local(op="sql-exec", db="local", sql=statement), "TEMP")
    await local(op="sql-exec", db="local", sql="INSERT INTO t VALUES ('written')")
    rows = await local(op="sql-query", db="local", sql="SELECT v FROM t ORDER BY v")
    assert rows["ok"]["rows"] == [["kept"], ["written"]]


# -- SQLite: results are bounded --------------------------------------------------------------


async def test_sqlite_huge_value_fails_cleanly(local: Call) -> None:
    result = await local(op="sql-query", db="local", sql="SELECT length(zeroblob(1000000000))")
    assert "too big" in result["err"] and "`max-result-bytes` of [sql.local]" in result["err"]
    await _still_serves(local)


SMALL = """
[sql.small]
backend = "sqlite"
max-rows = 5
max-result-bytes = 1000
"""


async def test_sqlite_rows_over_max_rows_are_refused(gateway: Callable[..., App]) -> None:
    call = _caller(gateway('sql-databases = ["small"]', SMALL))
    counting = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT {}) " \
               "SELECT x FROM c"
    five = await call(op="sql-query", db="small", sql=counting.format(5))
    assert five["ok"]["rows"] == [[1], [2], [3], [4], [5]]
    six = await call(op="sql-query", db="small", sql=counting.format(6))
    assert "more than 5 rows" in six["err"] and "`max-rows` of [sql.small]" in six["err"]


async def test_sqlite_bytes_over_max_result_bytes_are_refused(gateway: Callable[..., App]
                                                              ) -> None:
    call = _caller(gateway('sql-databases = ["small"]', SMALL))
    fits = await call(op="sql-query", db="small", sql="SELECT printf('%.900c', 'x') AS s")
    assert len(fits["ok"]["rows"][0][0]) == 900
    over = await call(op="sql-query", db="small",
                      sql="SELECT printf('%.600c', 'x') UNION ALL SELECT printf('%.600c', 'y')")
    assert "over 1000 bytes" in over["err"]
    assert "`max-result-bytes` of [sql.small]" in over["err"]


# -- the deadline -----------------------------------------------------------------------------


async def _stopped_at_the_deadline(app: App, db: str, statement: str) -> None:
    """The statement is stopped at the event's deadline, the guest (or, if the guest was
    itself out of time, the log) says so, and the same pool serves the next event."""
    started = time.monotonic()
    with structlog.testing.capture_logs() as logs:
        status, body = await _send(app, op="sql-query", db=db, sql=statement)
    # A hang guard, not a speed claim: before the fix this held the slot for 13.8 s.
    assert time.monotonic() - started < 3 * TIMEOUT_MS / 1000
    refusals = [e["error"] for e in logs if e["event"] == "host call refused or failed"]
    assert refusals and "deadline (`timeout-ms`" in refusals[0], logs
    assert f"database `{db}`" in refusals[0]
    if status == 200:
        assert "deadline (`timeout-ms`" in body["err"]
    else:
        assert status == 504  # the guest ran out of time on its way back
    status, body = await _send(app, op="sql-query", db=db, sql="SELECT 41 + 1 AS n")
    assert (status, body) == (200, {"ok": {"columns": ["n"], "rows": [[42]]}})


async def test_sqlite_runaway_statement_is_stopped_at_the_deadline(
        gateway: Callable[..., App]) -> None:
    app = gateway(f'sql-databases = ["local"]\ntimeout-ms = {TIMEOUT_MS}\nmax-instances = 1')
    await _stopped_at_the_deadline(app, "local", RUNAWAY)


async def test_postgres_statement_is_stopped_at_the_deadline(gateway: Callable[..., App]
                                                             ) -> None:
    app = gateway(f'sql-databases = ["pg"]\ntimeout-ms = {TIMEOUT_MS}\nmax-instances = 1')
    await _stopped_at_the_deadline(app, "pg", "SELECT pg_sleep(30)")


async def test_postgres_result_is_refused_before_the_gateway_holds_all_of_it(
        gateway: Callable[..., App]) -> None:
    """400 rows of 1 MB against max-result-bytes (16 MiB): the whole result used to reach
    the gateway's memory first (libpq holds a plain execute's result whole), so a few GB
    would end the process. Streamed, the statement is cancelled once the limit is passed:
    the server never produces most of the rows (a sequence counts those it did)."""
    seq = f"wasmgate_rows_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as pg:
        pg.execute(f"CREATE SEQUENCE {seq}")
    try:
        call = _caller(gateway('sql-databases = ["pg"]'))
        big = await call(op="sql-query", db="pg", sql=f"SELECT repeat('x', 1000000), "
                         f"nextval('{seq}') FROM generate_series(1, 400)")
        assert "`max-result-bytes` of [sql.pg]" in big["err"]
        with psycopg.connect(POSTGRES_URL, autocommit=True) as pg:
            produced = pg.execute(f"SELECT last_value FROM {seq}").fetchone()
        assert produced is not None and produced[0] < 200, produced
        # The connection serves the next event; statements without rows still answer none.
        assert await call(op="sql-query", db="pg", sql="SELECT 7 AS n") == \
            {"ok": {"columns": ["n"], "rows": [[7]]}}
        assert await call(op="sql-query", db="pg", sql=f"ALTER SEQUENCE {seq} RESTART") == \
            {"ok": {"columns": [], "rows": []}}
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as pg:
            pg.execute(f"DROP SEQUENCE IF EXISTS {seq}")


# -- PostgreSQL: statements as written, and the role ------------------------------------------


async def test_postgres_percent_in_a_literal_reaches_the_server(gateway: Callable[..., App]
                                                                ) -> None:
    call = _caller(gateway('sql-databases = ["pg"]'))
    rows = await call(op="sql-query", db="pg",
                      sql="SELECT 'abc' LIKE 'a%' AS m, $1::text || '%' AS p", params=["50"])
    assert rows == {"ok": {"columns": ["m", "p"], "rows": [[1, "50%"]]}}


async def test_postgres_dollar_quoted_body_is_not_a_parameter(gateway: Callable[..., App]
                                                              ) -> None:
    call = _caller(gateway('sql-databases = ["pg"]'))
    rows = await call(op="sql-query", db="pg", sql="SELECT $$ $1 $$ AS body, $1::int AS n",
                      params=[7])
    assert rows == {"ok": {"columns": ["body", "n"], "rows": [[" $1 ", 7]]}}
    function = f"wasmgate_twice_{uuid.uuid4().hex[:8]}"
    created = await call(op="sql-exec", db="pg", sql=f"CREATE FUNCTION {function}(int) "
                         "RETURNS int LANGUAGE sql AS $$ SELECT $1 * 2 $$")
    try:
        assert created == {"ok": 0}
        twice = await call(op="sql-query", db="pg", sql=f"SELECT {function}($1)", params=[21])
        assert twice["ok"]["rows"] == [[42]]
    finally:
        await call(op="sql-exec", db="pg", sql=f"DROP FUNCTION IF EXISTS {function}(int)")


async def test_postgres_superuser_role_is_warned_about(gateway: Callable[..., App]) -> None:
    call = _caller(gateway('sql-databases = ["pg"]'))
    with structlog.testing.capture_logs() as logs:
        await call(op="sql-query", db="pg", sql="SELECT 1")
        await call(op="sql-query", db="pg", sql="SELECT 2")
    warnings = [e for e in logs if e["event"] == "sql database connects as a superuser"]
    assert len(warnings) == 1  # once, not per statement
    [warning] = warnings
    assert warning["log_level"] == "warning"
    assert warning["database"] == "pg" and warning["role"] == "postgres"
    assert "`url` of [sql.pg]" in warning["hint"]


@pytest.fixture
def app_role() -> str:
    """A least-privilege login role, as docs/security.md tells operators to create."""
    role = "wasmgate_app_test"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as pg:
        exists = pg.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role]).fetchone()
        if not exists:
            pg.execute(f"CREATE ROLE {role} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE")
    return f"postgresql://{role}@127.0.0.1:5432/test"


async def test_postgres_least_privilege_role_cannot_read_server_files(
        gateway: Callable[..., App], app_role: str) -> None:
    app = gateway('sql-databases = ["app"]',
                  f'\n[sql.app]\nbackend = "postgres"\nurl = "{app_role}"\n')
    call = _caller(app)
    with structlog.testing.capture_logs() as logs:
        read = await call(op="sql-query", db="app", sql="SELECT pg_read_file('/etc/hostname')")
    assert "permission denied" in read["err"]
    assert not [e for e in logs if "superuser" in e["event"]]


async def test_postgres_role_that_reaches_server_files_is_warned_about(
        gateway: Callable[..., App]) -> None:
    """Not a superuser, but a member of pg_read_server_files: `COPY ... FROM '<file>'`
    reads the server's files from a handler all the same, and nothing was logged."""
    role = "wasmgate_files_test"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as pg:
        if not pg.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role]).fetchone():
            pg.execute(f"CREATE ROLE {role} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE")
        pg.execute(f"GRANT pg_read_server_files TO {role}")
    app = gateway('sql-databases = ["files"]', '\n[sql.files]\nbackend = "postgres"\n'
                  f'url = "postgresql://{role}@127.0.0.1:5432/test"\n')
    call = _caller(app)
    with structlog.testing.capture_logs() as logs:
        # One statement: the temp table does not outlive it (each event starts on a fresh
        # session), so the count comes back in the error it raises.
        read = await call(op="sql-exec", db="files", sql=(
            "DO $$ DECLARE n text; BEGIN CREATE TEMP TABLE h (l text); "
            "COPY h FROM '/etc/hostname'; SELECT count(*) INTO n FROM h; "
            "RAISE EXCEPTION 'lines read: %', n; END $$"))
    assert "lines read: 1" in read["err"]  # the reach is real
    warnings = [e for e in logs if e["event"] == "sql database role reaches the server's files"]
    assert len(warnings) == 1, logs
    assert warnings[0]["through"] == ["pg_read_server_files"]
    assert warnings[0]["role"] == role and "[sql.files]" in warnings[0]["hint"]


async def test_sqlite_file_locked_by_another_process_is_waited_for_until_the_deadline_only(
        gateway: Callable[..., App]) -> None:
    import sqlite3

    app = gateway(f'sql-databases = ["local"]\ntimeout-ms = {TIMEOUT_MS}\nmax-instances = 1')
    call = _caller(app)
    assert "ok" in await call(op="sql-exec", db="local", sql="CREATE TABLE IF NOT EXISTS t(x)")
    other = sqlite3.connect(app.manifest.sql_path("local"), isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process's write lock on the same file
    try:
        started = time.monotonic()
        status, body = await _send(app, op="sql-exec", db="local",
                                   sql="INSERT INTO t VALUES (1)")
        # A hang guard, not a speed claim: SQLite's own busy wait alone would last 5 s.
        assert time.monotonic() - started < 3 * TIMEOUT_MS / 1000
        assert status == 504 or "locked" in body["err"] or "deadline" in body["err"]
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert await call(op="sql-exec", db="local", sql="INSERT INTO t VALUES (2)") == {"ok": 1}


# -- PostgreSQL: connection errors carry no password ------------------------------------------


@pytest.mark.parametrize("password", ["s3cr%zzetpassword", "s3cretpass%", "pw%",
                                      "s3#cr/et%zz"])
async def test_postgres_connection_error_does_not_carry_the_password(
        gateway: Callable[..., App], password: str) -> None:
    """A bad `%` escape in the URL's password: libpq quotes the token, password and all,
    in its error, which went to the guest and into the log."""
    url = f"postgresql://postgres:{password}@127.0.0.1:5432/test"
    call = _caller(gateway('sql-databases = ["bad"]',
                           f'\n[sql.bad]\nbackend = "postgres"\nurl = "{url}"\n'))
    with structlog.testing.capture_logs() as logs:
        result = await call(op="sql-query", db="bad", sql="SELECT 1")
    for secret in password.rstrip("%").replace("#", "/").split("/"):
        assert secret not in result["err"], result
        assert secret not in json.dumps(logs, default=str), logs
    assert "cannot connect" in result["err"] and "`url` of [sql.bad]" in result["err"]
    assert "***" in result["err"], result  # what libpq said is kept, masked
