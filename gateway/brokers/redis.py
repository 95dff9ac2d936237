"""Redis connections: a redis-py asyncio client from a ``[brokers.<name>]`` table.

Both Redis adapters (pub/sub and Streams) and ``publish`` connect the same way: the URL in
redis-py's own form (``redis://host:6379/0``, ``rediss://`` for TLS, ``unix:///path``),
credentials and TLS from the table, timeouts from ``connect-timeout-ms``.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff

from gateway.errors import ConfigError
from gateway.manifest import BrokerSpec
from gateway.tls import ssl_context

_SCHEMES = ("redis://", "rediss://", "unix://")

# Errors that mean "the connection is gone or the server is not answering": the consume
# loops back off and reconnect on these; anything else is a bug or a refusal to report.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    aioredis.ConnectionError, aioredis.TimeoutError, ConnectionError, OSError,
)


def client_options(name: str, spec: BrokerSpec, *, path: str | None = None
                   ) -> dict[str, Any]:
    """The URL and TLS keyword arguments for redis-py; ConfigError names the field (the TLS
    files are loaded once here, so a missing ``ca-file`` fails at load)."""
    url = spec.url
    if not url.startswith(_SCHEMES):
        raise ConfigError(f"invalid Redis URL {url!r}; write redis://host:6379/0 (rediss:// "
                          "for TLS, unix:///path/to/socket)", path=path,
                          field=f"brokers.{name}.url")
    if spec.tls is None:
        return {"url": url}
    ssl_context(spec.tls, broker=name, path=path)
    if url.startswith("redis://"):
        url = "rediss://" + url.removeprefix("redis://")
    return {"url": url, "ssl_ca_certs": spec.tls.ca_file, "ssl_certfile": spec.tls.cert_file,
            "ssl_keyfile": spec.tls.key_file,
            "ssl_cert_reqs": "none" if spec.tls.insecure_skip_verify else "required",
            "ssl_check_hostname": not spec.tls.insecure_skip_verify}


def redis_client(spec: BrokerSpec, *, read_timeout_s: float | None, retries: int,
                 name: str) -> aioredis.Redis:
    """A client for ``spec``.

    ``read_timeout_s`` must exceed any ``BLOCK`` the caller uses. ``retries`` is how often
    redis-py itself retries a command on a connection error (with the broker's reconnect
    backoff): 0 for consume loops, which own their reconnect and log the state change; a
    few for settle calls (XACK, the dead-letter MULTI), which are safe to repeat.
    """
    # Already checked at load (gateway.brokers.check), where errors name the broker.
    options = client_options(name, spec)
    url = str(options.pop("url"))
    backoff = (ExponentialWithJitterBackoff(cap=spec.reconnect_max_ms / 1000,
                                            base=spec.reconnect_min_ms / 1000)
               if retries else NoBackoff())
    client: aioredis.Redis = aioredis.Redis.from_url(
        url,
        username=spec.username,
        password=spec.password,
        socket_connect_timeout=spec.connect_timeout_ms / 1000,
        socket_timeout=read_timeout_s,
        retry=Retry(backoff, retries),
        client_name=name,
        **options,
    )
    return client


__all__ = ["CONNECTION_ERRORS", "client_options", "redis_client"]
