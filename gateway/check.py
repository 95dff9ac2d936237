"""Checking a whole manifest without running it (``wasmgate build`` does this first).

:func:`~gateway.manifest.load_manifest` checks the schema and cross references; trigger
tables stay raw there, so a bad cron schedule or an unknown trigger kind would surface only
at ``up``, minutes of building later. Here every trigger table goes through its adapter's
own decoding, as :meth:`gateway.app.App.load` does, but nothing is started, nothing listens
and no store or broker is opened (a cron claim store is checked by name only).

Variables and secrets are not resolved: a build machine need not hold production secrets.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from bindings.host.kv import KeyValueStore, SqliteKeyValue
from gateway import brokers
from gateway.errors import ConfigError
from gateway.manifest import LoadedManifest, load_manifest
from triggers.base import Trigger, TriggerContext, factory_for


def check_manifest(path: str | Path) -> LoadedManifest:
    """Return the manifest at ``path`` once it and all its trigger tables are valid;
    raise ConfigError naming the file and field otherwise."""
    manifest = load_manifest(path)
    # Every [brokers.x] table: URL form and TLS files (no connection is opened).
    brokers.check(dict(manifest.brokers), path=str(manifest.path))
    triggers: list[Trigger] = []
    try:
        for kind, tables in manifest.triggers.items():
            factory = factory_for(kind, manifest_path=str(manifest.path))
            for i, table in enumerate(tables):
                context = TriggerContext(manifest_path=str(manifest.path),
                                         field=f"trigger.{kind}[{i}]", listen=_NO_LISTEN,
                                         brokers=dict(manifest.brokers),
                                         state_dir=str(manifest.root / ".wasmgate"),
                                         application=manifest.application.name,
                                         key_value=lambda name: _named_store(manifest, name),
                                         store_grants=manifest.store_grants())
                triggers.append(factory(dict(table), context=context))
    finally:
        # Never started, but an adapter may have registered itself (the HTTP server of a
        # listen address); stopping releases that as it would in a running app.
        asyncio.run(_stop(triggers))
    return manifest


# Not an address: an HTTP trigger registers its listen address in the process, and a
# running app's (127.0.0.1:3000, say) must not be touched, let alone stopped, by a check.
_NO_LISTEN = "wasmgate-check:0"


def _named_store(manifest: LoadedManifest, name: str) -> KeyValueStore:
    if name not in manifest.key_value_stores:
        known = ", ".join(sorted(manifest.key_value_stores))
        raise ConfigError(f"no key-value store named {name!r} (known stores: {known}); "
                          f"declare it with [key-value.{name}]", path=str(manifest.path))
    # A stand-in: the real store (a file, a Redis server) is opened by `up`, not by a check.
    return SqliteKeyValue(Path(":memory:"), name=name)


async def _stop(triggers: list[Trigger]) -> None:
    await asyncio.gather(*(t.stop() for t in triggers))


__all__ = ["check_manifest"]
