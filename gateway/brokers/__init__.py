"""One connection module per broker kind, used by its triggers and by ``publish`` alike.

Each module turns a ``[brokers.<name>]`` table into its client's connection options (URL
forms, server lists, credentials, SASL, TLS through :mod:`gateway.tls`) and is the only
place that does. :func:`check` runs them all when the app loads, so a bad table (a URL in
the wrong form, a missing TLS ``ca-file``) is a ConfigError naming the field for every
broker, before any connection is tried.

=========  ==========================  ======================================
kind       module                      used by
=========  ==========================  ======================================
kafka      :mod:`gateway.brokers.kafka`  triggers.kafka, publish
nats       :mod:`gateway.brokers.nats`   triggers.nats_connection, publish
amqp       :mod:`gateway.brokers.amqp`   triggers.amqp, publish
redis      :mod:`gateway.brokers.redis`  triggers.redis_pubsub / _streams, publish
=========  ==========================  ======================================
"""

from __future__ import annotations

from gateway.manifest import BrokerSpec


def check(brokers: dict[str, BrokerSpec], *, path: str | None = None) -> None:
    """Validate every ``[brokers.<name>]`` table (raises ConfigError naming the field)."""
    import importlib

    # Imported per kind in use: each pulls in its client library (the brokers extra).
    for name, spec in brokers.items():
        module = importlib.import_module(f"gateway.brokers.{spec.kind}")
        module.__dict__[_OPTIONS[spec.kind]](name, spec, path=path)


_OPTIONS = {"kafka": "client_options", "nats": "connect_options", "amqp": "connect_options",
            "redis": "client_options"}


__all__ = ["check"]
