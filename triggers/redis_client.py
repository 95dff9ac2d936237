"""A redis-py asyncio client built from a ``[brokers.<name>]`` table (kind ``redis``).

Both Redis adapters (pub/sub and Streams) connect the same way: the URL in redis-py's own
form (``redis://host:6379/0``, ``rediss://`` for TLS, ``unix:///path``), credentials and
TLS from the table, timeouts from ``connect-timeout-ms``.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff

from gateway.manifest import BrokerSpec

# Errors that mean "the connection is gone or the server is not answering": the consume
# loops back off and reconnect on these; anything else is a bug or a refusal to report.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    aioredis.ConnectionError, aioredis.TimeoutError, ConnectionError, OSError,
)


def redis_client(spec: BrokerSpec, *, read_timeout_s: float | None, retries: int,
                 name: str) -> aioredis.Redis:
    """A client for ``spec``.

    ``read_timeout_s`` must exceed any ``BLOCK`` the caller uses. ``retries`` is how often
    redis-py itself retries a command on a connection error (with the broker's reconnect
    backoff): 0 for consume loops, which own their reconnect and log the state change; a
    few for settle calls (XACK, the dead-letter MULTI), which are safe to repeat.
    """
    url = spec.url
    if spec.tls is not None and url.startswith("redis://"):
        url = "rediss://" + url.removeprefix("redis://")
    tls: dict[str, Any] = {}
    if spec.tls is not None:
        tls = {"ssl_ca_certs": spec.tls.ca_file, "ssl_certfile": spec.tls.cert_file,
               "ssl_keyfile": spec.tls.key_file,
               "ssl_cert_reqs": "none" if spec.tls.insecure_skip_verify else "required",
               "ssl_check_hostname": not spec.tls.insecure_skip_verify}
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
        **tls,
    )
    return client


__all__ = ["CONNECTION_ERRORS", "redis_client"]
