"""The fast host-call path (bindings/host/trampolines.py) against wasmtime-py's stock one,
through real components: the caps fixture drives every kv op, config and log, and the echo
fixture its counter; both paths must give the guest the same values, errors and traps."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import structlog

from bindings.host.imports import HostCallPath, HostImports
from bindings.host.kv import KeyValueStore, SqliteKeyValue
from bindings.types import Event
from gateway.engine import WasmEngine
from gateway.executor import InstancePool
from gateway.manifest import ComponentSpec
from gateway.redaction import SecretRedactor
from tests.fixtures.build import build_handler

pytestmark = pytest.mark.wasm

PATHS: tuple[HostCallPath, ...] = ("fast", "stock")


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WasmEngine]:
    eng = WasmEngine(tmp_path_factory.mktemp("cache"))
    yield eng
    eng.close()


def _pool(engine: WasmEngine, handler: str, path: HostCallPath, stores: dict[str, Any],
          variables: dict[str, str] | None = None) -> InstancePool:
    wasm = build_handler(handler)
    spec = msgspec.convert({"source": str(wasm)}, ComponentSpec)
    host = HostImports(handler, stores, variables or {}, host_calls=path,
                       redactor=SecretRedactor(["s3cr3t"]))
    return InstancePool(handler, spec, engine, engine.load_component(wasm), host.link)


async def _caps(pool: InstancePool, **msg: Any) -> Any:
    response = await pool.call(Event(id="ev-1", source="test", type="t",
                                     data=json.dumps(msg).encode()))
    assert response.status == 200
    return json.loads(response.body)


# Every kv op with its edge cases (missing key, empty and binary-ish values, ttl, prefix
# listing, negative delta, not-an-integer, over-limit value, ungranted store), config
# present/absent, and log at each level.
SCRIPT: list[dict[str, Any]] = [
    {"op": "kv-get", "store": "default", "key": "absent"},
    {"op": "kv-set", "store": "default", "key": "a/1", "value": "één"},
    {"op": "kv-set", "store": "default", "key": "a/2", "value": "", "ttl": 60_000},
    {"op": "kv-set", "store": "default", "key": "b/1", "value": "x" * 5000},
    {"op": "kv-get", "store": "default", "key": "a/1"},
    {"op": "kv-get", "store": "default", "key": "a/2"},
    {"op": "kv-get", "store": "default", "key": "b/1"},
    {"op": "kv-exists", "store": "default", "key": "a/1"},
    {"op": "kv-exists", "store": "default", "key": "nope"},
    {"op": "kv-list", "store": "default", "prefix": "a/"},
    {"op": "kv-list", "store": "default", "prefix": "zzz"},
    {"op": "kv-incr", "store": "default", "key": "n", "by": -(1 << 40)},
    {"op": "kv-incr", "store": "default", "key": "n", "by": 3},
    {"op": "kv-incr", "store": "default", "key": "a/1"},
    {"op": "kv-delete", "store": "default", "key": "a/1"},
    {"op": "kv-exists", "store": "default", "key": "a/1"},
    {"op": "kv-get", "store": "other", "key": "k"},
    {"op": "kv-set", "store": "default", "key": "big", "value": "x" * (1 << 20 | 1)},
    {"op": "config", "name": "greeting"},
    {"op": "config", "name": "missing"},
    {"op": "log", "message": "plain line"},
    {"op": "log", "level": "warn", "message": "token s3cr3t leaked?"},
    {"op": "log", "level": "error", "message": "ünïcode"},
    {"op": "log", "level": "debug", "message": ""},
]


async def _run_script(engine: WasmEngine, path: HostCallPath,
                      tmp_path: Path) -> tuple[list[Any], list[dict[str, Any]]]:
    kv = SqliteKeyValue(tmp_path / f"{path}.sqlite")
    pool = _pool(engine, "caps", path, {"default": kv}, {"greeting": "hallo"})
    with structlog.testing.capture_logs() as logs:
        results = [await _caps(pool, **msg) for msg in SCRIPT]
    return results, logs


async def test_fast_and_stock_host_calls_give_the_guest_the_same_values(
        engine: WasmEngine, tmp_path: Path) -> None:
    fast, fast_logs = await _run_script(engine, "fast", tmp_path)
    stock, stock_logs = await _run_script(engine, "stock", tmp_path)
    assert fast == stock
    assert fast_logs == stock_logs
    by_op = dict(zip((json.dumps(m) for m in SCRIPT), fast, strict=True))

    def result(**msg: Any) -> Any:
        return by_op[json.dumps(msg)]

    assert result(op="kv-get", store="default", key="absent") == {"ok": None}
    assert result(op="kv-get", store="default", key="a/1") == {"ok": "één"}
    assert result(op="kv-get", store="default", key="a/2") == {"ok": ""}
    assert result(op="kv-get", store="default", key="b/1") == {"ok": "x" * 5000}
    assert result(op="kv-list", store="default", prefix="a/") == {"ok": ["a/1", "a/2"]}
    assert result(op="kv-list", store="default", prefix="zzz") == {"ok": []}
    assert result(op="kv-incr", store="default", key="n", by=3) == {"ok": 3 - (1 << 40)}
    assert "not an ASCII decimal integer" in result(op="kv-incr", store="default",
                                                    key="a/1")["err"]
    assert result(op="kv-exists", store="default", key="nope") == {"ok": False}
    assert fast[SCRIPT.index({"op": "kv-exists", "store": "default", "key": "a/1"})] == \
        {"ok": True}
    assert fast[15] == {"ok": False}  # exists after delete
    assert "no grant for key-value store `other`" in result(
        op="kv-get", store="other", key="k")["err"]
    assert result(op="config", name="greeting") == {"ok": "hallo"}
    assert result(op="config", name="missing") == {"ok": None}
    guest_lines = [(e["log_level"], e["event"]) for e in fast_logs
                   if e.get("component") == "caps" and e["event"] != "host call refused "
                   "or failed"]
    assert guest_lines == [("info", "plain line"), ("warning", "token *** leaked?"),
                           ("error", "ünïcode"), ("debug", "")]


@pytest.mark.parametrize("path", PATHS)
async def test_echo_counter_through_both_paths(engine: WasmEngine, tmp_path: Path,
                                               path: HostCallPath) -> None:
    kv = SqliteKeyValue(tmp_path / "kv.sqlite")
    pool = _pool(engine, "echo", path, {"default": kv}, {"greeting": "hallo"})

    async def body(subject: str) -> tuple[int, bytes]:
        response = await pool.call(Event(id="e", source="t", type="t", subject=subject))
        return response.status, response.body

    assert [await body("count") for _ in range(3)] == [(200, b"1"), (200, b"2"),
                                                       (200, b"3")]
    assert kv.get("hits") == b"3"
    status, refusal = await body("forbidden")
    assert status == 403 and b"no grant for key-value store `secret`" in refusal


class _BrokenStore:
    """A store whose backend fails with something other than a WasmgateError."""

    def get(self, key: str) -> bytes | None:
        raise RuntimeError(f"backend exploded on {key}")

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(name)


@pytest.mark.parametrize("path", PATHS)
async def test_an_unexpected_host_exception_reaches_the_caller(
        engine: WasmEngine, path: HostCallPath) -> None:
    store: KeyValueStore = _BrokenStore()  # type: ignore[assignment]
    pool = _pool(engine, "caps", path, {"default": store})
    with pytest.raises(RuntimeError, match="backend exploded on k"):
        await _caps(pool, op="kv-get", store="default", key="k")
    # The trapped instance was dropped; the next event gets a fresh one and works.
    assert await _caps(pool, op="config", name="x") == {"ok": None}
