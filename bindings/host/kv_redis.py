"""The key-value import's second backend: Redis (``backend = "redis"`` in [key-value.x]).

Semantics match the SQLite store: keys are strings (≤ 1 KiB), values bytes up to the size
limit, TTL in milliseconds (SET PX), atomic increment on ASCII decimal values that keeps an
existing TTL (INCRBY does), keys listed by literal prefix. Every key lives under the
store's ``prefix`` (default ``wasmgate:<app>:<store>:``) so stores and apps sharing one
Redis never see each other's keys.

Host calls run on worker threads, so this is redis-py's blocking client with its own
connection pool (thread safe).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis

from bindings.host.kv import (
    DEFAULT_MAX_VALUE_BYTES,
    KeyValueError,
    check_key,
    check_write,
    not_an_integer,
)
from gateway.redaction import redact_url

_GLOB_SPECIALS = str.maketrans({c: "\\" + c for c in "*?[]\\"})


class RedisKeyValue:
    """A key-value store in Redis under one key prefix."""

    def __init__(self, url: str, *, name: str, prefix: str,
                 max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
                 timeout_s: float = 5.0) -> None:
        self.name = name
        self.prefix = prefix
        self.max_value_bytes = max_value_bytes
        self._url = url
        self._redis: Any = redis.Redis.from_url(url, socket_timeout=timeout_s,
                                                socket_connect_timeout=timeout_s)

    @contextmanager
    def _errors(self, op: str, key: str) -> Iterator[None]:
        try:
            yield
        except redis.ResponseError as exc:
            raise KeyValueError(f"key-value store {self.name!r}: {op} {key!r}: {exc}") from None
        except redis.RedisError as exc:
            raise KeyValueError(
                f"key-value store {self.name!r}: Redis at {redact_url(self._url)} is "
                f"unavailable ({exc}); the call can be retried") from None

    def get(self, key: str) -> bytes | None:
        check_key(self.name, key)
        with self._errors("get", key):
            value = self._redis.get(self.prefix + key)
        return None if value is None else bytes(value)

    def set(self, key: str, value: bytes, ttl_ms: int | None = None) -> None:
        data = check_write(self.name, key, value, ttl_ms, self.max_value_bytes)
        with self._errors("set", key):
            self._redis.set(self.prefix + key, data, px=ttl_ms)

    def delete(self, key: str) -> None:
        check_key(self.name, key)
        with self._errors("delete", key):
            self._redis.delete(self.prefix + key)

    def exists(self, key: str) -> bool:
        check_key(self.name, key)
        with self._errors("exists", key):
            return bool(self._redis.exists(self.prefix + key))

    def list_keys(self, prefix: str = "") -> list[str]:
        pattern = (self.prefix + prefix).translate(_GLOB_SPECIALS) + "*"
        with self._errors("list-keys", prefix):
            keys = list(self._redis.scan_iter(match=pattern, count=1000))
        cut = len(self.prefix.encode())
        return sorted(bytes(k)[cut:].decode() for k in keys)

    def increment(self, key: str, delta: int = 1) -> int:
        check_key(self.name, key)
        try:
            with self._errors("increment", key):
                return int(self._redis.incrby(self.prefix + key, delta))
        except KeyValueError:
            with self._errors("get", key):
                current = self._redis.get(self.prefix + key)
            if current is not None and not bytes(current).lstrip(b"-").isdigit():
                raise not_an_integer(self.name, key, bytes(current)) from None
            raise

    def claim(self, key: str, value: bytes, ttl_ms: int) -> bool:
        """SET NX PX: True if this call set ``key`` (see SqliteKeyValue.claim)."""
        data = check_write(self.name, key, value, ttl_ms, self.max_value_bytes)
        with self._errors("claim", key):
            return bool(self._redis.set(self.prefix + key, data, nx=True, px=ttl_ms))

    def close(self) -> None:
        self._redis.close()

    def __repr__(self) -> str:
        return f"RedisKeyValue(name={self.name!r}, url={redact_url(self._url)!r})"
