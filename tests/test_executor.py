"""The executor against a real componentize-py component (tests/fixtures/handlers/echo)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from bindings.host.imports import HostImports
from bindings.host.kv import SqliteKeyValue
from bindings.types import Event
from gateway.engine import WasmEngine
from gateway.errors import (
    AdmissionTimeout,
    ComponentNotFound,
    HandlerReturnedError,
    HandlerTimeout,
    HandlerTrap,
)
from gateway.executor import InstancePool
from gateway.manifest import ComponentSpec
from tests.fixtures.build import build_handler


@pytest.fixture(scope="module")
def echo_wasm() -> Path:
    return build_handler("echo")


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WasmEngine]:
    eng = WasmEngine(tmp_path_factory.mktemp("cache"))
    yield eng
    eng.close()


def _pool(engine: WasmEngine, wasm: Path, tmp_path: Path, **spec: object) -> InstancePool:
    fields = {k.replace("_", "-"): v for k, v in spec.items()}
    component_spec = msgspec.convert({"source": str(wasm), **fields}, ComponentSpec)
    kv = SqliteKeyValue(tmp_path / "kv.sqlite")
    host = HostImports("echo", {"default": kv}, {"greeting": "hallo"})
    return InstancePool("echo", component_spec, engine, engine.load_component(wasm), host.link)


def _ev(subject: str, data: bytes = b"") -> Event:
    return Event(id="e1", source="test", type="t", subject=subject, data=data)


async def test_echo_round_trip(engine: WasmEngine, echo_wasm: Path, tmp_path: Path) -> None:
    pool = _pool(engine, echo_wasm, tmp_path)
    response = await pool.call(_ev("hi", b"payload"))
    assert response.status == 200
    assert response.body == b"echo:payload"
    assert response.headers == [("x-subject", "hi")]


async def test_kv_counter_and_config(engine: WasmEngine, echo_wasm: Path, tmp_path: Path) -> None:
    pool = _pool(engine, echo_wasm, tmp_path)
    assert (await pool.call(_ev("count"))).body == b"1"
    assert (await pool.call(_ev("count"))).body == b"2"
    assert (await pool.call(_ev("config"))).body == b"hallo"


async def test_ungranted_store_is_an_error_value(engine: WasmEngine, echo_wasm: Path,
                                                 tmp_path: Path) -> None:
    pool = _pool(engine, echo_wasm, tmp_path)
    response = await pool.call(_ev("forbidden"))
    assert response.status == 403
    assert b"no grant for key-value store `secret`" in response.body


async def test_failures_are_typed_and_the_pool_keeps_serving(
        engine: WasmEngine, echo_wasm: Path, tmp_path: Path) -> None:
    pool = _pool(engine, echo_wasm, tmp_path, timeout_ms=300, memory_mb=64)
    with pytest.raises(HandlerTrap, match="trapped"):
        await pool.call(_ev("trap"))
    with pytest.raises(HandlerReturnedError, match="handler said no"):
        await pool.call(_ev("err"))
    with pytest.raises(HandlerTimeout, match="300 ms"):
        await pool.call(_ev("loop"))
    with pytest.raises(HandlerTrap):
        await pool.call(_ev("grow"))
    assert (await pool.call(_ev("hi", b"ok"))).body == b"echo:ok"


async def test_pooled_reuses_and_fresh_does_not(engine: WasmEngine, echo_wasm: Path,
                                                tmp_path: Path) -> None:
    pooled = _pool(engine, echo_wasm, tmp_path, max_instances=1)
    fresh = _pool(engine, echo_wasm, tmp_path, isolation="fresh", max_instances=1)
    for _ in range(3):
        await pooled.call(_ev("hi"))
        await fresh.call(_ev("hi"))
    assert pooled.instantiated == 1
    assert fresh.instantiated == 4


async def test_full_pool_makes_callers_wait_not_fail(engine: WasmEngine, echo_wasm: Path,
                                                     tmp_path: Path) -> None:
    pool = _pool(engine, echo_wasm, tmp_path, max_instances=2)
    responses = await asyncio.gather(*(pool.call(_ev("hi", b"%d" % i)) for i in range(8)))
    assert sorted(r.body for r in responses) == sorted(b"echo:%d" % i for i in range(8))


def test_missing_component_names_the_file(engine: WasmEngine, tmp_path: Path) -> None:
    with pytest.raises(ComponentNotFound, match=r"nope\.wasm does not exist"):
        engine.load_component(tmp_path / "nope.wasm")


def test_second_load_uses_the_compile_cache(engine: WasmEngine, echo_wasm: Path) -> None:
    engine.load_component(echo_wasm)
    assert len(list(engine.cache_dir.glob("*.cwasm"))) == 1


async def test_large_binary_bodies_cross_the_boundary_intact(
        engine: WasmEngine, echo_wasm: Path, tmp_path: Path) -> None:
    # Exercises the bulk list<u8> conversion both ways, every byte value included.
    payload = bytes(range(256)) * 256 + b"\x00\xff"
    response = await _pool(engine, echo_wasm, tmp_path).call(_ev("hi", payload))
    assert response.body == b"echo:" + payload
    assert (await _pool(engine, echo_wasm, tmp_path).call(_ev("hi", b""))).body == b"echo:"


async def test_admission_waits_then_times_out_when_every_slot_stays_busy(
        engine: WasmEngine, echo_wasm: Path, tmp_path: Path) -> None:
    # The `slow` handler holds the only slot for 0.5 s; admission gives up after 50 ms.
    pool = _pool(engine, echo_wasm, tmp_path, max_instances=1, admission_timeout_ms=50)
    slow = asyncio.ensure_future(pool.call(_ev("slow")))
    await asyncio.sleep(0)  # let it take the slot
    with pytest.raises(AdmissionTimeout, match="all 1 instances stayed busy for 50 ms"):
        await pool.call(_ev("hi"))
    assert (await slow).body == b"finished"
    assert (await pool.call(_ev("hi", b"after"))).body == b"echo:after"


@pytest.mark.parametrize("guest_stderr", ["inherit", "discard"])
async def test_a_traps_explanation_reaches_stderr_unless_discarded(
        engine: WasmEngine, echo_wasm: Path, tmp_path: Path, guest_stderr: str,
        capfd: pytest.CaptureFixture[str]) -> None:
    pool = _pool(engine, echo_wasm, tmp_path, guest_stderr=guest_stderr)
    capfd.readouterr()
    with pytest.raises(HandlerTrap):
        await pool.call(_ev("trap"))
    err = capfd.readouterr().err
    # The echo handler raises RuntimeError("boom"); componentize-py prints the traceback.
    assert ("RuntimeError: boom" in err) is (guest_stderr == "inherit")
