"""The SQLite key-value backend behind the kv host import."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

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
