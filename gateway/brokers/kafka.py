"""Kafka connections: aiokafka client options from a ``[brokers.<name>]`` table.

``url`` is ``kafka://[user@]host:port[,host:port...][?sasl-mechanism=SCRAM-SHA-256]``;
credentials come from ``username`` / ``password`` (SASL over TLS when ``[tls]`` is set).
The Kafka trigger's consumer and the ``publish`` producer both start from these options.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

from gateway.errors import ConfigError
from gateway.manifest import BrokerSpec
from gateway.tls import ssl_context

MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


def client_options(name: str, spec: BrokerSpec, *, path: str | None = None) -> dict[str, Any]:
    """aiokafka client keyword arguments for ``[brokers.<name>]``: bootstrap servers,
    timeouts, TLS and SASL. Raises ConfigError naming ``brokers.<name>.url`` / ``.tls``."""
    where = f"brokers.{name}.url"
    parts = urlsplit(spec.url)
    if parts.scheme != "kafka" or not parts.netloc:
        raise ConfigError(f"invalid Kafka URL {spec.url!r}; write kafka://host:9092 "
                          "(several bootstrap servers: kafka://host1:9092,host2:9092)",
                          path=path, field=where)
    servers = [s.strip() for s in parts.netloc.rpartition("@")[2].split(",") if s.strip()]
    for server in servers:
        host, _, port = server.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"bootstrap server {server!r} in {spec.url!r} needs host:port",
                              path=path, field=where)
    mechanism = parse_qs(parts.query).get("sasl-mechanism", ["PLAIN"])[0].upper()
    if mechanism not in MECHANISMS:
        raise ConfigError(f"unsupported sasl-mechanism {mechanism!r}; use PLAIN, "
                          "SCRAM-SHA-256 or SCRAM-SHA-512", path=path, field=where)
    options: dict[str, Any] = {
        "bootstrap_servers": servers,
        "request_timeout_ms": max(spec.connect_timeout_ms, 1000),
        "retry_backoff_ms": spec.reconnect_min_ms,
    }
    tls = ssl_context(spec.tls, broker=name, path=path)
    if tls is not None:
        options["ssl_context"] = tls
    if spec.username is not None:
        options.update(security_protocol="SASL_SSL" if tls else "SASL_PLAINTEXT",
                       sasl_mechanism=mechanism, sasl_plain_username=spec.username,
                       sasl_plain_password=spec.password or "")
    elif tls is not None:
        options["security_protocol"] = "SSL"
    return options


__all__ = ["MECHANISMS", "client_options"]
