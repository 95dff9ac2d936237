"""Contract harness for ``redis`` (pub/sub, at most once): fresh channels per test on the
shared Redis; fault tests get a private redis-server.

Pub/sub messages carry no key, and the trigger keeps order per channel, so a message
published "with a key" goes to the channel ``<base>.<key>`` (matched by the pattern
``<base>.*``): the channel is the ordering key, as a user of pub/sub would partition.
Messages without a key go to the plain channel ``<base>``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from tests.broker_process import BrokerProcess
from tests.contract.brokers.redis_streams import SHARED_URL, RedisHarness
from tests.contract.harness import DeadLetter, unique


class RedisPubSubHarness(RedisHarness):
    name: ClassVar[str] = "redis-pubsub"
    trigger_kind: ClassVar[str] = "redis"
    redelivers: ClassVar[bool] = False
    dead_letters: ClassVar[bool] = False
    redelivery_window_s: ClassVar[float] = 0.5
    persistent: ClassVar[bool] = False  # pub/sub keeps nothing to survive a kill

    def __init__(self, url: str = SHARED_URL, server: BrokerProcess | None = None) -> None:
        super().__init__(url, server)
        self.channel = unique("wg-contract")

    # setup(): channels exist while someone subscribes; nothing to create

    def trigger_options(self) -> dict[str, Any]:
        return {"channels": [self.channel], "patterns": [self.channel + ".*"]}

    async def publish(self, payload: bytes, *, key: bytes | None = None,
                      headers: dict[str, str] | None = None) -> None:
        channel = self.channel if key is None else f"{self.channel}.{key.decode()}"
        await self.client.publish(channel, payload)

    async def read_dead_letters(self) -> list[DeadLetter]:
        return []


HARNESS = RedisPubSubHarness
