"""The executor against a real componentize-py component (tests/fixtures/handlers/echo)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from structlog.testing import capture_logs

from bindings.host.imports import LOG_RECORD_BYTES, HostImports
from bindings.host.kv import SqliteKeyValue
from bindings.types import Event
from gateway.engine import WasmEngine
from gateway.errors import (
    AdmissionTimeout,
    ComponentContractError,
    ComponentError,
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
    return InstancePool("echo", component_spec, engine, engine.load_component(wasm), host)


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


async def test_a_guest_asleep_in_the_host_ends_at_timeout_ms_and_the_slot_comes_back(
        engine: WasmEngine, echo_wasm: Path, tmp_path: Path) -> None:
    # time.sleep is a WASI timer the guest waits on inside the host, where the epoch
    # deadline cannot reach: the timer itself is cut at the deadline.
    pool = _pool(engine, echo_wasm, tmp_path, timeout_ms=300, max_instances=1)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(HandlerTimeout, match="300 ms"):
        await pool.call(_ev("nap", b"30"))
    assert loop.time() - started < 10, "the slot was held for the guest's whole sleep"
    assert (await pool.call(_ev("nap", b"0.01"))).body == b"rested"  # a nap in time is fine


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
    assert engine.load_component(echo_wasm).from_cache


async def test_large_binary_bodies_cross_the_boundary_intact(
        engine: WasmEngine, echo_wasm: Path, tmp_path: Path) -> None:
    # list<u8> both ways, every byte value included.
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
async def test_a_traps_explanation_reaches_the_log_unless_discarded(
        engine: WasmEngine, echo_wasm: Path, tmp_path: Path, guest_stderr: str) -> None:
    pool = _pool(engine, echo_wasm, tmp_path, guest_stderr=guest_stderr)
    with capture_logs() as logs, pytest.raises(HandlerTrap) as trap:
        await pool.call(_ev("trap"))
    lines = [r["line"] for r in logs if r["event"] == "guest stderr"]
    # The echo handler raises RuntimeError("boom"); componentize-py prints the traceback,
    # and the trap's message carries its last line.
    assert ("RuntimeError: boom" in lines) is (guest_stderr == "inherit")
    assert ("the guest said: RuntimeError: boom" in str(trap.value)) is (
        guest_stderr == "inherit")
    assert "wasm trap" in str(trap.value)


async def test_guest_output_is_a_record_a_line_and_cannot_pass_as_the_gateways(
        engine: WasmEngine, echo_wasm: Path, tmp_path: Path) -> None:
    pool = _pool(engine, echo_wasm, tmp_path)
    with capture_logs() as logs:
        assert (await pool.call(_ev("forge"))).body == b"forged"
    (record,) = [r for r in logs if r.get("line", "").startswith("{")]
    # The guest's JSON line is data inside a record the gateway wrote, marked as guest output.
    assert record["event"] == "guest stderr"
    assert record["component"] == "echo"
    assert not any(r["event"] == "app started" for r in logs)


async def test_guest_output_is_capped_per_call_and_says_what_it_dropped(
        engine: WasmEngine, echo_wasm: Path, tmp_path: Path) -> None:
    pool = _pool(engine, echo_wasm, tmp_path, stderr_max_bytes=1000)
    with capture_logs() as logs:
        assert (await pool.call(_ev("shout", b"4032000"))).body == b"shouted"
    lines = [r for r in logs if r["event"] == "guest stderr"]
    assert len(lines) == 10  # 1000 bytes in lines of 100
    (cut,) = [r for r in logs if r["event"] == "guest stderr truncated"]
    assert cut["dropped_bytes"] == 4_032_000 - 1000
    assert "stderr-max-bytes" in cut["hint"]


async def test_a_long_log_message_is_cut(engine: WasmEngine, echo_wasm: Path,
                                         tmp_path: Path) -> None:
    pool = _pool(engine, echo_wasm, tmp_path)
    with capture_logs() as logs:
        assert (await pool.call(_ev("logflood", b"10000000"))).body == b"logged"
    (record,) = [r for r in logs if r["event"].startswith("zzz")]
    assert len(record["event"]) < 10_000
    assert record["event"].endswith("(9991808 characters dropped)")


@pytest.mark.parametrize("call", ["async", "blocking"])
async def test_log_emit_is_capped_per_call_and_says_what_it_dropped(
        engine: WasmEngine, tmp_path: Path, call: str) -> None:
    """A guest calling log.emit in a loop wrote 160 MB to the log in one second: each call
    has `log-emit-max-bytes`, the next call a fresh budget. Each record costs its text plus
    LOG_RECORD_BYTES."""
    pool = _pool(engine, build_handler("caps"), tmp_path, log_emit_max_bytes=50_000)
    flood = json.dumps({"op": "log", "message": "m" * 1000, "times": 2000}).encode()
    for _ in range(2):
        with capture_logs() as logs:
            if call == "async":
                response = await pool.call(Event(id="e1", source="t", type="t", data=flood))
            else:
                response = await asyncio.to_thread(
                    pool.call_blocking, Event(id="e1", source="t", type="t", data=flood))
        assert json.loads(response.body) == {"ok": True}
        kept = [r for r in logs if r["event"].startswith("mmm")]
        fits = 50_000 // (1000 + LOG_RECORD_BYTES)
        assert len(kept) == fits
        (cut,) = [r for r in logs if r["event"] == "guest log output truncated"]
        assert cut["dropped_records"] == 2000 - fits
        assert cut["dropped"] == {"log.emit": 2000 - fits}
        assert cut["dropped_bytes"] == (2000 - fits) * 1000
        assert "log-emit-max-bytes" in cut["hint"]


async def test_a_pooled_instance_is_retired_before_its_memory_runs_out(
        engine: WasmEngine, echo_wasm: Path, tmp_path: Path) -> None:
    # `leak` keeps 1 MiB per call: on one reused instance, call ~60 would hit memory-mb.
    pool = _pool(engine, echo_wasm, tmp_path, memory_mb=64, max_instances=1)
    kept = [int((await pool.call(_ev("leak"))).body) for _ in range(150)]
    assert pool.instantiated > 2  # retired (and replaced) more than once
    assert max(kept) < 64  # no instance was let run into the limit


async def test_running_out_of_memory_names_the_setting(
        engine: WasmEngine, echo_wasm: Path, tmp_path: Path) -> None:
    pool = _pool(engine, echo_wasm, tmp_path, memory_mb=64)
    with pytest.raises(HandlerTrap, match=r"memory-mb` \(64 MiB\)"):
        await pool.call(_ev("grow"))
    # A 200 MB body from a 64 MiB guest: the guest cannot build it, and says so; the
    # gateway keeps serving.
    with pytest.raises(HandlerTrap, match="memory-mb"):
        await pool.call(_ev("big", b"200000000"))
    assert (await pool.call(_ev("big", b"1000000"))).body == b"x" * 1_000_000


async def test_a_cancelled_caller_does_not_free_a_slot_still_running(
        engine: WasmEngine, echo_wasm: Path, tmp_path: Path) -> None:
    pool = _pool(engine, echo_wasm, tmp_path, max_instances=1, admission_timeout_ms=50)
    slow = asyncio.ensure_future(pool.call(_ev("slow")))
    await asyncio.sleep(0.05)
    slow.cancel()
    # The guest still runs in the only slot: admission must wait for it, not over-admit.
    with pytest.raises(AdmissionTimeout):
        await pool.call(_ev("hi"))
    await asyncio.sleep(0.6)
    assert (await pool.call(_ev("hi", b"later"))).body == b"echo:later"


async def test_fresh_spares_are_kept_ready(engine: WasmEngine, echo_wasm: Path,
                                           tmp_path: Path) -> None:
    pool = _pool(engine, echo_wasm, tmp_path, isolation="fresh", spare_instances=2)
    for _ in range(200):
        if pool.ready_instances == 2:
            break
        await asyncio.sleep(0.05)
    assert pool.ready_instances == 2
    before = pool.instantiated
    assert (await pool.call(_ev("hi", b"1"))).body == b"echo:1"
    # The call took a spare; the background thread makes another.
    for _ in range(200):
        if pool.ready_instances == 2 and pool.instantiated == before + 1:
            break
        await asyncio.sleep(0.05)
    assert (pool.ready_instances, pool.instantiated) == (2, before + 1)
    pool.close()


def test_a_file_that_is_not_a_component_is_named(engine: WasmEngine, tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.wasm"
    bogus.write_bytes(b"\x00asm\x01\x00\x00\x00garbage")
    with pytest.raises(ComponentError, match=r"bogus\.wasm is not a valid WebAssembly component"):
        engine.load_component(bogus)


def test_a_component_of_another_world_names_the_worlds(engine: WasmEngine,
                                                       tmp_path: Path) -> None:
    other = tmp_path / "other.wat"
    other.write_text("(component)")
    with pytest.raises(ComponentContractError,
                       match=r"wasmgate:handler/handler.*wasi:http/incoming-handler"):
        engine.load_component(other)


def test_a_cached_component_is_loaded_not_compiled(echo_wasm: Path, tmp_path: Path) -> None:
    first, second = WasmEngine(tmp_path), WasmEngine(tmp_path)
    try:
        assert first.load_component(echo_wasm).from_cache is False
        assert second.load_component(echo_wasm).from_cache is True
    finally:
        first.close()
        second.close()


def test_blocking_calls_work_without_a_loop(engine: WasmEngine, echo_wasm: Path,
                                            tmp_path: Path) -> None:
    pool = _pool(engine, echo_wasm, tmp_path)
    assert pool.call_blocking(_ev("hi", b"x")).body == b"echo:x"
    with pytest.raises(HandlerTimeout):
        _pool(engine, echo_wasm, tmp_path, timeout_ms=100).call_blocking(_ev("loop"))
