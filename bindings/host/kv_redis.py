"""The key-value import's second backend: Redis (``backend = "redis"`` in [key-value.x]).

Semantics match the SQLite store: keys are strings (≤ 1 KiB), values bytes up to
``max-value-bytes``, TTL in milliseconds (SET PX), atomic increment on ASCII decimal values
that keeps an existing TTL (INCRBY does), keys listed by literal prefix, and the store's
size (keys plus values) held under ``max-total-bytes``. Every key lives under the store's
``prefix`` (default ``wasmgate:<app>:<store>:``) so stores and apps sharing one Redis never
see each other's keys.

The size is kept next to the keys by Lua scripts that write and account in one atomic
step, under ``<prefix>\\xff...`` names (a byte no UTF-8 key contains, so no guest key can
collide with them)::

    <prefix>\\xffbytes    the store's size
    <prefix>\\xffsizes    hash: key -> bytes it counts
    <prefix>\\xffexpiry   sorted set: key -> when Redis expires it (ms), so the size of a
                         key Redis expired is given back on the next write

Keys written before the quota existed are not counted until they are written again.

Host calls run on worker threads, so this is redis-py's blocking client with its own
connection pool (thread safe). Every reply is waited for at most what is left of the
event's deadline (gateway/deadline.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis

from bindings.host.kv import (
    DEFAULT_MAX_TOTAL_BYTES,
    DEFAULT_MAX_VALUE_BYTES,
    KeyValueError,
    check_key,
    check_write,
    entry_size,
    not_an_integer,
    over_quota,
)
from gateway import deadline
from gateway.errors import DeadlineExceeded
from gateway.redaction import redact_url

_GLOB_SPECIALS = str.maketrans({c: "\\" + c for c in "*?[]\\"})
_META = b"\xff"  # never part of a UTF-8 key: the accounting keys cannot collide

# Forget keys Redis has expired (give their bytes back), then write if the store stays
# under its limit. KEYS: data key, size, sizes hash, expiry set. ARGV: mode (set | claim |
# incr), value or delta, ttl ms or "", max total bytes, key length in bytes.
# Returns {1, result} when written, {0} when a claim found the key taken, {-1, size} when
# the write would pass the limit (nothing written).
_WRITE = """
local now_t = redis.call('TIME')
local now = tonumber(now_t[1]) * 1000 + math.floor(tonumber(now_t[2]) / 1000)
for _, k in ipairs(redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now, 'LIMIT', 0, 1000)) do
  local size = redis.call('HGET', KEYS[3], k)
  if size then
    redis.call('DECRBY', KEYS[2], size)
    redis.call('HDEL', KEYS[3], k)
  end
  redis.call('ZREM', KEYS[4], k)
end
local mode, ttl, limit = ARGV[1], ARGV[3], tonumber(ARGV[4])
local old = tonumber(redis.call('HGET', KEYS[3], KEYS[1]) or '0')
local used = tonumber(redis.call('GET', KEYS[2]) or '0')
local result, size
if mode == 'incr' then
  local before = redis.call('GET', KEYS[1])
  redis.call('INCRBY', KEYS[1], ARGV[2])
  -- The text, not INCRBY's reply: Lua numbers are doubles and would round a large count.
  result = redis.call('GET', KEYS[1])
  size = tonumber(ARGV[5]) + string.len(result)
  if used - old + size > limit then
    if before then
      redis.call('SET', KEYS[1], before, 'KEEPTTL')
    else
      redis.call('DEL', KEYS[1])
    end
    return {-1, used - old + size}
  end
  local pttl = redis.call('PTTL', KEYS[1])
  redis.call('ZADD', KEYS[4], pttl > 0 and now + pttl or '+inf', KEYS[1])
else
  if mode == 'claim' and redis.call('EXISTS', KEYS[1]) == 1 then
    return {0}
  end
  size = tonumber(ARGV[5]) + string.len(ARGV[2])
  if used - old + size > limit then
    return {-1, used - old + size}
  end
  if ttl == '' then
    redis.call('SET', KEYS[1], ARGV[2])
    redis.call('ZADD', KEYS[4], '+inf', KEYS[1])
  else
    redis.call('SET', KEYS[1], ARGV[2], 'PX', ttl)
    redis.call('ZADD', KEYS[4], now + tonumber(ttl), KEYS[1])
  end
  result = 1
end
redis.call('HSET', KEYS[3], KEYS[1], size)
redis.call('INCRBY', KEYS[2], size - old)
return {1, result}
"""

# Delete a key and give its bytes back. KEYS: data key, size, sizes hash, expiry set.
_DELETE = """
redis.call('DEL', KEYS[1])
local size = redis.call('HGET', KEYS[3], KEYS[1])
if size then
  redis.call('DECRBY', KEYS[2], size)
  redis.call('HDEL', KEYS[3], KEYS[1])
end
redis.call('ZREM', KEYS[4], KEYS[1])
return 1
"""


class _DeadlineReads:
    """Waits for each reply at most what is left of the event's deadline.

    redis-py takes a per-read ``timeout``; without a deadline (a call outside an event) the
    connection's own ``socket_timeout`` applies. A read cut short disconnects, so a late
    reply can never be taken for the next command's.
    """

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        left = deadline.remaining()
        if left is not None and "timeout" not in kwargs:
            kwargs["timeout"] = max(left, 0.001)
        return super().read_response(*args, **kwargs)  # type: ignore[misc]


class _Connection(_DeadlineReads, redis.Connection):
    pass


class _SSLConnection(_DeadlineReads, redis.SSLConnection):
    pass


class _UnixConnection(_DeadlineReads, redis.UnixDomainSocketConnection):
    pass


def _connection_class(url: str) -> type[redis.connection.AbstractConnection]:
    scheme = url.partition("://")[0].lower()
    if scheme == "rediss":
        return _SSLConnection
    if scheme == "unix":
        return _UnixConnection
    return _Connection


class RedisKeyValue:
    """A key-value store in Redis under one key prefix."""

    def __init__(self, url: str, *, name: str, prefix: str,
                 max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
                 max_total_bytes: int = DEFAULT_MAX_TOTAL_BYTES,
                 timeout_s: float = 5.0) -> None:
        self.name = name
        self.prefix = prefix
        self.max_value_bytes = max_value_bytes
        self.max_total_bytes = max_total_bytes
        self._url = url
        self._redis: Any = redis.Redis.from_url(url, socket_timeout=timeout_s,
                                                socket_connect_timeout=timeout_s,
                                                connection_class=_connection_class(url))
        meta = prefix.encode() + _META
        self._meta = [meta + b"bytes", meta + b"sizes", meta + b"expiry"]
        self._write = self._redis.register_script(_WRITE)
        self._delete = self._redis.register_script(_DELETE)

    @contextmanager
    def _errors(self, op: str, key: str) -> Iterator[None]:
        deadline.check(f"key-value store {self.name!r}: {op} {key!r}")
        try:
            yield
        except redis.ResponseError as exc:
            raise KeyValueError(f"key-value store {self.name!r}: {op} {key!r}: {exc}") from None
        except redis.TimeoutError:
            left = deadline.remaining()
            if left is not None and left <= 0:
                raise DeadlineExceeded(
                    f"key-value store {self.name!r}: {op} {key!r}: Redis at "
                    f"{redact_url(self._url)} did not answer before the event's deadline "
                    "(`timeout-ms` of the component)") from None
            raise self._unavailable("timed out") from None
        except redis.RedisError as exc:
            raise self._unavailable(str(exc)) from None

    def _unavailable(self, why: str) -> KeyValueError:
        return KeyValueError(
            f"key-value store {self.name!r}: Redis at {redact_url(self._url)} is "
            f"unavailable ({why}); the call can be retried")

    def _keys(self, key: str) -> list[bytes]:
        return [(self.prefix + key).encode(), *self._meta]

    def _written(self, key: str, reply: list[Any]) -> Any:
        """The script's result, or the quota refusal it reported."""
        if int(reply[0]) == -1:
            raise over_quota(self.name, key, int(reply[1]), self.max_total_bytes)
        return reply

    def get(self, key: str) -> bytes | None:
        check_key(self.name, key)
        with self._errors("get", key):
            value = self._redis.get(self.prefix + key)
        return None if value is None else bytes(value)

    def set(self, key: str, value: bytes, ttl_ms: int | None = None) -> None:
        data = check_write(self.name, key, value, ttl_ms, self.max_value_bytes)
        with self._errors("set", key):
            reply = self._write(keys=self._keys(key), args=[
                "set", data, "" if ttl_ms is None else ttl_ms, self.max_total_bytes,
                entry_size(key, b"")])
        self._written(key, reply)

    def delete(self, key: str) -> None:
        check_key(self.name, key)
        with self._errors("delete", key):
            self._delete(keys=self._keys(key), args=[])

    def exists(self, key: str) -> bool:
        check_key(self.name, key)
        with self._errors("exists", key):
            return bool(self._redis.exists(self.prefix + key))

    def list_keys(self, prefix: str = "") -> list[str]:
        pattern = (self.prefix + prefix).translate(_GLOB_SPECIALS) + "*"
        with self._errors("list-keys", prefix):
            keys = list(self._redis.scan_iter(match=pattern, count=1000))
        cut = len(self.prefix.encode())
        names = (bytes(k)[cut:] for k in keys)
        return sorted(n.decode() for n in names if not n.startswith(_META))

    def increment(self, key: str, delta: int = 1) -> int:
        check_key(self.name, key)
        try:
            with self._errors("increment", key):
                reply = self._write(keys=self._keys(key), args=[
                    "incr", delta, "", self.max_total_bytes, entry_size(key, b"")])
        except KeyValueError:
            with self._errors("get", key):
                current = self._redis.get(self.prefix + key)
            if current is not None and not bytes(current).lstrip(b"-").isdigit():
                raise not_an_integer(self.name, key, bytes(current)) from None
            raise
        return int(self._written(key, reply)[1])

    def claim(self, key: str, value: bytes, ttl_ms: int) -> bool:
        """SET NX PX: True if this call set ``key`` (see SqliteKeyValue.claim)."""
        data = check_write(self.name, key, value, ttl_ms, self.max_value_bytes)
        with self._errors("claim", key):
            reply = self._write(keys=self._keys(key), args=[
                "claim", data, ttl_ms, self.max_total_bytes, entry_size(key, b"")])
        return int(self._written(key, reply)[0]) == 1

    def usage_bytes(self) -> int:
        """The store's size as counted: keys plus values written since the quota existed."""
        with self._errors("usage", ""):
            return int(self._redis.get(self._meta[0]) or 0)

    def close(self) -> None:
        self._redis.close()

    def __repr__(self) -> str:
        return f"RedisKeyValue(name={self.name!r}, url={redact_url(self._url)!r})"


__all__ = ["RedisKeyValue"]
