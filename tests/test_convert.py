"""The specialised call path (gateway/convert.py) against wasmtime-py's stock conversion.

Both paths run the same events through real components: the componentize-py echo fixture
(whose `mirror` mode returns every event field) and the hand-written WAT echo component.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
import wasmtime
from wasmtime import component as wc

from bindings.host.imports import HostImports
from bindings.host.kv import SqliteKeyValue
from bindings.types import Event, Response
from gateway.convert import (
    EXPECTED_PARAMS,
    EXPECTED_RESULT,
    HandleCall,
    lower_event,
    render_type,
)
from gateway.engine import WasmEngine
from gateway.errors import HandlerReturnedError, HandlerTrap
from gateway.executor import CallPath, InstancePool
from gateway.manifest import ComponentSpec
from tests.fixtures.build import WAT_ECHO, build_handler

BIG = bytes(range(256)) * 256  # 64 KB, every byte value

EVENTS = {
    "minimal": Event(id="", source="", type=""),
    "full": Event(id="e-1", source="kafka://orders", type="order.created", subject="a/mirror",
                  time=1_700_000_000_123_456, content_type="application/json", key=b"k\x00\xff",
                  headers=[("traceparent", "00-abc-01"), ("x-empty", "")],
                  metadata=[("partition", "3"), ("offset", "42")], data=b'{"n": 1}'),
    "non-ascii": Event(id="ü-€-漢", source="nats://ünï", type="tÿpe", subject="ß/😀/mirror",
                       content_type="text/plain; charset=utf-8", key=b"",
                       headers=[("x-ñ", "värde ✓")], metadata=[("ключ", "значение")],
                       data="grüße 🌍".encode()),
    "64 KB": Event(id="big", source="s", type="t", subject="mirror", data=BIG, key=BIG[:300],
                   headers=[(f"h{i}", "v" * i) for i in range(40)]),
}


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WasmEngine]:
    eng = WasmEngine(tmp_path_factory.mktemp("cache"))
    yield eng
    eng.close()


def _pool(engine: WasmEngine, wasm: Path, tmp_path: Path, call_path: CallPath) -> InstancePool:
    spec = msgspec.convert({"source": str(wasm)}, ComponentSpec)
    host = HostImports("echo", {"default": SqliteKeyValue(tmp_path / "kv.sqlite")}, {})
    return InstancePool("echo", spec, engine, engine.load_component(wasm), host.link,
                        call_path=call_path)


@pytest.fixture(scope="module", params=["componentize-py", "wat"])
def pools(request: pytest.FixtureRequest, engine: WasmEngine,
          tmp_path_factory: pytest.TempPathFactory) -> dict[str, InstancePool]:
    wasm = build_handler("echo") if request.param == "componentize-py" else WAT_ECHO
    tmp = tmp_path_factory.mktemp("kv")
    made = {path: _pool(engine, wasm, tmp, path) for path in ("specialised", "stock")}
    # Otherwise the comparison below could be the stock path against itself.
    assert made["specialised"].call_path == "specialised"
    assert made["stock"].call_path == "stock"
    return made


def _expected(event: Event, mirror: bool) -> Response:
    if not mirror:  # the echo logic both components share
        return Response(status=200, headers=[("x-subject", event.subject)],
                        body=b"echo:" + event.data)
    fields = [("id", event.id), ("source", event.source), ("type", event.type),
              ("subject", event.subject), ("time", str(event.time)),
              ("content-type", repr(event.content_type)),
              ("key", "none" if event.key is None else event.key.hex())]
    fields += [("h:" + k, v) for k, v in event.headers]
    fields += [("m:" + k, v) for k, v in event.metadata]
    return Response(status=200, headers=fields, body=event.data)


@pytest.mark.parametrize("name", list(EVENTS))
async def test_both_paths_give_the_same_response(pools: dict[str, InstancePool],
                                                 name: str) -> None:
    event = EVENTS[name]
    # Only the componentize-py fixture (a .wasm) has the mirror mode; the WAT one echoes.
    mirror = event.subject.endswith("mirror") and pools["stock"].spec.source.endswith(".wasm")
    fast = await pools["specialised"].call(event)
    stock = await pools["stock"].call(event)
    assert fast == stock
    assert fast == _expected(event, mirror)


async def test_err_and_trap_are_the_same_on_both_paths(pools: dict[str, InstancePool]) -> None:
    for pool in pools.values():
        with pytest.raises(HandlerReturnedError, match="handler said no"):
            await pool.call(Event(id="1", source="s", type="t", subject="err"))
        with pytest.raises(HandlerTrap):
            await pool.call(Event(id="1", source="s", type="t", subject="trap"))
        # A pooled instance is replaced after the trap and the next event is served.
        assert (await pool.call(Event(id="2", source="s", type="t", data=b"x"))).body == b"echo:x"


def test_bad_strings_fail_before_the_guest_runs() -> None:
    # A lone surrogate cannot be UTF-8 encoded; Rust would abort on invalid UTF-8, so the
    # specialised path must refuse it in Python, as the stock path does.
    with pytest.raises(UnicodeEncodeError):
        lower_event(Event(id="\ud800", source="s", type="t"))


def test_signature_check_rejects_another_shape() -> None:
    engine = wasmtime.Engine()
    other = wc.Component(engine, """(component
      (core module $m (func (export "h") (param i32) (result i32) local.get 0))
      (core instance $i (instantiate $m))
      (func (export "handle") (param "x" u32) (result u32) (canon lift (core func $i "h"))))""")
    store = wasmtime.Store(engine)
    func = wc.Linker(engine).instantiate(store, other).get_func(store, "handle")
    assert func is not None
    assert HandleCall.for_func(func, store) is None


def test_expected_signature_matches_the_wat_fixture() -> None:
    engine = wasmtime.Engine()
    store = wasmtime.Store(engine)
    instance = wc.Linker(engine).instantiate(store, wc.Component.from_file(engine, WAT_ECHO))
    func = instance.get_func(store, "handle")
    assert func is not None
    fty = func.type(store)
    assert render_type(fty.params[0][1]) == EXPECTED_PARAMS
    assert fty.result is not None and render_type(fty.result) == EXPECTED_RESULT


@pytest.mark.parametrize(("env", "expected"), [(None, "specialised"), ("stock", "stock")])
def test_call_path_escape_hatch(engine: WasmEngine, tmp_path: Path,
                                monkeypatch: pytest.MonkeyPatch, env: str | None,
                                expected: CallPath) -> None:
    if env is None:
        monkeypatch.delenv("WASMGATE_CALL_PATH", raising=False)
    else:
        monkeypatch.setenv("WASMGATE_CALL_PATH", env)
    spec = msgspec.convert({"source": str(WAT_ECHO)}, ComponentSpec)
    pool = InstancePool("echo", spec, engine, engine.load_component(WAT_ECHO), lambda _: None)
    assert pool.call_path == expected
