"""The key-value backends behind the kv host import: the SQLite store directly, and both
backends' store quota and the Redis deadline through a real component."""

from __future__ import annotations

import asyncio
import json
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bindings.host.kv import KeyValueError, SqliteKeyValue
from gateway.errors import WasmgateError


class FakeClock:
    def __init__(self, start: int = 1_000_000) -> None:
        self.now = start

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteKeyValue]:
    kv = SqliteKeyValue(tmp_path / "nested" / "dir" / "kv.sqlite", name="test")
    yield kv
    kv.close()


def test_get_set_delete_exists(store: SqliteKeyValue) -> None:
    assert store.get("a") is None
    assert not store.exists("a")
    store.set("a", b"1")
    assert store.get("a") == b"1"
    assert store.exists("a")
    store.set("a", b"\x00\xffbinary")
    assert store.get("a") == b"\x00\xffbinary"
    store.delete("a")
    assert store.get("a") is None
    assert not store.exists("a")
    store.delete("a")  # deleting a missing key is fine


def test_creates_parent_dirs_and_wal(tmp_path: Path) -> None:
    path = tmp_path / "x" / "y" / "kv.sqlite"
    with SqliteKeyValue(path) as kv:
        kv.set("k", b"v")
    assert path.is_file()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()


def test_list_keys_prefix_is_literal(store: SqliteKeyValue) -> None:
    for key in ["user:2", "user:1", "users", "user%x", "user_y", "userZ", "USER:3", "other"]:
        store.set(key, b"v")
    assert store.list_keys("user:") == ["user:1", "user:2"]
    assert store.list_keys("user%") == ["user%x"]
    assert store.list_keys("user_") == ["user_y"]
    assert store.list_keys("user") == ["user%x", "user:1", "user:2", "userZ", "user_y", "users"]
    assert store.list_keys("") == sorted(
        ["user:2", "user:1", "users", "user%x", "user_y", "userZ", "USER:3", "other"]
    )
    assert store.list_keys("nope") == []


def test_list_keys_unicode_prefix(store: SqliteKeyValue) -> None:
    store.set("héllo/1", b"v")
    store.set("héllo/2", b"v")
    store.set("hello/3", b"v")
    assert store.list_keys("hé") == ["héllo/1", "héllo/2"]


def test_increment(store: SqliteKeyValue) -> None:
    assert store.increment("n", 5) == 5
    assert store.increment("n", -7) == -2
    assert store.get("n") == b"-2"
    store.set("m", b"41")
    assert store.increment("m", 1) == 42


def test_increment_non_integer(store: SqliteKeyValue) -> None:
    store.set("s", b"hello")
    with pytest.raises(KeyValueError, match=r"cannot increment key 's'.*not an ASCII decimal"):
        store.increment("s", 1)
    assert store.get("s") == b"hello"
    # the store is still usable after the failed transaction
    assert store.increment("t", 1) == 1


def test_increment_is_atomic_across_threads(store: SqliteKeyValue) -> None:
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            barrier.wait()
            for _ in range(200):
                store.increment("counter", 1)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert store.get("counter") == b"1600"


def test_ttl_expiry_with_fake_clock(tmp_path: Path) -> None:
    clock = FakeClock()
    with SqliteKeyValue(tmp_path / "kv.sqlite", now_ms=clock) as kv:
        kv.set("session", b"abc", ttl_ms=1000)
        kv.set("forever", b"x")
        clock.now += 999
        assert kv.get("session") == b"abc"
        assert kv.exists("session")
        assert kv.list_keys("") == ["forever", "session"]
        clock.now += 1
        assert kv.get("session") is None
        assert not kv.exists("session")
        assert kv.list_keys("") == ["forever"]
        # an expired counter restarts from zero
        kv.set("hits", b"10", ttl_ms=10)
        clock.now += 10
        assert kv.increment("hits", 1) == 1
        assert kv.purge_expired() == 1  # "session"; "hits" was rewritten without a ttl
        # setting again without ttl clears the expiry
        kv.set("x", b"1", ttl_ms=5)
        kv.set("x", b"2")
        clock.now += 100
        assert kv.get("x") == b"2"


def test_ttl_must_be_positive(store: SqliteKeyValue) -> None:
    with pytest.raises(KeyValueError, match="positive"):
        store.set("k", b"v", ttl_ms=0)


def test_value_too_large(tmp_path: Path) -> None:
    with SqliteKeyValue(tmp_path / "kv.sqlite", name="cache", max_value_bytes=16) as kv:
        kv.set("ok", b"x" * 16)
        with pytest.raises(KeyValueError) as info:
            kv.set("big", b"x" * 17)
    message = str(info.value)
    assert "'cache'" in message
    assert "'big'" in message
    assert "17 bytes" in message
    assert "16 bytes" in message
    assert isinstance(info.value, WasmgateError)


def test_key_too_large(store: SqliteKeyValue) -> None:
    store.set("k" * 1024, b"v")
    with pytest.raises(KeyValueError, match=r"1025 bytes.*limit of 1024"):
        store.set("k" * 1025, b"v")
    with pytest.raises(KeyValueError, match=r"1026 bytes"):
        store.get("é" * 513)


def test_persistence_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "kv.sqlite"
    with SqliteKeyValue(path) as kv:
        kv.set("a", b"1")
        kv.increment("n", 3)
    with SqliteKeyValue(path) as kv:
        assert kv.get("a") == b"1"
        assert kv.increment("n", 1) == 4
        assert kv.list_keys("") == ["a", "n"]


def test_closed_store_raises(tmp_path: Path) -> None:
    kv = SqliteKeyValue(tmp_path / "kv.sqlite", name="gone")
    kv.close()
    kv.close()
    with pytest.raises(KeyValueError, match="'gone' is closed"):
        kv.get("a")


# -- the store's quota ---------------------------------------------------------------------


def test_store_quota_counts_keys_and_values_and_frees_on_delete(tmp_path: Path) -> None:
    with SqliteKeyValue(tmp_path / "kv.sqlite", name="cache", max_total_bytes=100) as kv:
        kv.set("a", b"x" * 49)  # 50 bytes with its key
        kv.set("a", b"x" * 9)  # replacing a value gives the old bytes back: 10
        kv.set("b", b"x" * 89)  # 100: exactly full
        with pytest.raises(KeyValueError) as info:
            kv.set("c", b"")
        kv.delete("b")
        kv.set("c", b"x" * 89)
        assert kv.usage_bytes() == 100
    message = str(info.value)
    assert "'cache'" in message and "101 bytes" in message
    assert "`max-total-bytes` of [key-value.cache]" in message


def test_store_quota_is_shared_by_every_opener_and_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "kv.sqlite"
    with SqliteKeyValue(path, max_total_bytes=100) as first, \
            SqliteKeyValue(path, max_total_bytes=100) as second:
        first.set("a", b"x" * 59)
        with pytest.raises(KeyValueError, match="max-total-bytes"):
            second.set("b", b"x" * 59)
        assert second.increment("n", 12) == 12
    with SqliteKeyValue(path, max_total_bytes=100) as kv:
        assert kv.usage_bytes() == 60 + 3


def test_store_quota_purges_expired_keys_before_refusing(tmp_path: Path) -> None:
    clock = FakeClock()
    with SqliteKeyValue(tmp_path / "kv.sqlite", max_total_bytes=100, now_ms=clock) as kv:
        kv.set("old", b"x" * 90, ttl_ms=1000)
        with pytest.raises(KeyValueError, match="max-total-bytes"):
            kv.set("new", b"x" * 90)
        clock.now += 1000
        kv.set("new", b"x" * 90)
        assert kv.get("new") == b"x" * 90 and kv.usage_bytes() == 93


def test_store_quota_counts_what_an_older_file_already_holds(tmp_path: Path) -> None:
    path = tmp_path / "kv.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE kv (key TEXT PRIMARY KEY, value BLOB NOT NULL, "
                 "expires_at INTEGER NULL)")
    conn.execute("INSERT INTO kv VALUES ('é', x'00112233', NULL)")
    conn.commit()
    conn.close()
    with SqliteKeyValue(path, max_total_bytes=10) as kv:
        assert kv.usage_bytes() == 2 + 4
        with pytest.raises(KeyValueError, match="max-total-bytes"):
            kv.set("k", b"x" * 4)


# -- through a real component: quota on both backends, the deadline on Redis -----------------


def _kv_caller(app: Any) -> Any:
    async def call(**msg: Any) -> Any:
        from bindings.types import Event, new_event_id

        event = Event(id=new_event_id(), source="t", type="t", data=json.dumps(msg).encode())
        response = await app.invoke("caps", event)
        return response.status, json.loads(response.body) if response.status == 200 else None
    return call


@pytest.mark.wasm
@pytest.mark.parametrize("backend", ["sqlite", "redis"])
async def test_component_writes_stop_at_the_store_quota(tmp_path: Path, backend: str) -> None:
    from gateway.app import App
    from tests.test_capabilities import REDIS_URL, _manifest

    prefix = f"quota-{uuid.uuid4().hex[:8]}:"
    where = f'url = "{REDIS_URL}"\nprefix = "{prefix}"' if backend == "redis" else ""
    app = App.load(_manifest(tmp_path, 'key-value-stores = ["small"]', f"""
[key-value.small]
backend = "{backend}"
{where}
max-value-bytes = 1000
max-total-bytes = 2500
"""))
    call = _kv_caller(app)
    try:
        for i in range(2):  # 2 x (2 + 1000) bytes
            assert await call(op="kv-set", store="small", key=f"k{i}", value="x" * 1000) == \
                (200, {"ok": True})
        status, full = await call(op="kv-set", store="small", key="k2", value="x" * 1000)
        assert status == 200
        assert "over the limit of 2500 bytes" in full["err"]
        assert "`max-total-bytes` of [key-value.small]" in full["err"]
        _, big = await call(op="kv-set", store="small", key="big", value="x" * 1001)
        assert "`max-value-bytes` of [key-value.small]" in big["err"]
        assert await call(op="kv-delete", store="small", key="k0") == (200, {"ok": True})
        assert await call(op="kv-set", store="small", key="k2", value="x" * 1000) == \
            (200, {"ok": True})
        _, keys = await call(op="kv-list", store="small")
        assert keys == {"ok": ["k1", "k2"]}
    finally:
        await app.stop()
        if backend == "redis":
            _drop_redis_keys(prefix)


@pytest.fixture
def silent_redis() -> Iterator[str]:
    """A TCP server that accepts connections and never answers, like a stuck Redis."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"redis://127.0.0.1:{server.getsockname()[1]}/0"
    stop.set()
    thread.join()
    for conn in accepted:
        conn.close()
    server.close()


@pytest.mark.wasm
async def test_component_redis_call_is_bounded_by_the_deadline(tmp_path: Path,
                                                               silent_redis: str) -> None:
    import structlog

    from gateway.app import App
    from tests.test_capabilities import _manifest

    app = App.load(_manifest(tmp_path, 'key-value-stores = ["stuck"]\ntimeout-ms = 1000\n'
                             "max-instances = 1", f"""
[key-value.stuck]
backend = "redis"
url = "{silent_redis}"
"""))
    call = _kv_caller(app)
    try:
        started = time.monotonic()
        with structlog.testing.capture_logs() as logs:
            status, body = await call(op="kv-get", store="stuck", key="k")
        # A hang guard, not a speed claim: the client's own socket timeout is 5 s.
        assert time.monotonic() - started < 3.0
        refusals = [e["error"] for e in logs if e["event"] == "host call refused or failed"]
        assert refusals and "before the event's deadline (`timeout-ms`" in refusals[0]
        if status == 200:
            assert "deadline" in body["err"]
        else:
            assert status == 504  # the guest itself ran out of time on its way back
        # The slot came back: the next event is served.
        assert await call(op="config", name="greeting") == (200, {"ok": "hello"})
    finally:
        await app.stop()


@pytest.mark.wasm
async def test_component_sqlite_kv_call_is_bounded_by_the_deadline(tmp_path: Path) -> None:
    import structlog

    from gateway.app import App
    from tests.test_capabilities import _manifest

    app = App.load(_manifest(tmp_path, 'key-value-stores = ["default"]\ntimeout-ms = 1000\n'
                             "max-instances = 1"))
    call = _kv_caller(app)
    store = app.capabilities.store("default")
    assert await call(op="kv-set", store="default", key="k", value="v") == (200, {"ok": True})
    try:
        # Another call of this process holds the store (a slow write, say) past the deadline.
        store._lock.acquire()
        started = time.monotonic()
        with structlog.testing.capture_logs() as logs:
            # Before the fix the call waited for the lock for ever: fail instead of hanging.
            status, body = await asyncio.wait_for(
                call(op="kv-get", store="default", key="k"), 5)
        # A hang guard, not a speed claim.
        assert time.monotonic() - started < 3.0
        refusals = [e["error"] for e in logs if e["event"] == "host call refused or failed"]
        assert refusals and "deadline (`timeout-ms`) passed while waiting" in refusals[0]
        assert status == 504 or "deadline" in body["err"]
    finally:
        store._lock.release()
    assert await call(op="kv-get", store="default", key="k") == (200, {"ok": "v"})
    await app.stop()


# -- one store's grant does not reach another's data ------------------------------------------


@pytest.mark.wasm
async def test_stores_whose_data_overlap_are_refused_and_apart_they_stay_apart(
        tmp_path: Path) -> None:
    """Under the default prefixes store `a:b`'s keys were store `a`'s keys `b:<key>`: a
    component granted only `a` read and deleted them (and list-keys raised a raw
    UnicodeDecodeError on `a:b`'s accounting keys). Such a manifest is refused at load; with
    a prefix of its own each store keeps to itself."""
    from gateway.app import App
    from gateway.errors import ConfigError
    from tests.test_capabilities import REDIS_URL, _manifest

    app_name = f"kv-{uuid.uuid4().hex[:8]}"
    stores = f"""
[key-value.a]
backend = "redis"
url = "{REDIS_URL}"
prefix = "{app_name}:a:"
[key-value."a:b"]
backend = "redis"
url = "{REDIS_URL}"
"""
    with pytest.raises(ConfigError) as info:
        App.load(_manifest(tmp_path, 'key-value-stores = ["a"]', stores.replace(
            '"a:b"]', '"a:b"]\nprefix = "' + app_name + ':a:b:"')))
    assert "key-value.a:b.prefix" in str(info.value)
    assert "a component granted `a` would reach them" in str(info.value)

    app = App.load(_manifest(tmp_path, 'key-value-stores = ["a"]', stores + (
        f'prefix = "{app_name}:ab:"\n')))
    call = _kv_caller(app)
    try:
        store_ab = app.capabilities.store("a:b")
        store_ab.set("secret", b"only-for-ab")
        assert await call(op="kv-get", store="a", key="b:secret") == (200, {"ok": None})
        assert await call(op="kv-list", store="a") == (200, {"ok": []})
        assert store_ab.get("secret") == b"only-for-ab"
    finally:
        await app.stop()
        import redis

        client = redis.Redis.from_url(REDIS_URL)
        for key in client.scan_iter(match=f"{app_name}:*"):
            client.delete(key)
        client.close()


@pytest.mark.parametrize(("tables", "field"), [
    ('[key-value.a]\npath = "x.sqlite"\n[key-value.b]\npath = "./x.sqlite"', "key-value.b.path"),
    ('[sql.s]\npath = ".wasmgate/default.sqlite"', "sql.s.path"),
    ('[key-value.a]\npath = "d/kv.sqlite"\n[sql.s]\npath = "d/../d/kv.sqlite"', "sql.s.path"),
])
def test_two_grants_on_one_sqlite_file_are_refused_at_load(tmp_path: Path, tables: str,
                                                           field: str) -> None:
    """A SQL grant on the key-value store's file read it as a table, whatever the
    authorizer refuses; two stores on one file shared their keys."""
    from gateway.errors import ConfigError
    from gateway.manifest import load_manifest

    path = tmp_path / "wasmgate.toml"
    path.write_text(f'[application]\nname = "kv"\n{tables}\n')
    with pytest.raises(ConfigError) as info:
        load_manifest(path)
    assert field in str(info.value) and "are the same SQLite file" in str(info.value)


@pytest.mark.wasm
@pytest.mark.parametrize("backend", ["sqlite", "redis"])
async def test_a_ttl_past_the_longest_supported_is_a_clear_error(tmp_path: Path,
                                                                 backend: str) -> None:
    """A u64 ttl-ms past 2^63: SQLite's expiry overflowed (a raw OverflowError, logged as a
    gateway bug) and Redis's script answered "value is not an integer or out of range"."""
    from bindings.host.kv import MAX_TTL_MS
    from gateway.app import App
    from tests.test_capabilities import REDIS_URL, _manifest

    prefix = f"ttl-{uuid.uuid4().hex[:8]}:"
    where = f'url = "{REDIS_URL}"\nprefix = "{prefix}"' if backend == "redis" else ""
    app = App.load(_manifest(tmp_path, 'key-value-stores = ["s"]',
                             f'[key-value.s]\nbackend = "{backend}"\n{where}\n'))
    call = _kv_caller(app)
    try:
        for ttl in (2**64 - 1, MAX_TTL_MS + 1):
            _, result = await call(op="kv-set", store="s", key="k", value="v", ttl=ttl)
            assert result == {"err": f"key-value store 's': ttl for key 'k' is {ttl} ms, over "
                                     f"the longest supported, {MAX_TTL_MS} ms (100 years); "
                                     "pass none to keep the key"}
        assert await call(op="kv-set", store="s", key="k", value="v", ttl=MAX_TTL_MS) == \
            (200, {"ok": True})
        assert await call(op="kv-get", store="s", key="k") == (200, {"ok": "v"})
    finally:
        await app.stop()
        if backend == "redis":
            _drop_redis_keys(prefix)


def _drop_redis_keys(prefix: str) -> None:
    """Remove what a test wrote under ``prefix`` on the shared Redis."""
    import redis

    from tests.test_capabilities import REDIS_URL

    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter(match=f"{prefix}*"):
        client.delete(key)
    client.close()
