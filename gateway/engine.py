"""One wasmtime Engine per process, its epoch ticker, and the on-disk compile cache.

Compiling a componentize-py component takes seconds; loading a serialized artifact takes
milliseconds. Artifacts are keyed by the wasm digest, the engine configuration and the
wasmtime version, so a changed component, setting or runtime never loads a stale one.
"""

from __future__ import annotations

import hashlib
import os
import threading
from importlib.metadata import version
from pathlib import Path

import structlog
import wasmtime
from wasmtime import component as wc

from gateway import bulk_bytes
from gateway.errors import ComponentError, ComponentNotFound
from gateway.progress import progress

bulk_bytes.install()

log = structlog.get_logger("wasmgate.engine")

# One epoch tick per 10 ms: the resolution of every handler timeout.
EPOCH_TICK_SECONDS = 0.010


class WasmEngine:
    """The process's wasmtime Engine with epoch interruption and a compile cache."""

    def __init__(self, cache_dir: Path, *, consume_fuel: bool = False) -> None:
        config = wasmtime.Config()
        config.epoch_interruption = True
        config.consume_fuel = consume_fuel
        self.consume_fuel = consume_fuel
        self.engine = wasmtime.Engine(config)
        self.cache_dir = cache_dir
        self._config_key = f"epoch=1;fuel={int(consume_fuel)};wasmtime={version('wasmtime')}"
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
