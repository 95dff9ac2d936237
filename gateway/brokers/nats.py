"""NATS connections: nats-py ``connect()`` options from a ``[brokers.<name>]`` table.

``url`` is one server or a comma-separated list (``nats://a:4222,nats://b:4222``);
``username`` / ``password`` and ``[tls]`` apply to every server. The NATS triggers'
connection (:mod:`triggers.nats_connection`) and ``publish`` both connect with these.
"""

from __future__ import annotations

from typing import Any

from gateway.errors import ConfigError
from gateway.manifest import BrokerSpec
from gateway.tls import ssl_context


def connect_options(name: str, spec: BrokerSpec, *, path: str | None = None
                    ) -> dict[str, Any]:
    """Keyword arguments for ``nats.aio.client.Client.connect`` (servers, credentials,
    TLS, connect timeout); ConfigError names ``brokers.<name>.url`` / ``.tls``."""
    servers = [u.strip() for u in spec.url.split(",") if u.strip()]
    for server in servers:
        if "://" not in server:
            raise ConfigError(f"NATS server {server!r} needs a scheme: nats://host:4222 "
                              "(tls://host:4222 for TLS)", path=path,
                              field=f"brokers.{name}.url")
    options: dict[str, Any] = {
        "servers": servers,
        "connect_timeout": max(1, spec.connect_timeout_ms // 1000),
    }
    if spec.username is not None:
        options["user"] = spec.username
        options["password"] = spec.password or ""
    tls = ssl_context(spec.tls, broker=name, path=path)
    if tls is not None:
        options["tls"] = tls
    return options


__all__ = ["connect_options"]
