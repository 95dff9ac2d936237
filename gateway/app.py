"""The app loader: a manifest becomes running components and triggers.

Loading is eager: every component is compiled (or loaded from the compile cache) and
instantiated once, and every trigger table decoded, before any intake starts, so a bad
manifest fails at start with a message that names the file and field.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import structlog

from bindings.host.kv import KeyValueStore
from bindings.types import Event, Response
from gateway import brokers
from gateway.cache import compile_cache_dir
from gateway.capabilities import Capabilities
from gateway.dispatch import Dispatcher
from gateway.engine import LoadedComponent, engine_for
from gateway.errors import ComponentError, ConfigError
from gateway.executor import InstancePool
from gateway.manifest import LoadedManifest, load_manifest
from gateway.redaction import remember_secrets
from gateway.router import Router
from gateway.webhooks.secrets import secret_resolver
from triggers.base import Trigger, TriggerContext, factory_for

log = structlog.get_logger("wasmgate.app")


class App:
    """A loaded application: its engine, instance pools, dispatcher and triggers."""

    def __init__(self, manifest: LoadedManifest, *, listen: str = "127.0.0.1:3000") -> None:
        self.manifest = manifest
        self.listen = listen
        self.engine = engine_for(manifest, compile_cache_dir(manifest))
        self.capabilities = Capabilities(manifest)
        # Process-wide: every log event and CLI error is masked, whoever emits it.
        remember_secrets(self.capabilities.redactor.secrets)
        self.router = Router(manifest.components, manifest_path=str(manifest.path))
        self.dispatcher = Dispatcher(self.router.invoke)
        self.triggers: list[Trigger] = []

    @classmethod
    def load(cls, path: str | Path, *, listen: str = "127.0.0.1:3000") -> App:
        """Load and validate the manifest at ``path``; compile and link every component."""
        app = cls(load_manifest(path), listen=listen)
        # Every [brokers.x] table, whether a trigger or only `publish` uses it.
        brokers.check(dict(app.manifest.brokers), path=str(app.manifest.path))
        app._load_components()
        app._load_triggers()
        return app

    def _load_components(self) -> None:
        for name, spec in self.manifest.components.items():
            host = self.capabilities.host_imports(name)
            compiled = self._compile(name)
            self.router.add(InstancePool(name, spec, self.engine, compiled, host))

    @property
    def pools(self) -> dict[str, InstancePool]:
        """Every component's live pool, by name."""
        return self.router.pools

    def _compile(self, name: str) -> LoadedComponent:
        """Component ``name``, compiled; a `source` that is no readable file (a directory, a
        name too long for the file system) is a ConfigError naming the file and field."""
        source = self.manifest.source_path(name)
        where = {"path": str(self.manifest.path), "field": f"component.{name}.source"}
        try:
            if source.is_dir():
                raise ConfigError(f"{source} is a directory; `source` is the component's "
                                  ".wasm file (e.g. build/hello.wasm)", **where)
            return self.engine.load_component(source, name=name)
        except ComponentError as exc:
            # Same class (callers tell "not built yet" from "not a component"), plus where.
            raise type(exc)(f"{where['path']}: at `{where['field']}`: {exc}") from exc
        except OSError as exc:
            raise ConfigError(f"cannot read the component file {source}: "
                              f"{exc.strerror or exc}", **where) from exc

    def _load_triggers(self) -> None:
        for kind, tables in self.manifest.triggers.items():
            factory = factory_for(kind, manifest_path=str(self.manifest.path))
            for i, table in enumerate(tables):
                context = TriggerContext(manifest_path=str(self.manifest.path),
                                         field=f"trigger.{kind}[{i}]", listen=self.listen,
                                         brokers=dict(self.manifest.brokers),
                                         state_dir=str(self.manifest.root / ".wasmgate"),
                                         application=self.manifest.application.name,
                                         key_value=self._claim_store,
                                         store_grants=self.manifest.store_grants(),
                                         webhook_secret=secret_resolver(self.manifest),
                                         broker_clients=self.capabilities.brokers,
                                         streams_body=self._streams_body)
                self.triggers.append(factory(dict(table), context=context))

    def _streams_body(self, component: str) -> bool:
        # Asked per request: `wasmgate watch` may swap a component for one of the other world.
        pool = self.pools.get(component)
        return pool is not None and pool.streams_request_body

    def _claim_store(self, name: str) -> KeyValueStore:
        if name not in self.manifest.key_value_stores:
            known = ", ".join(sorted(self.manifest.key_value_stores))
            raise ConfigError(f"no key-value store named {name!r} (known stores: {known}); "
                              f"declare it with [key-value.{name}]",
                              path=str(self.manifest.path))
        return self.capabilities.open_store(name)

    def replace_component(self, name: str) -> InstancePool:
        """Compile component ``name``'s current `source` into a new pool and route new events
        to it; return the old pool, for the caller to close once its calls are done.

        Blocks while compiling: call it off the event loop (``wasmgate watch`` does).
        Raises ComponentError, leaving the old pool serving, if the new one cannot load.
        """
        spec = self.manifest.component(name)
        compiled = self.engine.load_component(self.manifest.source_path(name), name=name)
        pool = InstancePool(name, spec, self.engine, compiled,
                            self.capabilities.host_imports(name))
        return self.router.replace(pool)

    async def invoke(self, component: str, event: Event) -> Response:
        """Run one event through ``component`` outside any trigger (`wasmgate invoke`,
        tests): the router's call, with the capabilities bound to this loop first."""
        self.capabilities.start()  # idempotent
        return await self.router.invoke(component, event)

    async def start(self) -> None:
        """Start every trigger's intake."""
        self.capabilities.start()  # publish hands its sends to this loop
        for trigger in self.triggers:
            # One classified call per dispatch; each trigger applies its own retry policy
            # through triggers.delivery.deliver.
            await trigger.start(self.dispatcher.dispatch)
        log.info("app started", app=self.manifest.application.name,
                 components=sorted(self.pools), triggers=len(self.triggers))

    async def stop(self) -> None:
        """Stop intake, let in-flight events finish, then release resources."""
        await asyncio.gather(*(t.stop() for t in self.triggers))
        # Off the loop: a call a cancelled caller left running may still make a host call
        # that needs the loop (a publish) before its pool's threads can end.
        for pool in self.pools.values():
            await asyncio.to_thread(pool.close)
        await self.capabilities.close()
        self.engine.close()


__all__ = ["App"]
