"""The process's WebAssembly engine and its on-disk compile cache (native/, wasmtime's Rust
API).

Compiling a componentize-py component takes seconds; loading a cached artifact takes
milliseconds and compiles nothing. Artifacts are keyed by the wasm digest and the engine's
compatibility hash (wasmtime's version and every setting that changes generated code), so a
changed component, setting or runtime never loads a stale one.

The pooling instance allocator is on by default, sized from the manifest
(:meth:`PoolingLimits.for_components`): every instance slot, memory and table is reserved
up front, so instantiation is a few page-table updates rather than mmap calls. Where the
reservation is refused (a tight ``ulimit -v``), the engine falls back to on-demand
allocation and logs one line. ``WASMGATE_POOLING=0`` turns it off.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

import structlog

from gateway import _native
from gateway.errors import ComponentContractError, ComponentError, ComponentNotFound
from gateway.manifest import ComponentSpec, LoadedManifest
from gateway.progress import progress

log = structlog.get_logger("wasmgate.engine")

# One epoch tick per 10 ms (native/src/engine.rs): the resolution of every handler timeout.
EPOCH_TICK_SECONDS = 0.010

LoadedComponent = _native.LoadedComponent


@dataclasses.dataclass(frozen=True)
class PoolingLimits:
    """What the pooling allocator reserves up front.

    ``slots`` bounds how many instances can be live at once across every component of the
    process. The per-component limits fit a componentize-py or componentize-js guest
    (about 20 core instances, 2 memories, 6,000 table elements) with room to spare.
    """

    slots: int = 64
    max_memory_mb: int = 512
    core_instances_per_component: int = 50
    memories_per_component: int = 4
    tables_per_component: int = 32
    table_elements: int = 100_000
    # Bytes of each memory kept resident when a slot is reused: a fresh instance then
    # starts on pages that are already mapped instead of faulting them in again.
    keep_resident_kb: int = 0

    @classmethod
    def for_components(cls, specs: Iterable[ComponentSpec]) -> PoolingLimits:
        """Limits with a slot for every instance the components can have live at once (plus
        one each for the load-time check), twice over so a rebuilt component can be swapped
        in beside the old one (``wasmgate watch``), and memory slots as large as the
        largest ``memory-mb``."""
        specs = list(specs)
        slots = 2 * sum(s.max_instances + s.spare_instances + 1 for s in specs)
        memory = max((s.memory_mb for s in specs), default=cls.max_memory_mb)
        # The native side multiplies slots by the per-component limits in u32. A count this
        # large could never be reserved anyway (the engine then allocates on demand), but
        # it must not overflow on the way there.
        most = (2**32 - 1) // max(cls.core_instances_per_component, cls.tables_per_component,
                                  cls.memories_per_component)
        return cls(slots=min(max(slots, 1), most), max_memory_mb=memory)

    def as_native(self) -> dict[str, int]:
        return {
            "slots": self.slots,
            "max_memory_bytes": self.max_memory_mb << 20,
            "core_instances_per_component": self.core_instances_per_component,
            "memories_per_component": self.memories_per_component,
            "tables_per_component": self.tables_per_component,
            "table_elements": self.table_elements,
            "keep_resident_bytes": self.keep_resident_kb << 10,
        }


def engine_for(manifest: LoadedManifest, cache_dir: Path) -> WasmEngine:
    """The engine an app of ``manifest`` runs on. ``wasmgate build`` compiles with the same
    one, so the artifacts it caches are the ones ``up`` looks for."""
    components = manifest.components.values()
    return WasmEngine(cache_dir, consume_fuel=any(c.fuel for c in components),
                      pooling=PoolingLimits.for_components(components))


def pooling_from_env(default: PoolingLimits) -> PoolingLimits | None:
    """``default`` unless ``WASMGATE_POOLING=0`` turns the pooling allocator off."""
    return None if os.environ.get("WASMGATE_POOLING") == "0" else default


class WasmEngine:
    """The process's wasmtime Engine with epoch interruption and a compile cache."""

    def __init__(self, cache_dir: Path, *, consume_fuel: bool = False,
                 pooling: PoolingLimits | Literal["off"] | None = None) -> None:
        """``pooling``: the allocator's limits (None: the defaults), or "off" for wasmtime's
        on-demand allocator. ``WASMGATE_POOLING=0`` also turns it off."""
        limits = None if pooling == "off" else pooling_from_env(pooling or PoolingLimits())
        self.native = _native.Engine(consume_fuel=consume_fuel,
                                     pooling=limits.as_native() if limits else None)
        if self.native.pooling_fallback is not None:
            log.warning("the pooling allocator's address-space reservation was refused; "
                        "instances are allocated on demand instead (slower to create)",
                        reason=self.native.pooling_fallback)
        self.pooling = limits if self.native.pooling_enabled else None
        self.consume_fuel = consume_fuel
        self.cache_dir = cache_dir

    def close(self) -> None:
        """Stop the epoch ticker."""
        self.native.close()

    def load_component(self, source: Path, *, name: str | None = None) -> LoadedComponent:
        """Return the compiled component for ``source``, compiling at most once per digest.

        ``name`` (the manifest's component name) labels the progress shown while compiling.
        """
        try:
            wasm = source.read_bytes()
        except FileNotFoundError:
            raise ComponentNotFound(
                f"component file {source} does not exist; build it first "
                "(`wasmgate build`) or fix `source` in wasmgate.toml") from None
        except OSError as exc:
            raise ComponentNotFound(
                f"component file {source} cannot be read ({exc.strerror}); fix `source` in "
                "wasmgate.toml") from None
        cache = str(self.cache_dir)
        try:
            if self.native.is_cached(wasm, cache):
                loaded = self.native.load_component(wasm, cache, str(source))
            else:
                label = f"compiling component {name or source.name}"
                with progress(label, source=str(source), bytes=len(wasm)):
                    loaded = self.native.load_component(wasm, cache, str(source))
        except _native.ComponentContractError as exc:
            raise ComponentContractError(str(exc)) from None
        except _native.ComponentLoadError as exc:
            text = str(exc)
            if "pooling allocator" in text and self.pooling is not None:
                # A valid component whose memory at start is larger than the pool's slots.
                raise ComponentError(
                    f"{source} cannot run in the pooling allocator's memory slots of "
                    f"{self.pooling.max_memory_mb} MiB (the largest `memory-mb` of the app): "
                    f"{text.partition('pooling allocator requirements: ')[2] or text}; "
                    f"raise `memory-mb` in [component.{name or source.stem}]") from None
            raise ComponentError(_not_a_component(source, wasm, text)) from None
        if loaded.cache_note:
            log.warning("compile cache not used", note=loaded.cache_note)
        return loaded


_WASM_MAGIC = b"\x00asm"
# The version field after the magic: a core module's (1) or a component's (0x0d, layer 1).
_CORE_MODULE_VERSION = b"\x01\x00\x00\x00"
_WORLDS_HINT = ("A component must export `handle` of the world `wasmgate:handler/handler` "
                "(bindings/wit/handler.wit) or `wasi:http/incoming-handler` (the standard "
                "`wasi:http/proxy` world)")


def _not_a_component(source: Path, wasm: bytes, native_text: str) -> str:
    """What is wrong with ``source``, which wasmtime refused to compile (``native_text``).

    wasmtime reads anything that is not binary wasm as the text format, so an empty or
    unrelated file would be reported as a WAT syntax error pointing into it; a core module
    is refused as "a wasm module" given to "a component parser". Both say what the file is
    instead, and every case names the worlds a component must export.
    """
    prefix = f"{source} is not a valid WebAssembly component"
    if source.suffix == ".wat" or wasm.lstrip()[:2] in (b"(c", b"(m", b";;"):
        # The text format, meant as such: its parser's diagnostic points at the mistake.
        what = native_text.removeprefix(prefix).lstrip(": ")
    elif not wasm:
        what = "the file is empty (did the build fail half-way?)"
    elif not wasm.startswith(_WASM_MAGIC):
        what = ("the file does not start with the WebAssembly magic bytes `\\0asm` (is it "
                "the file the build writes?)")
    elif wasm[4:8] == _CORE_MODULE_VERSION:
        what = ("it is a core WebAssembly module, not a component; build it with a "
                "component toolchain (componentize-py, componentize-js, cargo component) or "
                "wrap it with `wasm-tools component new`")
    else:
        detail = native_text.removeprefix(prefix).lstrip(": ")
        what = f"the file is truncated or corrupt ({detail}); rebuild it"
    return f"{prefix}: {what}. {_WORLDS_HINT}"


__all__ = ["PoolingLimits", "WasmEngine", "engine_for", "pooling_from_env"]
