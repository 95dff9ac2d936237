"""Contract harness for ``redis-streams``: a fresh stream, group and dead-letter stream per
test on the shared Redis (127.0.0.1:6379); fault tests get a private redis-server."""

from __future__ import annotations

from typing import Any, ClassVar

import redis.asyncio as aioredis

from tests.broker_process import BrokerProcess
from tests.contract.harness import DeadLetter, HarnessBase, unique
from tests.redis_server import RedisServer

SHARED_URL = "redis://127.0.0.1:6379/0"
GROUP = "contract"


class RedisHarness(HarnessBase):
    """What the Redis Streams and pub/sub harnesses share: the broker, the test's client,
    a private ``redis-server`` for fault tests."""

    broker_kind: ClassVar[str] = "redis"
    reconnect: ClassVar[dict[str, int]] = {"reconnect-max-ms": 1000}
    persistent: ClassVar[bool] = True  # the private server keeps its data across a kill

    def __init__(self, url: str = SHARED_URL, server: BrokerProcess | None = None) -> None:
        super().__init__(url, server)
        self.client = aioredis.Redis.from_url(url)

    async def teardown(self) -> None:
        await self.client.aclose()

    @classmethod
    def private_server(cls) -> RedisServer:
        return RedisServer(persistent=cls.persistent)

    async def reconnected(self) -> None:
        await self.client.connection_pool.disconnect()


class RedisStreamsHarness(RedisHarness):
    name: ClassVar[str] = "redis-streams"
    trigger_kind: ClassVar[str] = "redis-streams"
    redelivers: ClassVar[bool] = True
    dead_letters: ClassVar[bool] = True
    # Longer than claim-idle-ms below: an entry wrongly left pending would be reclaimed
    # (XAUTOCLAIM) within the window, not only re-read by the same consumer name.
    redelivery_window_s: ClassVar[float] = 3.0

    def __init__(self, url: str = SHARED_URL, server: BrokerProcess | None = None) -> None:
        super().__init__(url, server)
        self.stream = unique("wg-contract")
        self.dead = self.stream + ".dead"

    async def setup(self) -> None:
        # The group exists before the gateway starts (as an operator would create it), at
        # 0, so entries published before the gateway is up are consumed too.
        await self.client.xgroup_create(self.stream, GROUP, id="0", mkstream=True)

    async def teardown(self) -> None:
        await self.client.delete(self.stream, self.dead)
        await super().teardown()

    def trigger_options(self) -> dict[str, Any]:
        return {"stream": self.stream, "group": GROUP, "dead-letter": self.dead,
                "block-ms": 200, "claim-idle-ms": 2000, "claim-interval-ms": 500}

    async def publish(self, payload: bytes, *, key: bytes | None = None,
                      headers: dict[str, str] | None = None) -> None:
        fields: dict[Any, Any] = {"data": payload}
        if key is not None:
            fields["key"] = key
        fields.update(headers or {})
        await self.client.xadd(self.stream, fields)

    async def break_dead_letters(self) -> None:
        await self.client.set(self.dead, b"not a stream")  # XADD: WRONGTYPE

    async def mend_dead_letters(self) -> None:
        await self.client.delete(self.dead)

    async def read_dead_letters(self) -> list[DeadLetter]:
        letters = []
        if await self.client.type(self.dead) not in (b"stream", b"none"):
            return []  # broken on purpose (break_dead_letters): holds no dead letter
        for _entry_id, fields in await self.client.xrange(self.dead):
            headers = {k.decode(): v.decode() for k, v in fields.items()
                       if k not in (b"data", b"key")}
            letters.append(DeadLetter(data=fields.get(b"data", b""), headers=headers))
        return letters


HARNESS = RedisStreamsHarness
