"""Keeping the entries a Redis Streams consumer holds from looking idle.

Another consumer's XAUTOCLAIM takes entries pending longer than the visibility timeout
(``claim-idle-ms``). An entry this instance still runs, or waits to retry, is not dead:
every third of that timeout it is re-claimed to this consumer with XCLAIM JUSTID, which
resets its idle time without bumping Redis's delivery count.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

from triggers.delivery import describe
from triggers.redis_entries import as_bytes

log = structlog.get_logger("wasmgate.redis-streams")


async def renew_leases(client: aioredis.Redis, stream: str, group: str, consumer: str, *,
                       held: set[bytes], claim_idle_ms: int,
                       stopped_within: Callable[[float], Awaitable[bool]]) -> None:
    """Re-claim ``held`` entries to ``consumer`` every third of ``claim_idle_ms`` until
    ``stopped_within`` says the trigger is stopping."""
    period_ms = max(1, claim_idle_ms // 3)
    # Ends on the stop flag, not only on cancellation: redis-py can turn a cancel that
    # lands mid-command into a TimeoutError (a RedisError, logged below), and a loop that
    # outlived its cancel would keep stop() waiting forever.
    while not await stopped_within(period_ms / 1000):
        if not held:
            continue
        try:
            # Only entries still owned by this consumer: one reclaimed by another consumer
            # (we were too slow) is theirs now.
            rows = await client.xpending_range(stream, group, "-", "+", count=len(held) + 1000,
                                               consumername=consumer, idle=period_ms // 2)
            ids: list[Any] = [row["message_id"] for row in rows
                              if as_bytes(row["message_id"]) in held]
            if ids:
                await client.xclaim(stream, group, consumer, 0, ids, justid=True)
        except RedisError as exc:
            log.debug("lease renewal failed", stream=stream, error=describe(exc))


__all__ = ["renew_leases"]
