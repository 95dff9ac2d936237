"""The app's shared host resources and each component's grants to them.

One object owns everything a handler can reach through its imports: key-value stores
(SQLite or Redis), SQL databases (SQLite or PostgreSQL), the broker producers used by
``publish``, and the secret redactor. Resources are opened once per app and shared by the
components granted them; :meth:`Capabilities.grants_for` hands each component only what its
``[component.x]`` table lists (deny by default).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

from bindings.host.imports import Grants, HostImports
from bindings.host.kv import KeyValueStore, SqliteKeyValue
from bindings.host.outbound_http import OutboundHttp
from bindings.host.publish import BrokerClients, Publisher
from bindings.host.sql import (
    PostgresDatabase,
    ResultLimits,
    SqlDatabase,
    SqliteDatabase,
)
from gateway.errors import ConfigError, WasmgateError
from gateway.manifest import LoadedManifest
from gateway.redaction import SecretRedactor
from gateway.variables import resolve_variables, secret_values


class Capabilities:
    """Opens shared resources lazily; builds each component's HostImports."""

    def __init__(self, manifest: LoadedManifest) -> None:
        self.manifest = manifest
        self.stores: dict[str, KeyValueStore] = {}
        self.databases: dict[str, SqlDatabase] = {}
        self.brokers = BrokerClients(dict(manifest.brokers))
        self.redactor = SecretRedactor(secret_values(manifest))
        self._outbound: list[OutboundHttp] = []

    def host_imports(self, component: str) -> HostImports:
        spec = self.manifest.component(component)
        stores = {name: self.open_store(name) for name in spec.key_value_stores}
        grants = Grants(
            databases={name: self.open_database(name) for name in spec.sql_databases},
            outbound=self._outbound_for(component),
            publisher=Publisher(component, spec.publish, self.brokers) if spec.publish
            else None,
        )
        return HostImports(component, stores, resolve_variables(self.manifest, component),
                           grants=grants, redactor=self.redactor)

    def open_store(self, name: str) -> KeyValueStore:
        """:meth:`store`, at load: a store that cannot be opened (a directory for `path`,
        a bad URL) is a ConfigError naming the manifest and the field."""
        spec = self.manifest.key_value_stores[name]
        with self._config_errors("key-value", name, "url" if spec.backend == "redis" else "path"):
            return self.store(name)

    def open_database(self, name: str) -> SqlDatabase:
        """:meth:`database`, at load, with errors as in :meth:`open_store`."""
        spec = self.manifest.sql_databases[name]
        with self._config_errors("sql", name, "url" if spec.backend == "postgres" else "path"):
            return self.database(name)

    @contextmanager
    def _config_errors(self, table: str, name: str, key: str) -> Iterator[None]:
        try:
            yield
        except ConfigError:
            raise
        # The store's own error (KeyValueError, SqlError) names the store but not the file;
        # sqlite3, the OS and URL parsers name neither.
        except (WasmgateError, OSError, ValueError, sqlite3.Error) as exc:
            raise ConfigError(f"cannot open [{table}.{name}]: {exc}",
                              path=str(self.manifest.path),
                              field=f"{table}.{name}.{key}") from exc

    def store(self, name: str) -> KeyValueStore:
        if name not in self.stores:
            spec = self.manifest.key_value_stores[name]
            if spec.backend == "redis" and spec.url:  # the manifest checked that url is set
                # Imported here: the redis client is an optional extra (wasmgate[brokers]).
                from bindings.host.kv_redis import RedisKeyValue

                self.stores[name] = RedisKeyValue(spec.url, name=name,
                                                  prefix=self.manifest.redis_prefix(name),
                                                  max_value_bytes=spec.max_value_bytes,
                                                  max_total_bytes=spec.max_total_bytes)
            else:
                self.stores[name] = SqliteKeyValue(self.manifest.kv_path(name), name=name,
                                                   max_value_bytes=spec.max_value_bytes,
                                                   max_total_bytes=spec.max_total_bytes)
        return self.stores[name]

    def database(self, name: str) -> SqlDatabase:
        if name not in self.databases:
            spec = self.manifest.sql_databases[name]
            limits = ResultLimits(max_rows=spec.max_rows, max_bytes=spec.max_result_bytes)
            if spec.backend == "postgres" and spec.url:  # the manifest checked that url is set
                self.databases[name] = PostgresDatabase(name, spec.url,
                                                        max_connections=spec.max_connections,
                                                        limits=limits)
            else:
                self.databases[name] = SqliteDatabase(name, self.manifest.sql_path(name),
                                                      limits=limits)
        return self.databases[name]

    def _outbound_for(self, component: str) -> OutboundHttp | None:
        spec = self.manifest.component(component)
        if not spec.allowed_outbound_hosts:
            return None
        outbound = OutboundHttp(component, spec.allowed_outbound_hosts,
                                timeout_ms=spec.outbound_timeout_ms,
                                max_response_bytes=spec.outbound_max_response_bytes)
        self._outbound.append(outbound)
        return outbound

    def start(self) -> None:
        """Bind the broker producers to the running loop (publish hands sends to it)."""
        if not self.brokers.bound:
            self.brokers.bind_loop(asyncio.get_running_loop())

    async def close(self) -> None:
        await self.brokers.close()
        for outbound in self._outbound:
            outbound.close()
        for store in self.stores.values():
            store.close()
        for database in self.databases.values():
            database.close()


__all__ = ["Capabilities"]
