"""``wasmgate watch``: rebuild a component when its files change and swap it into the
running gateway without dropping events.

Like ``spin watch``, by polling: every ``interval`` the watcher compares the modification
times and sizes of each component's build inputs (:func:`gateway.build_state.fingerprint`;
for a component without a build command, its ``source`` file). Polling needs no extra
dependency and behaves the same on every file system, including mounted ones where inotify
stays silent. A change is acted on once the files hold still for ``settle`` seconds (editors
save in several steps).

A swap never stops intake. The component is rebuilt (only if the digest of its inputs
changed) and compiled off the event loop while the old pool keeps serving; then one
assignment routes new events to the new pool (:meth:`gateway.app.App.replace_component`),
and the old pool is closed, which lets the calls already running on it finish. A failed
build or compile is logged with its error and the old component goes on serving; the next
edit tries again.

Changes to ``wasmgate.toml`` itself are not applied: restart ``wasmgate watch`` for those.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from gateway.app import App
from gateway.build import build_component
from gateway.build_state import BuildState, fingerprint
from gateway.cache import CompileCache, compile_cache_dir, max_cache_bytes
from gateway.errors import WasmgateError

log = structlog.get_logger("wasmgate.watch")

Fingerprint = dict[str, tuple[int, int]]


class ComponentWatcher:
    """Watches the components of a running :class:`App` and swaps in rebuilt ones."""

    def __init__(self, app: App, *, interval: float = 0.5, settle: float = 0.3) -> None:
        self.app = app
        self.interval = interval
        self.settle = settle
        self.state = BuildState.load(app.manifest)
        self._seen: dict[str, Fingerprint] = {
            name: fingerprint(app.manifest, name) for name in app.manifest.components}
        # For tests and the log: how many swaps and failed rebuilds there were.
        self.swapped: list[str] = []
        self.failed: list[str] = []

    async def run(self, stop: asyncio.Event) -> None:
        """Poll until ``stop`` is set."""
        names = sorted(self.app.manifest.components)
        log.info("watching for changes", components=names, interval_s=self.interval)
        while not stop.is_set():
            await self.poll_once()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval)

    async def poll_once(self) -> list[str]:
        """Rebuild and swap every component whose files changed; return their names."""
        changed = [name for name, seen in self._seen.items()
                   if fingerprint(self.app.manifest, name) != seen]
        # Components are independent: their rebuilds run side by side, as in `build`.
        await asyncio.gather(*(self._reload(name) for name in changed))
        return changed

    async def _reload(self, name: str) -> None:
        manifest = self.app.manifest
        current = await self._settled(name)
        # Recorded before building: an edit made during the build is seen next poll.
        self._seen[name] = current
        try:
            if manifest.component(name).build is not None:
                log.info("files changed, rebuilding", component=name)
                rebuilt = await asyncio.to_thread(build_component, manifest, name, self.state)
                if not rebuilt:
                    log.info("inputs unchanged (only touched), nothing to do", component=name)
                    return
            old = await asyncio.to_thread(self.app.replace_component, name)
        except WasmgateError as exc:
            self.failed.append(name)
            log.error("rebuild failed; the previous version keeps serving", component=name,
                      error=str(exc))
            return
        self.swapped.append(name)
        log.info("component swapped: new events go to the new version", component=name)
        # close() lets the calls already running on the old pool finish; off the loop, as
        # it may wait for them.
        await asyncio.to_thread(old.close)
        cache = CompileCache(compile_cache_dir(manifest))
        await asyncio.to_thread(cache.evict, max_cache_bytes(manifest))

    async def _settled(self, name: str) -> Fingerprint:
        current = fingerprint(self.app.manifest, name)
        while True:
            await asyncio.sleep(self.settle)
            again = fingerprint(self.app.manifest, name)
            if again == current:
                return current
            current = again


__all__ = ["ComponentWatcher"]
