"""Contract harness for ``redis`` (pub/sub, at most once): fresh channels per test on the
shared Redis; fault tests get a private redis-server.

Pub/sub messages carry no key, and the trigger keeps order per channel, so a message
published "with a key" goes to the channel ``<base>.<key>`` (matched by the pattern
``<base>.*``): the channel is the ordering key, as a user of pub/sub would partition.
Messages without a key go to the plain channel ``<base>``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, ClassVar

import redis.asyncio as aioredis

from gateway.app import App
from tests.contract.brokers.redis_streams import SHARED_URL, wait_triggers_ready
from tests.contract.harness import DeadLetter, toml_options, toml_value, unique
from tests.redis_server import RedisServer


class RedisPubSubHarness:
    name: ClassVar[str] = "redis-pubsub"
    trigger_kind: ClassVar[str] = "redis"
    redelivers: ClassVar[bool] = False
    dead_letters: ClassVar[bool] = False
    redelivery_window_s: ClassVar[float] = 0.5

    def __init__(self, url: str = SHARED_URL, server: RedisServer | None = None) -> None:
        self.url = url
        self.server = server
        self.channel = unique("wg-contract")
        self.client = aioredis.Redis.from_url(url)

    async def setup(self) -> None:
        pass  # channels exist while someone subscribes; nothing to create

    async def teardown(self) -> None:
        await self.client.aclose()

    def broker_toml(self) -> str:
        return f'kind = "redis"\nurl = {toml_value(self.url)}\nreconnect-max-ms = 1000\n'

    def trigger_toml(self, **options: Any) -> str:
        base = {"component": "contract", "broker": "b", "channels": [self.channel],
                "patterns": [self.channel + ".*"]}
        return toml_options({**base, **options})

    async def publish(self, payload: bytes, *, key: bytes | None = None,
                      headers: dict[str, str] | None = None) -> None:
        channel = self.channel if key is None else f"{self.channel}.{key.decode()}"
        await self.client.publish(channel, payload)

    async def read_dead_letters(self) -> list[DeadLetter]:
        return []

    async def interrupt(self) -> None:
        assert self.server is not None, "interrupt() needs a private() harness"
        await self.server.restart()
        await self.client.connection_pool.disconnect()

    @classmethod
    @asynccontextmanager
    async def private(cls) -> AsyncIterator[RedisPubSubHarness]:
        server = RedisServer(persistent=False)
        await server.start()
        harness = cls(server.url, server)
        try:
            await harness.setup()
            yield harness
            await harness.teardown()
        finally:
            server.close()

    async def wait_ready(self, app: App) -> None:
        await wait_triggers_ready(app, self.trigger_kind)


HARNESS = RedisPubSubHarness
