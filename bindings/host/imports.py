"""The host side of the WIT imports, bound per component.

The native executor (native/src/host.rs) calls one method of :class:`HostImports` per
import, on the pool's worker thread, with the GIL held for that call only and inside the
event's context (so the event id and deadline bound by the caller are visible). A method
returns the import's ``ok`` value; raising :class:`HostCallFailed` makes its ``err`` value,
with the exception's text. ``config.get`` is answered natively from :attr:`variables`.

Deny by default: every import is linked so any component instantiates, but a store,
database, broker destination or outbound host the manifest did not grant answers with an
error value that names the grant to add. Every refusal and failure is logged with the
component and the event id and never reaches past the guest: the gateway keeps serving.

Secrets (variables marked ``secret = true``) are masked in everything a guest logs and in
every error it is given.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import TypeVar

import structlog

from bindings.host.kv import KeyValueError, KeyValueStore
from bindings.host.log_budget import LOG_BUDGET, LOG_RECORD_BYTES, LogBudget, log_budget_allows
from bindings.host.outbound_http import OutboundHttp, OutboundHttpError, OutboundRequest
from bindings.host.publish import OutboundMessage, Publisher, PublishError
from bindings.host.sql import SqlDatabase, SqlError, SqlValue
from gateway.errors import WasmgateError
from gateway.redaction import SecretRedactor

LOG_LEVELS = ("debug", "info", "warn", "error")
# One `log.emit` message, or the guest's text in one refusal record, is cut past this many
# characters, and says how many it dropped.
LOG_MESSAGE_MAX_CHARS = 8 * 1024
T = TypeVar("T")
Pairs = list[tuple[str, str]]


class HostCallFailed(WasmgateError):
    """A host call was refused or failed; its text becomes the import's ``err`` value."""


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
                 redactor: SecretRedactor | None = None) -> None:
        self.component = component
        self.grants = grants or Grants()
        self.stores = dict(stores)
        self.variables = dict(variables)
        self.redact = redactor or SecretRedactor()
        self.log = structlog.get_logger("wasmgate.guest").bind(component=component)

    def _attempt(self, op: Callable[[], T]) -> T:
        """Run a host op; a refusal or failure is logged (masked) and raised as
        :class:`HostCallFailed` for the guest to see as ``err``."""
        try:
            return op()
        except WasmgateError as exc:
            message = self.redact(str(exc))
            # The text holds what the guest passed (a store name, a URL): it counts against
            # the call's log budget, and one record shows at most LOG_MESSAGE_MAX_CHARS.
            logged = self._cut_for_log(message)
            if log_budget_allows(logged, "host call refused or failed"):
                self.log.warning("host call refused or failed", error=logged)
            raise HostCallFailed(message) from None
        except Exception as exc:
            # A bug on our side: the guest gets an error value, the log gets the details.
            logged = self._cut_for_log(self.redact(f"{type(exc).__name__}: {exc}"))
            if log_budget_allows(logged, "host call raised unexpectedly"):
                self.log.exception("host call raised unexpectedly", error=logged)
            raise HostCallFailed(
                f"host call failed inside the gateway ({type(exc).__name__}); the gateway "
                "log has the details") from None

    def _cut_for_log(self, text: str) -> str:
        """``text`` (masked already) cut for one log record, saying how much was cut."""
        if len(text) <= LOG_MESSAGE_MAX_CHARS:
            return text
        cut = len(text) - LOG_MESSAGE_MAX_CHARS
        return f"{self.redact.cut(text, LOG_MESSAGE_MAX_CHARS)}... ({cut} characters dropped)"

    # -- kv ------------------------------------------------------------------------------

    def _store(self, name: str) -> KeyValueStore:
        try:
            return self.stores[name]
        except KeyError:
            raise KeyValueError(
                f"component `{self.component}` has no grant for key-value store `{name}`; "
                f"add it to `key-value-stores` of [component.{self.component}]") from None

    def kv_open(self, store: str) -> None:
        """Check the grant of ``store`` (``wasi:keyvalue/store.open``); raise if missing."""
        self._attempt(lambda: self._store(store))

    def kv_get(self, store: str, key: str) -> bytes | None:
        return self._attempt(lambda: self._store(store).get(key))

    def kv_set(self, store: str, key: str, value: bytes, ttl_ms: int | None) -> None:
        self._attempt(lambda: self._store(store).set(key, value, ttl_ms))

    def kv_delete(self, store: str, key: str) -> None:
        self._attempt(lambda: self._store(store).delete(key))

    def kv_exists(self, store: str, key: str) -> bool:
        return self._attempt(lambda: self._store(store).exists(key))

    def kv_list_keys(self, store: str, prefix: str) -> list[str]:
        return self._attempt(lambda: self._store(store).list_keys(prefix))

    def kv_increment(self, store: str, key: str, delta: int) -> int:
        return self._attempt(lambda: self._store(store).increment(key, delta))

    # -- log -----------------------------------------------------------------------------

    def log_emit(self, level: str, message: str) -> None:
        if len(message) > LOG_MESSAGE_MAX_CHARS:
            cut = len(message) - LOG_MESSAGE_MAX_CHARS
            # Masked as it is cut: the cut may fall inside a secret.
            message = (f"{self.redact.cut(message, LOG_MESSAGE_MAX_CHARS)}... "
                       f"({cut} characters dropped)")
        else:
            message = self.redact(message)
        if not log_budget_allows(message, "log.emit"):
            return
        method = {"warn": "warning"}.get(level, level if level in LOG_LEVELS else "info")
        getattr(self.log, method)(message)

    # -- publish -------------------------------------------------------------------------

    def publish_send(self, broker: str, destination: str, key: bytes | None,
                     headers: Pairs, body: bytes) -> str:
        def send() -> str:
            if self.grants.publisher is None:
                raise PublishError(
                    f"component `{self.component}` has no `publish` grants; add "
                    f"\"<broker>:<destination>\" to `publish` of [component.{self.component}]")
            return self.grants.publisher.send(OutboundMessage(
                broker=broker, destination=destination, key=key, headers=headers, body=body))
        return self._attempt(send)

    # -- sql -----------------------------------------------------------------------------

    def _database(self, name: str) -> SqlDatabase:
        try:
            return self.grants.databases[name]
        except KeyError:
            raise SqlError(
                f"component `{self.component}` has no grant for sql database `{name}`; "
                f"add it to `sql-databases` of [component.{self.component}]") from None

    def sql_query(self, database: str, statement: str,
                  params: list[SqlValue]) -> tuple[list[str], list[list[SqlValue]]]:
        def query() -> tuple[list[str], list[list[SqlValue]]]:
            rows = self._database(database).query(statement, params)
            return rows.columns, rows.rows
        return self._attempt(query)

    def sql_execute(self, database: str, statement: str, params: list[SqlValue]) -> int:
        return self._attempt(lambda: self._database(database).execute(statement, params))

    # -- outbound http -------------------------------------------------------------------

    def http_send(self, method: str, url: str, headers: Pairs, body: bytes,
                  timeout_ms: int | None) -> tuple[int, Pairs, bytes]:
        def send() -> tuple[int, Pairs, bytes]:
            outbound = self.grants.outbound
            if outbound is None or not outbound.allowed:
                raise OutboundHttpError(
                    f"component `{self.component}` may not make outbound requests; list the "
                    f"hosts in `allowed-outbound-hosts` of [component.{self.component}]")
            reply = outbound.send(OutboundRequest(method=method, url=url, headers=headers,
                                                  body=body, timeout_ms=timeout_ms))
            return reply.status, reply.headers, reply.body
        return self._attempt(send)


__all__ = ["LOG_BUDGET", "LOG_RECORD_BYTES", "Grants", "HostCallFailed", "HostImports",
           "LogBudget", "log_budget_allows"]
