"""Each event starts on a clean PostgreSQL session, through a real component
(tests/fixtures/handlers/caps): pooled connections are shared by every component granted
the database, so whatever one event leaves on its session (temp tables, settings, locks,
prepared statements, the role) must not reach the next event, another component's.

Both components share one connection (`max-connections = 1`), so each test would see the
state if it carried over.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from bindings.types import Event, new_event_id
from gateway.app import App
from tests.fixtures.build import build_handler
from tests.test_capabilities import POSTGRES_URL, _manifest

pytestmark = pytest.mark.wasm


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[App]:
    wasm = build_handler("caps")
    loaded = App.load(_manifest(tmp_path, 'sql-databases = ["db"]', f"""
[sql.db]
backend = "postgres"
url = "{POSTGRES_URL}"
max-connections = 1

[component.other]
source = "{wasm}"
sql-databases = ["db"]
"""))
    yield loaded
    await loaded.stop()


async def _call(app: App, component: str, **msg: Any) -> Any:
    event = Event(id=new_event_id(), source="test", type="test", data=json.dumps(msg).encode())
    response = await app.invoke(component, event)
    assert response.status == 200
    return json.loads(response.body)


async def _rows(app: App, component: str, statement: str) -> Any:
    result = await _call(app, component, op="sql-query", db="db", sql=statement)
    assert "ok" in result, result
    return result["ok"]["rows"]


def _fresh(statement: str) -> Any:
    """What a brand-new session answers."""
    with psycopg.connect(POSTGRES_URL, autocommit=True) as pg:
        return [list(r) for r in pg.execute(statement).fetchall()]


@pytest.fixture
def orders() -> Iterator[str]:
    """A real table `public.<name>` holding one real order."""
    name = f"wasmgate_orders_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as pg:
        pg.execute(f"CREATE TABLE public.{name} (item text)")
        pg.execute(f"INSERT INTO public.{name} VALUES ('real')")
    yield name
    with psycopg.connect(POSTGRES_URL, autocommit=True) as pg:
        pg.execute(f"DROP TABLE IF EXISTS public.{name}")


async def test_temp_table_does_not_shadow_a_table_for_the_next_event(app: App,
                                                                     orders: str) -> None:
    """A temp table is found before `public` on the search path: the next component read
    the forged row instead of the real one."""
    planted = await _call(app, "caps", op="sql-exec", db="db", sql=(
        f"CREATE TEMP TABLE {orders} (item text); INSERT INTO {orders} VALUES ('forged')"))
    assert "ok" in planted, planted
    assert await _rows(app, "other", f"SELECT item FROM {orders}") == [["real"]]


async def test_read_only_default_does_not_reach_the_next_event(app: App, orders: str) -> None:
    await _call(app, "caps", op="sql-exec", db="db",
                sql="SET default_transaction_read_only = on")
    written = await _call(app, "other", op="sql-exec", db="db",
                          sql=f"INSERT INTO {orders} VALUES ('new')")
    assert written == {"ok": 1}


@pytest.mark.parametrize(("setting", "changed"), [
    ("TimeZone", "Pacific/Chatham"),
    ("search_path", "pg_catalog"),
    ("DateStyle", "SQL, DMY"),
    ("application_name", "forged"),
])
async def test_settings_do_not_reach_the_next_event(app: App, setting: str,
                                                    changed: str) -> None:
    await _call(app, "caps", op="sql-exec", db="db", sql=f"SET {setting} = '{changed}'")
    assert await _rows(app, "other", f"SHOW {setting}") == _fresh(f"SHOW {setting}")


async def test_role_does_not_reach_the_next_event(app: App) -> None:
    role = "wasmgate_app_test"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as pg:
        if not pg.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role]).fetchone():
            pg.execute(f"CREATE ROLE {role} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE")
    assert await _call(app, "caps", op="sql-exec", db="db", sql=f"SET ROLE {role}") == \
        {"ok": 0}
    assert await _rows(app, "other", "SELECT current_user") == [["postgres"]]


async def test_advisory_lock_is_released_when_the_event_ends(app: App) -> None:
    """A session-level advisory lock outlived the event: every other event and process
    waiting on that lock would wait for as long as the pool kept the connection."""
    key = int(uuid.uuid4().int % 2**31)
    await _call(app, "caps", op="sql-query", db="db", sql=f"SELECT pg_advisory_lock({key})")
    held = await _rows(app, "other", "SELECT count(*) FROM pg_locks WHERE locktype = "
                       f"'advisory' AND objid = {key} AND pid = pg_backend_pid()")
    assert held == [[0]]
    with psycopg.connect(POSTGRES_URL, autocommit=True) as pg:
        row = pg.execute(f"SELECT pg_try_advisory_lock({key})").fetchone()
        assert row == (True,)
        pg.execute(f"SELECT pg_advisory_unlock({key})")


async def test_prepared_statement_does_not_reach_the_next_event(app: App) -> None:
    await _call(app, "caps", op="sql-exec", db="db", sql="PREPARE forged AS SELECT 'forged'")
    assert await _rows(app, "other", "SELECT count(*) FROM pg_prepared_statements") == [[0]]
    ran = await _call(app, "other", op="sql-query", db="db", sql="EXECUTE forged")
    assert "forged" in ran["err"] and "does not exist" in ran["err"], ran


async def test_open_transaction_does_not_reach_the_next_event(app: App, orders: str) -> None:
    """A BEGIN left open: the next event's write would join that transaction and never
    be committed (another session would not see it)."""
    assert await _call(app, "caps", op="sql-exec", db="db", sql="BEGIN") == {"ok": 0}
    written = await _call(app, "other", op="sql-exec", db="db",
                          sql=f"INSERT INTO {orders} VALUES ('x')")
    assert written == {"ok": 1}
    assert _fresh(f"SELECT count(*) FROM {orders}") == [[2]]


async def test_a_statement_repeated_many_times_still_runs(app: App) -> None:
    """psycopg prepares a statement on the server after 5 runs and reuses it by name; the
    session reset drops it on the server, and the 11th run failed with `prepared statement
    "_pg3_0" does not exist`."""
    result = await _call(app, "caps", op="sql-query", db="db", sql="SELECT $1::int AS n",
                         params=[7], times=20)
    assert result == {"ok": {"columns": ["n"], "rows": [[7]]}}
    assert await _call(app, "other", op="sql-exec", db="db", sql="SELECT $1::int",
                       params=[1], times=20) == {"ok": 1}
