"""The host side of the WIT imports, bound per component.

Deny by default: every import is linked so any component instantiates, but a store,
database, broker destination or outbound host the manifest did not grant answers with an
error value that names the grant to add. Every refusal and failure is logged with the
component and the event id (bound by the app around each call) and never reaches past the
guest: the gateway keeps serving.

Secrets (variables marked ``secret = true``) are masked in everything a guest logs.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from typing import Any, Literal

import structlog
from wasmtime import component as wc

from bindings import WIT_PACKAGE
from bindings.host import lowering, trampolines
from bindings.host.kv import KeyValueError, KeyValueStore
from bindings.host.outbound_http import OutboundHttp, OutboundHttpError, OutboundRequest
from bindings.host.publish import OutboundMessage, Publisher, PublishError
from bindings.host.sql import SqlDatabase, SqlError
from gateway.errors import WasmgateError
from gateway.redaction import SecretRedactor

_PKG, _VERSION = WIT_PACKAGE.split("@")
LOG_LEVELS = ("debug", "info", "warn", "error")

# "fast": kv, config and log through bindings/host/trampolines.py (the default);
# "stock": every import through wasmtime-py's generic add_func trampoline, kept as the
# reference. WASMGATE_HOST_CALLS=stock in the environment switches a whole process back.
HostCallPath = Literal["fast", "stock"]


def host_call_path_from_env() -> HostCallPath:
    """Return the host-call path ``WASMGATE_HOST_CALLS`` asks for (default "fast")."""
    return "stock" if os.environ.get("WASMGATE_HOST_CALLS") == "stock" else "fast"

lowering.install()


@dataclasses.dataclass
class Grants:
    """What one component may reach beyond its key-value stores and variables."""

    databases: Mapping[str, SqlDatabase] = dataclasses.field(default_factory=dict)
    outbound: OutboundHttp | None = None
    publisher: Publisher | None = None


class HostImports:
    """The imports of one component: kv, config, log, publish, sql, outbound-http."""

    def __init__(self, component: str, stores: Mapping[str, KeyValueStore],
                 variables: Mapping[str, str], *, grants: Grants | None = None,
                 redactor: SecretRedactor | None = None,
                 host_calls: HostCallPath | None = None) -> None:
        self.component = component
        self.host_calls = host_calls or host_call_path_from_env()
        self.grants = grants or Grants()
        self.stores = dict(stores)
        self.variables = dict(variables)
        self.redact = redactor or SecretRedactor()
        self.log = structlog.get_logger("wasmgate.guest").bind(component=component)

    def link(self, linker: wc.Linker) -> None:
        """Define every import of the wasmgate:handler world in ``linker``."""
        with linker.root() as root:
            with root.add_instance(f"{_PKG}/kv@{_VERSION}") as kv:
                self._link_kv(kv)
            with root.add_instance(f"{_PKG}/config@{_VERSION}") as config:
                if self.host_calls == "fast":
                    trampolines.define(config, "get", trampolines.result_call(
                        ("string",), "option-string",
                        lambda name: (True, self.variables.get(name))))
                else:
                    config.add_func("get", self._config_get)
            with root.add_instance(f"{_PKG}/log@{_VERSION}") as log:
                if self.host_calls == "fast":
                    trampolines.define(log, "emit",
                                       trampolines.unit_call(("enum", "string"), self._emit))
                else:
                    log.add_func("emit", self._log_emit)
            with root.add_instance(f"{_PKG}/publish@{_VERSION}") as publish:
                publish.add_func("send", self._guard(self._publish))
            with root.add_instance(f"{_PKG}/sql@{_VERSION}") as sql:
                sql.add_func("query", self._guard(self._sql_query))
                sql.add_func("execute", self._guard(self._sql_execute))
            with root.add_instance(f"{_PKG}/outbound-http@{_VERSION}") as http:
                http.add_func("send", self._guard(self._http_send))

    def _link_kv(self, kv: wc.LinkerInstance) -> None:
        ops: dict[str, tuple[tuple[str, ...], str, Callable[..., Any]]] = {
            "get": (("string", "string"), "option-bytes",
                    lambda s, k: self._store(s).get(k)),
            "set": (("string", "string", "bytes", "option-u64"), "none",
                    lambda s, k, v, ttl: self._store(s).set(k, v, ttl)),
            "delete": (("string", "string"), "none", lambda s, k: self._store(s).delete(k)),
            "exists": (("string", "string"), "bool", lambda s, k: self._store(s).exists(k)),
            "list-keys": (("string", "string"), "strings",
                          lambda s, p: self._store(s).list_keys(p)),
            "increment": (("string", "string", "s64"), "s64",
                          lambda s, k, d: self._store(s).increment(k, d)),
        }
        for name, (kinds, ok, op) in ops.items():
            if self.host_calls == "fast":
                trampolines.define(kv, name, trampolines.result_call(
                    kinds, ok, lambda *args, op=op: self._attempt(op, *args)))
            else:
                kv.add_func(name, self._guard(op))

    def _attempt(self, op: Callable[..., Any], *args: Any) -> tuple[bool, Any]:
        """Run a host op: ``(True, value)``, or ``(False, message)`` for a refusal or
        failure the guest should see as ``err`` (logged here, secrets masked)."""
        try:
            return True, op(*args)
        except WasmgateError as exc:
            message = self.redact(str(exc))
            self.log.warning("host call refused or failed", error=message)
            return False, message

    def _guard(self, op: Callable[..., Any]) -> Callable[..., wc.Variant]:
        """Run a host op; its value becomes ``ok``, a refusal or failure ``err``.

        The result is always an explicit Variant: wasmtime-py cannot tell ``ok`` from
        ``err`` by Python type for every result shape (see bindings/host/lowering.py).
        """
        def call(_store: Any, *args: Any) -> wc.Variant:
            ok, value = self._attempt(op, *args)
            return wc.Variant("ok" if ok else "err", value)
        return call

    # -- kv ------------------------------------------------------------------------------

    def _store(self, name: str) -> KeyValueStore:
        try:
            return self.stores[name]
        except KeyError:
            raise KeyValueError(
                f"component `{self.component}` has no grant for key-value store `{name}`; "
                f"add it to `key-value-stores` of [component.{self.component}]") from None

    # -- config and log ------------------------------------------------------------------

    def _config_get(self, _store: Any, name: str) -> wc.Variant:
        return wc.Variant("ok", self.variables.get(name))

    def _log_emit(self, _store: Any, level: str, message: str) -> None:
        self._emit(level, message)

    def _emit(self, level: Any, message: str) -> None:
        name = level if isinstance(level, str) else getattr(level, "tag", "info")
        method = {"warn": "warning"}.get(name, name if name in LOG_LEVELS else "info")
        getattr(self.log, method)(self.redact(message))

    # -- publish -------------------------------------------------------------------------

    def _publish(self, m: Any) -> str:
        if self.grants.publisher is None:
            raise PublishError(
                f"component `{self.component}` has no `publish` grants; add "
                f"\"<broker>:<destination>\" to `publish` of [component.{self.component}]")
        message = OutboundMessage(broker=m.broker, destination=m.destination,
                                  key=None if m.key is None else bytes(m.key),
                                  headers=list(m.headers), body=bytes(m.body))
        return self.grants.publisher.send(message)

    # -- sql -----------------------------------------------------------------------------

    def _database(self, name: str) -> SqlDatabase:
        try:
            return self.grants.databases[name]
        except KeyError:
            raise SqlError(
                f"component `{self.component}` has no grant for sql database `{name}`; "
                f"add it to `sql-databases` of [component.{self.component}]") from None

    def _sql_query(self, database: str, statement: str, params: list[Any]) -> wc.Record:
        rows = self._database(database).query(statement, list(params))
        record = wc.Record()
        record.__dict__.update(columns=rows.columns, rows=rows.rows)
        return record

    def _sql_execute(self, database: str, statement: str, params: list[Any]) -> int:
        return self._database(database).execute(statement, list(params))

    # -- outbound http -------------------------------------------------------------------

    def _http_send(self, req: Any) -> wc.Record:
        outbound = self.grants.outbound
        if outbound is None or not outbound.allowed:
            raise OutboundHttpError(
                f"component `{self.component}` may not make outbound requests; list the "
                f"hosts in `allowed-outbound-hosts` of [component.{self.component}]")
        reply = outbound.send(OutboundRequest(
            method=req.method, url=req.url, headers=list(req.headers), body=bytes(req.body),
            timeout_ms=req.__dict__.get("timeout-ms")))
        record = wc.Record()
        record.__dict__.update(status=reply.status, headers=reply.headers, body=reply.body)
        return record
