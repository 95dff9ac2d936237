"""AMQP (RabbitMQ) connections from a ``[brokers.<name>]`` table.

``url`` is ``amqp://host:5672/vhost`` (``amqps://`` for TLS); ``username`` / ``password``
replace the URL's credentials; ``[tls]`` gives the TLS context. The AMQP trigger and
``publish`` both connect through :func:`connect`.
"""

from __future__ import annotations

from typing import Any

from yarl import URL

from gateway.errors import ConfigError
from gateway.manifest import BrokerSpec
from gateway.tls import ssl_context


def connection_url(spec: BrokerSpec) -> str:
    """The broker URL with the manifest's ``username`` / ``password`` applied."""
    url = URL(spec.url)
    if spec.username is not None:
        url = url.with_user(spec.username)
    if spec.password is not None:
        url = url.with_password(spec.password)
    return str(url)


def connect_options(name: str, spec: BrokerSpec, *, path: str | None = None
                    ) -> dict[str, Any]:
    """Keyword arguments for ``aio_pika.connect``; ConfigError names the field."""
    if URL(spec.url).scheme not in ("amqp", "amqps"):
        raise ConfigError(f"invalid AMQP URL {spec.url!r}; write amqp://host:5672/vhost "
                          "(amqps:// for TLS)", path=path, field=f"brokers.{name}.url")
    return {"url": connection_url(spec),
            "ssl_context": ssl_context(spec.tls, broker=name, path=path),
            "timeout": spec.connect_timeout_ms / 1000}


async def connect(name: str, spec: BrokerSpec, *, connection_name: str) -> Any:
    """An open aio-pika connection (one attempt; the caller owns reconnecting)."""
    import aio_pika

    return await aio_pika.connect(**connect_options(name, spec),
                                  client_properties={"connection_name": connection_name})


__all__ = ["connect", "connect_options", "connection_url"]
