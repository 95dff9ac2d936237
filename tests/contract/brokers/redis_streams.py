"""Contract harness for ``redis-streams``: a fresh stream, group and dead-letter stream per
test on the shared Redis (127.0.0.1:6379); fault tests get a private redis-server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, ClassVar

import redis.asyncio as aioredis

from gateway.app import App
from tests.contract.harness import DeadLetter, toml_options, toml_value, unique
from tests.redis_server import RedisServer

SHARED_URL = "redis://127.0.0.1:6379/0"
GROUP = "contract"


class RedisStreamsHarness:
    name: ClassVar[str] = "redis-streams"
    trigger_kind: ClassVar[str] = "redis-streams"
    redelivers: ClassVar[bool] = True
    dead_letters: ClassVar[bool] = True
    # Longer than claim-idle-ms below: an entry wrongly left pending would be reclaimed
    # (XAUTOCLAIM) within the window, not only re-read by the same consumer name.
    redelivery_window_s: ClassVar[float] = 3.0

    def __init__(self, url: str = SHARED_URL, server: RedisServer | None = None) -> None:
        self.url = url
        self.server = server
        self.stream = unique("wg-contract")
        self.dead = self.stream + ".dead"
        self.client = aioredis.Redis.from_url(url)

    async def setup(self) -> None:
        # The group exists before the gateway starts (as an operator would create it), at
        # 0, so entries published before the gateway is up are consumed too.
        await self.client.xgroup_create(self.stream, GROUP, id="0", mkstream=True)

    async def teardown(self) -> None:
        await self.client.delete(self.stream, self.dead)
        await self.client.aclose()

    def broker_toml(self) -> str:
        return f'kind = "redis"\nurl = {toml_value(self.url)}\nreconnect-max-ms = 1000\n'

    def trigger_toml(self, **options: Any) -> str:
        base = {"component": "contract", "broker": "b", "stream": self.stream,
                "group": GROUP, "dead-letter": self.dead, "block-ms": 200,
                "claim-idle-ms": 2000, "claim-interval-ms": 500}
        return toml_options({**base, **options})

    async def publish(self, payload: bytes, *, key: bytes | None = None,
                      headers: dict[str, str] | None = None) -> None:
        fields: dict[Any, Any] = {"data": payload}
        if key is not None:
            fields["key"] = key
        fields.update(headers or {})
        await self.client.xadd(self.stream, fields)

    async def read_dead_letters(self) -> list[DeadLetter]:
        letters = []
        for _entry_id, fields in await self.client.xrange(self.dead):
            headers = {k.decode(): v.decode() for k, v in fields.items()
                       if k not in (b"data", b"key")}
            letters.append(DeadLetter(data=fields.get(b"data", b""), headers=headers))
        return letters

    async def interrupt(self) -> None:
        assert self.server is not None, "interrupt() needs a private() harness"
        await self.server.restart()
        await self.client.connection_pool.disconnect()

    @classmethod
    @asynccontextmanager
    async def private(cls) -> AsyncIterator[RedisStreamsHarness]:
        server = RedisServer()
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


async def wait_triggers_ready(app: App, kind: str, timeout: float = 30.0) -> None:
    """Until every trigger of ``kind`` has joined its group / confirmed its subscriptions."""
    for trigger in app.triggers:
        if trigger.kind == kind:
            ready: asyncio.Event = trigger.ready  # type: ignore[attr-defined]
            await asyncio.wait_for(ready.wait(), timeout)


HARNESS = RedisStreamsHarness
