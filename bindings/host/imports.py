"""The host side of the WIT imports (`kv`, `config`, `log`), bound per component.

Deny by default: every import is linked so any component instantiates, but a store the
manifest did not grant answers with an error value naming the grant to add.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import structlog
from wasmtime import component as wc

from bindings import WIT_PACKAGE
from bindings.host.kv import KeyValueError, SqliteKeyValue

_PKG, _VERSION = WIT_PACKAGE.split("@")
LOG_LEVELS = ("debug", "info", "warn", "error")


class HostImports:
    """What one component may reach: its granted kv stores, its variables, its logger."""

    def __init__(self, component: str, stores: Mapping[str, SqliteKeyValue],
                 variables: Mapping[str, str]) -> None:
        self.component = component
        self.stores = dict(stores)
        self.variables = dict(variables)
        self.log = structlog.get_logger("wasmgate.guest").bind(component=component)

    def _store(self, name: str) -> SqliteKeyValue:
        try:
            return self.stores[name]
        except KeyError:
            raise KeyValueError(
                f"component `{self.component}` has no grant for key-value store `{name}`; "
                f"add it to `key-value-stores` of [component.{self.component}]") from None

    def link(self, linker: wc.Linker) -> None:
        """Define the kv, config and log imports in ``linker``."""
        with linker.root() as root:
            with root.add_instance(f"{_PKG}/kv@{_VERSION}") as kv:
                kv.add_func("get", self._kv_get)
                kv.add_func("set", self._guard(lambda s, k, v, ttl: self._store(s).set(k, v, ttl)))
                kv.add_func("delete", self._guard(lambda s, k: self._store(s).delete(k)))
                kv.add_func("exists", self._guard(lambda s, k: self._store(s).exists(k)))
                kv.add_func("list-keys", self._guard(lambda s, p: self._store(s).list_keys(p)))
                kv.add_func("increment",
                            self._guard(lambda s, k, d: self._store(s).increment(k, d)))
            with root.add_instance(f"{_PKG}/config@{_VERSION}") as config:
                config.add_func("get", self._config_get)
            with root.add_instance(f"{_PKG}/log@{_VERSION}") as log:
                log.add_func("emit", self._log_emit)

    def _guard(self, op: Any) -> Any:
        # `result<T, string>` whose ok type cannot be mistaken for a string: returning the
        # message lowers it as `err`.
        def call(_store: Any, *args: Any) -> Any:
            try:
                return op(*args)
            except KeyValueError as exc:
                self.log.warning("host call refused", error=str(exc))
                return str(exc)
        return call

    def _kv_get(self, _store: Any, store: str, key: str) -> bytes | None:
        try:
            return self._store(store).get(key)
        except KeyValueError as exc:
            # wasmtime-py cannot lower `err` for result<option<list<u8>>, string> (its
            # untagged matching takes any value as `ok`), so a refused get traps the guest
            # with the message instead. Tracked in the issue note.
            self.log.warning("host call refused", error=str(exc))
            raise

    def _config_get(self, _store: Any, name: str) -> wc.Variant:
        return wc.Variant("ok", self.variables.get(name))

    def _log_emit(self, _store: Any, level: str, message: str) -> None:
        name = level if isinstance(level, str) else getattr(level, "tag", "info")
        method = {"warn": "warning"}.get(name, name if name in LOG_LEVELS else "info")
        getattr(self.log, method)(message)
