"""The pooling instance allocator (gateway.engine.PoolingLimits) with real
components: the componentize-py echo fixture and the hand-written WAT one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from bindings.host.imports import HostImports
from bindings.host.kv import SqliteKeyValue
from bindings.types import Event
from gateway.engine import PoolingLimits, WasmEngine
from gateway.errors import ComponentError, HandlerTrap
from gateway.executor import InstancePool
from gateway.manifest import ComponentSpec
from tests.fixtures.build import WAT_ECHO, build_handler

SLOTS = 2


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WasmEngine]:
    eng = WasmEngine(tmp_path_factory.mktemp("cache"), pooling=PoolingLimits(slots=SLOTS))
    yield eng
    eng.close()


def _pool(engine: WasmEngine, wasm: Path, tmp_path: Path, **spec: object) -> InstancePool:
    fields = {k.replace("_", "-"): v for k, v in spec.items()}
    component_spec = msgspec.convert({"source": str(wasm), **fields}, ComponentSpec)
    host = HostImports("echo", {"default": SqliteKeyValue(tmp_path / "kv.sqlite")}, {})
    return InstancePool("echo", component_spec, engine, engine.load_component(wasm), host)


@pytest.mark.parametrize("kind", ["componentize-py", "wat"])
async def test_fresh_instances_give_their_slot_back(engine: WasmEngine, tmp_path: Path,
                                                    kind: str) -> None:
    wasm = build_handler("echo") if kind == "componentize-py" else WAT_ECHO
    pool = _pool(engine, wasm, tmp_path, isolation="fresh", max_instances=1)
    # Far more instances than the allocator has slots: each must be returned when dropped.
    for i in range(SLOTS * 4):
        assert (await pool.call(Event(id="e", source="s", type="t", data=b"%d" % i))).body \
            == b"echo:%d" % i
    with pytest.raises(HandlerTrap):
        await pool.call(Event(id="e", source="s", type="t", subject="trap"))
    assert (await pool.call(Event(id="e", source="s", type="t"))).body == b"echo:"
    assert pool.instantiated == SLOTS * 4 + 3


async def test_memory_limit_still_traps_under_pooling(engine: WasmEngine,
                                                      tmp_path: Path) -> None:
    pool = _pool(engine, build_handler("echo"), tmp_path, isolation="fresh", memory_mb=64)
    with pytest.raises(HandlerTrap):
        await pool.call(Event(id="e", source="s", type="t", subject="grow"))


def test_memory_above_the_slot_size_is_refused_at_load(engine: WasmEngine,
                                                       tmp_path: Path) -> None:
    with pytest.raises(ComponentError, match="exceeds the pooling allocator's 512 MiB"):
        _pool(engine, WAT_ECHO, tmp_path, memory_mb=1024)


async def test_more_live_instances_than_slots_is_a_clear_error(engine: WasmEngine,
                                                               tmp_path: Path) -> None:
    # Pooled isolation keeps instances alive: three pools of one instance need three slots.
    with pytest.raises(ComponentError, match="pooling allocator's limits"):
        [_pool(engine, WAT_ECHO, tmp_path) for _ in range(SLOTS + 1)]


@pytest.mark.parametrize(("env", "pooled"), [(None, True), ("0", False)])
def test_pooling_is_on_unless_the_environment_turns_it_off(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, env: str | None, pooled: bool) -> None:
    if env is None:
        monkeypatch.delenv("WASMGATE_POOLING", raising=False)
    else:
        monkeypatch.setenv("WASMGATE_POOLING", env)
    from_env, forced_off = WasmEngine(tmp_path), WasmEngine(tmp_path, pooling="off")
    try:
        assert (from_env.pooling is not None) is pooled
        assert forced_off.pooling is None
    finally:
        from_env.close()
        forced_off.close()
