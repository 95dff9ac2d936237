"""Every SQL statement ends by the event's deadline through a real component
(tests/fixtures/handlers/caps), whatever the protocol, the session settings the guest
sends or what one SQLite virtual-machine step does; and the database serves others then.

PostgreSQL: ``execute`` without parameters goes over the simple-query protocol, so a guest
could turn ``statement_timeout`` off in the same text; the gateway cancels the statement
from its side at the deadline. SQLite: an interrupt from a timer stops a statement at its
next step, and the steps that took seconds (instr, replace, trim over 16 MB; long LIKE
patterns) are bounded.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from bindings.types import Event, new_event_id
from gateway.app import App
from gateway.errors import HandlerTimeout
from tests.fixtures.build import build_handler
from tests.holding_relay import LoopbackServer
from tests.test_capabilities import POSTGRES_URL, _manifest

pytestmark = pytest.mark.wasm

TIMEOUT_MS = 1000
# What "ended by the deadline" allows for: a cancel round trip, the guest's way back,
# a loaded CI machine. Not a speed claim: before the fixes these ran 8-18 s.
SLACK_S = 2.0


def _two_components(tmp_path: Path, db_table: str, *, first: str, second: str) -> Path:
    """A manifest with `caps` and `other` (the same handler), both granted `db`."""
    wasm = build_handler("caps")
    return _manifest(tmp_path, f'sql-databases = ["db"]\n{first}', f"""
{db_table}

[component.other]
source = "{wasm}"
sql-databases = ["db"]
{second}
""")


@pytest.fixture
async def apps() -> AsyncIterator[list[App]]:
    loaded: list[App] = []
    yield loaded
    for app in loaded:
        await app.stop()


async def _send(app: App, component: str = "caps", **msg: Any) -> tuple[int, Any]:
    """The status and JSON body; 504 when the guest itself ran out of time (what an HTTP
    trigger answers for a HandlerTimeout)."""
    event = Event(id=new_event_id(), source="test", type="test", data=json.dumps(msg).encode())
    try:
        response = await app.invoke(component, event)
    except HandlerTimeout:
        return 504, None
    return response.status, json.loads(response.body) if response.status == 200 else None


async def _ends_at_the_deadline(app: App, op: str, statement: str) -> None:
    """``statement`` ends by the deadline; the guest (or, when it was out of time itself,
    the log) is told it was the deadline; the next event is served."""
    started = time.monotonic()
    with structlog.testing.capture_logs() as logs:
        status, body = await _send(app, op=op, db="db", sql=statement)
    took = time.monotonic() - started
    assert took < TIMEOUT_MS / 1000 + SLACK_S, f"ran {took:.1f} s under timeout-ms {TIMEOUT_MS}"
    refusals = [e["error"] for e in logs if e["event"] == "host call refused or failed"]
    assert refusals and "deadline (`timeout-ms`" in refusals[0], logs
    if status == 200:
        assert "deadline (`timeout-ms`" in body["err"], body
    else:
        assert status == 504
    status, body = await _send(app, op="sql-query", db="db", sql="SELECT 41 + 1 AS n")
    assert (status, body) == (200, {"ok": {"columns": ["n"], "rows": [[42]]}})


PG = f'[sql.db]\nbackend = "postgres"\nurl = "{POSTGRES_URL}"\nmax-connections = 1'
SQLITE = '[sql.db]\nbackend = "sqlite"'


# -- PostgreSQL ---------------------------------------------------------------------------------


@pytest.mark.parametrize("statement", [
    "SET statement_timeout = 0; SELECT pg_sleep(8)",
    "SET LOCAL statement_timeout = 0; SELECT pg_sleep(8)",
    "SELECT set_config('statement_timeout', '0', false); SELECT pg_sleep(8)",
])
async def test_postgres_statement_ends_at_the_deadline_whatever_the_guest_sets(
        tmp_path: Path, apps: list[App], statement: str) -> None:
    """Before: `execute` without parameters is a simple query, the guest's SET turned the
    gateway's statement_timeout off, and the event ran 8 s under timeout-ms = 1000."""
    app = App.load(_two_components(tmp_path, PG, first=f"timeout-ms = {TIMEOUT_MS}",
                                   second=""))
    apps.append(app)
    await _ends_at_the_deadline(app, "sql-exec", statement)


async def test_postgres_connection_comes_back_at_the_deadline_for_another_component(
        tmp_path: Path, apps: list[App]) -> None:
    """With one connection: `caps` sleeps past its deadline, `other` (more time) asks for
    the connection meanwhile. Before, the sleep kept it 8 s and `other` got "no connection
    free" at its own deadline."""
    app = App.load(_two_components(tmp_path, PG, first=f"timeout-ms = {TIMEOUT_MS}",
                                   second="timeout-ms = 6000"))
    apps.append(app)
    assert await _send(app, "other", op="sql-query", db="db", sql="SELECT 1 AS n") == \
        (200, {"ok": {"columns": ["n"], "rows": [[1]]}})  # the connection exists

    started = time.monotonic()
    sleeper = asyncio.create_task(_send(app, op="sql-exec", db="db",
                                        sql="SET statement_timeout = 0; SELECT pg_sleep(8)"))
    await asyncio.sleep(0.3)
    status, body = await _send(app, "other", op="sql-query", db="db", sql="SELECT 2 AS n")
    served_after = time.monotonic() - started
    await sleeper
    assert (status, body) == (200, {"ok": {"columns": ["n"], "rows": [[2]]}})
    assert served_after < TIMEOUT_MS / 1000 + SLACK_S, served_after


class CancelSwallowingRelay(LoopbackServer):
    """Relays PostgreSQL connections to the server on 127.0.0.1:5432 but drops cancel
    requests (closing them as the server does once it has one): the statement goes on as
    if it ignored the cancel."""

    _CANCEL_REQUEST = (16).to_bytes(4, "big") + (80877102).to_bytes(4, "big")
    _ENCRYPTION_REQUESTS = frozenset((8).to_bytes(4, "big") + code.to_bytes(4, "big")
                                      for code in (80877103, 80877104))  # SSL, GSSENC

    def __init__(self) -> None:
        self.cancels = 0
        super().__init__()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readexactly(8)
        while head in self._ENCRYPTION_REQUESTS:  # libpq asks first, cancels included
            writer.write(b"N")  # no encryption: the plain startup or cancel follows
            head = await reader.readexactly(8)
        if head == self._CANCEL_REQUEST:
            self.cancels += 1
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", 5432)
        up_writer.write(head)
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pump(source, sink))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while chunk := await source.read(65536):
                sink.write(chunk)
                await sink.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            sink.close()


async def test_postgres_statement_that_outlives_its_cancel_loses_its_connection(
        tmp_path: Path, apps: list[App]) -> None:
    """The cancel request never reaches the server (a statement that ignores it behaves
    the same): 0.5 s past the deadline the gateway closes the connection, the event ends
    (the guest is out of time by then: 504), and the next one gets a new connection."""
    relay = CancelSwallowingRelay()
    port = await relay.start()
    try:
        url = f"postgresql://postgres@127.0.0.1:{port}/test"
        app = App.load(_two_components(
            tmp_path, f'[sql.db]\nbackend = "postgres"\nurl = "{url}"\nmax-connections = 1',
            first=f"timeout-ms = {TIMEOUT_MS}", second=""))
        apps.append(app)
        await _ends_at_the_deadline(app, "sql-exec",
                                    "SET statement_timeout = 0; SELECT pg_sleep(8)")
        assert relay.cancels == 1
    finally:
        await relay.close()


# -- SQLite -------------------------------------------------------------------------------------

# Steps that each took seconds in one VM step: compare the needle at every position.
_BIG = "printf('%.*c', 16000000, 'a')"
_NEEDLE = "printf('%.*c', 40000, 'a') || 'b'"


@pytest.mark.parametrize(("statement", "rows"), [
    (f"SELECT instr({_BIG}, {_NEEDLE}) AS r", [[0]]),
    (f"SELECT length(replace({_BIG}, {_NEEDLE}, 'x')) AS r", [[16000000]]),
    (f"SELECT length(trim({_BIG}, printf('%.*c', 40000, 'b') || 'a')) AS r", [[0]]),
    (f"SELECT length(rtrim('z' || {_BIG}, printf('%.*c', 40000, 'b') || 'a')) AS r", [[1]]),
])
async def test_sqlite_quadratic_string_step_ends_by_the_deadline(
        tmp_path: Path, apps: list[App], statement: str, rows: list[list[int]]) -> None:
    """instr/replace/trim ran 12 s or more (one VM step, no interrupt reaches it) under
    timeout-ms = 1000, holding the database's lock; now they finish, with the same answer."""
    app = App.load(_two_components(tmp_path, SQLITE, first=f"timeout-ms = {TIMEOUT_MS}",
                                   second=""))
    apps.append(app)
    started = time.monotonic()
    status, body = await _send(app, op="sql-query", db="db", sql=statement)
    took = time.monotonic() - started
    assert took < TIMEOUT_MS / 1000 + SLACK_S, f"ran {took:.1f} s"
    assert (status, body) == (200, {"ok": {"columns": ["r"], "rows": rows}})


async def test_sqlite_long_like_pattern_is_refused_naming_the_limit(
        tmp_path: Path, apps: list[App]) -> None:
    """A LIKE compares its pattern at every position within one step: 1000 characters
    against 16 MB ran 14 s. Patterns are limited; the guest is told the limit."""
    app = App.load(_two_components(tmp_path, SQLITE, first=f"timeout-ms = {TIMEOUT_MS}",
                                   second=""))
    apps.append(app)
    started = time.monotonic()
    for op in ("LIKE '%' ||", "GLOB '*' ||"):
        status, body = await _send(app, op="sql-query", db="db", sql=(
            f"SELECT {_BIG} {op} printf('%.*c', 1000, 'a') || 'b' AS r"))
        assert status == 200 and "pattern too complex" in body["err"], body
        assert "100 characters" in body["err"], body
    assert time.monotonic() - started < 2 * (TIMEOUT_MS / 1000 + SLACK_S)
    short = await _send(app, op="sql-query", db="db", sql="SELECT 'abc' LIKE 'A%' AS r")
    assert short == (200, {"ok": {"columns": ["r"], "rows": [[1]]}})


async def test_sqlite_slow_steps_in_a_loop_stop_at_the_deadline(
        tmp_path: Path, apps: list[App]) -> None:
    """Each step builds 16 MB: checking the deadline every 1000 steps let it run 4 s past
    a 2 s deadline. The timer interrupts it at the next step."""
    app = App.load(_two_components(tmp_path, SQLITE, first=f"timeout-ms = {TIMEOUT_MS}",
                                   second=""))
    apps.append(app)
    await _ends_at_the_deadline(app, "sql-query", (
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) "
        "SELECT sum(length(randomblob(16000000))) FROM c"))


async def test_sqlite_other_component_is_served_once_the_deadline_stops_a_statement(
        tmp_path: Path, apps: list[App]) -> None:
    """The database's lock is held while a statement runs: another component waiting for
    it is served once the first statement is stopped at its deadline."""
    app = App.load(_two_components(tmp_path, SQLITE, first=f"timeout-ms = {TIMEOUT_MS}",
                                   second="timeout-ms = 8000"))
    apps.append(app)
    started = time.monotonic()
    runaway = asyncio.create_task(_send(app, op="sql-query", db="db", sql=(
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) "
        f"SELECT sum(instr({_BIG}, {_NEEDLE})) FROM c")))
    await asyncio.sleep(0.3)
    status, body = await _send(app, "other", op="sql-query", db="db", sql="SELECT 3 AS n")
    served_after = time.monotonic() - started
    await runaway
    assert (status, body) == (200, {"ok": {"columns": ["n"], "rows": [[3]]}})
    assert served_after < TIMEOUT_MS / 1000 + SLACK_S, served_after

