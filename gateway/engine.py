"""One wasmtime Engine per process, its epoch ticker, and the on-disk compile cache.

Compiling a componentize-py component takes seconds; loading a serialized artifact takes
milliseconds. Artifacts are keyed by the wasm digest, the engine configuration and the
wasmtime version, so a changed component, setting or runtime never loads a stale one.

The pooling instance allocator is opt-in (``PoolingAllocator``, or ``WASMGATE_POOLING=1``
in the environment). wasmtime-py does not expose it on ``Config``; it is set through the
raw C API. Measured on the echo fixtures (BENCHMARKS.md): it halves instantiation of a
minimal WAT component (~30 -> ~17 µs) but does nothing for a componentize-py guest, whose
fresh-instance cost is eager funcref table initialisation and copy-on-write faults on its
heap image, neither of which pooling avoids. Its fixed limits (instances, memories, tables,
table elements, memory size) also reject components that exceed them, so it stays off by
default.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import threading
from importlib.metadata import version
from pathlib import Path
from typing import Literal

import structlog
import wasmtime
from wasmtime import _ffi as ffi
from wasmtime import component as wc

from gateway import bulk_bytes
from gateway.errors import ComponentError, ComponentNotFound
from gateway.progress import progress

bulk_bytes.install()

log = structlog.get_logger("wasmgate.engine")

# One epoch tick per 10 ms: the resolution of every handler timeout.
EPOCH_TICK_SECONDS = 0.010


@dataclasses.dataclass(frozen=True)
class PoolingAllocator:
    """Limits of wasmtime's pooling instance allocator (all slots are reserved up front).

    ``slots`` bounds how many component instances can be live at once across every
    component of the process: a fresh or pooled instance beyond it fails to instantiate.
    The per-component defaults are generous enough for a componentize-py guest (checked by
    tests/test_pooling.py with the echo fixture); they were not tuned down to its minimum.
    """

    slots: int = 64
    max_memory_mb: int = 512
    core_instances_per_component: int = 50
    memories_per_component: int = 4
    tables_per_component: int = 32
    table_elements: int = 100_000
    core_instance_size_kb: int = 4096

    def apply(self, config: wasmtime.Config) -> None:
        """Switch ``config`` to the pooling strategy with these limits."""
        pac = ffi.wasmtime_pooling_allocation_config_new()
        try:
            ffi.wasmtime_pooling_allocation_config_total_component_instances_set(pac, self.slots)
            ffi.wasmtime_pooling_allocation_config_total_core_instances_set(
                pac, self.slots * self.core_instances_per_component)
            ffi.wasmtime_pooling_allocation_config_total_memories_set(
                pac, self.slots * self.memories_per_component)
            ffi.wasmtime_pooling_allocation_config_total_tables_set(
                pac, self.slots * self.tables_per_component)
            ffi.wasmtime_pooling_allocation_config_max_core_instances_per_component_set(
                pac, self.core_instances_per_component)
            ffi.wasmtime_pooling_allocation_config_max_memories_per_component_set(
                pac, self.memories_per_component)
            ffi.wasmtime_pooling_allocation_config_max_tables_per_component_set(
                pac, self.tables_per_component)
            ffi.wasmtime_pooling_allocation_config_table_elements_set(pac, self.table_elements)
            ffi.wasmtime_pooling_allocation_config_max_memory_size_set(
                pac, self.max_memory_mb << 20)
            size = self.core_instance_size_kb << 10
            ffi.wasmtime_pooling_allocation_config_max_core_instance_size_set(pac, size)
            ffi.wasmtime_pooling_allocation_config_max_component_instance_size_set(pac, size)
            # The C API clones the limits into the config, so ours can be freed at once.
            ffi.wasmtime_pooling_allocation_strategy_set(config.ptr(), pac)
        finally:
            ffi.wasmtime_pooling_allocation_config_delete(pac)

    def key(self) -> str:
        """Return the part of the compile-cache key that depends on these limits."""
        return "pool=" + ",".join(str(v) for v in dataclasses.astuple(self))


def pooling_from_env() -> PoolingAllocator | None:
    """Return the default limits if ``WASMGATE_POOLING=1`` is set, else None."""
    return PoolingAllocator() if os.environ.get("WASMGATE_POOLING") == "1" else None


class WasmEngine:
    """The process's wasmtime Engine with epoch interruption and a compile cache."""

    def __init__(self, cache_dir: Path, *, consume_fuel: bool = False,
                 pooling: PoolingAllocator | Literal["env", "off"] = "env") -> None:
        """``pooling``: the pooling allocator's limits to turn it on, "off" for wasmtime's
        on-demand allocator, or "env" (the default) to follow ``WASMGATE_POOLING``."""
        limits = (pooling_from_env() if pooling == "env" else None if pooling == "off"
                  else pooling)
        config = wasmtime.Config()
        config.epoch_interruption = True
        config.consume_fuel = consume_fuel
        if limits is not None:
            limits.apply(config)
        self.pooling = limits
        self.consume_fuel = consume_fuel
        self.engine = wasmtime.Engine(config)
        self.cache_dir = cache_dir
        # On-demand keeps the key it always had, so existing compile caches stay valid.
        self._config_key = (f"epoch=1;fuel={int(consume_fuel)};wasmtime={version('wasmtime')}"
                            + (f";{limits.key()}" if limits else ""))
        self._stop = threading.Event()
        self._ticker = threading.Thread(target=self._tick, name="wasmgate-epoch", daemon=True)
        self._ticker.start()

    def _tick(self) -> None:
        while not self._stop.wait(EPOCH_TICK_SECONDS):
            self.engine.increment_epoch()

    def close(self) -> None:
        """Stop the epoch ticker."""
        self._stop.set()

    def load_component(self, source: Path, *, name: str | None = None) -> wc.Component:
        """Return the compiled component for ``source``, compiling at most once per digest.

        ``name`` (the manifest's component name) labels the progress shown while compiling.
        """
        try:
            wasm = source.read_bytes()
        except FileNotFoundError:
            raise ComponentNotFound(
                f"component file {source} does not exist; build it first "
                "(`wasmgate build`) or fix `source` in wasmgate.toml") from None
        digest = hashlib.sha256(wasm + self._config_key.encode()).hexdigest()
        artifact = self.cache_dir / f"{digest}.cwasm"
        if artifact.exists():
            try:
                return wc.Component.deserialize_file(self.engine, str(artifact))
            except wasmtime.WasmtimeError:
                log.warning("discarding unreadable compile cache entry", path=str(artifact))
        label = f"compiling component {name or source.name}"
        try:
            with progress(label, source=str(source), bytes=len(wasm)):
                compiled = wc.Component(self.engine, wasm)
        except wasmtime.WasmtimeError as exc:
            raise ComponentError(f"{source} is not a valid WebAssembly component: {exc}") from exc
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = artifact.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(compiled.serialize())
        tmp.replace(artifact)  # atomic: a concurrent start never reads half a file
        return compiled
