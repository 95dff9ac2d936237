"""Contract harness for ``[[trigger.nats]]`` (NATS core) on the shared broker (4222).

Each test gets fresh subjects: the trigger subscribes to ``contract.<id>.>`` and a message's
key becomes its last subject token (NATS has no message key: the subject is the key).
"""

from __future__ import annotations

from typing import Any, ClassVar

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg

from tests.broker_process import BrokerProcess
from tests.contract.harness import DeadLetter, HarnessBase, unique, wait_until
from tests.contract.nats_server import NatsServer
from triggers.nats_connection import confirm_subscriptions

SHARED_URL = "nats://127.0.0.1:4222"


class NatsHarness(HarnessBase):
    """What the NATS core and JetStream harnesses share: the broker, a reconnecting
    client, a private ``nats-server`` for fault tests."""

    broker_kind: ClassVar[str] = "nats"
    reconnect: ClassVar[dict[str, int]] = {"reconnect-min-ms": 100, "reconnect-max-ms": 500}

    def __init__(self, url: str = SHARED_URL, server: BrokerProcess | None = None) -> None:
        super().__init__(url, server)
        self.nc: Client | None = None

    async def connect(self) -> Client:
        self.nc = await nats.connect(self.url, max_reconnect_attempts=-1,
                                     reconnect_time_wait=0.2)  # type: ignore[arg-type]
        return self.nc

    async def teardown(self) -> None:
        if self.nc is not None:
            await self.nc.close()

    @classmethod
    def private_server(cls) -> NatsServer:
        return NatsServer()

    async def reconnected(self) -> None:
        assert self.nc is not None
        await wait_until(lambda: self.nc is not None and self.nc.is_connected,
                         what="the harness client to reconnect")


class NatsCoreHarness(NatsHarness):
    name: ClassVar[str] = "nats-core"
    trigger_kind: ClassVar[str] = "nats"
    redelivers: ClassVar[bool] = False
    dead_letters: ClassVar[bool] = True
    redelivery_window_s: ClassVar[float] = 1.0

    def __init__(self, url: str = SHARED_URL, server: BrokerProcess | None = None) -> None:
        super().__init__(url, server)
        self.base = f"contract.{unique('core')}"
        self.dead_letter = f"dead.{unique('core')}"
        self._letters: list[DeadLetter] = []

    async def setup(self) -> None:
        nc = await self.connect()

        async def collect(msg: Msg) -> None:
            self._letters.append(DeadLetter(msg.data, dict(msg.headers or {})))

        await nc.subscribe(self.dead_letter, cb=collect)
        assert await confirm_subscriptions(nc, timeout_s=10)

    def trigger_options(self) -> dict[str, Any]:
        return {"subject": f"{self.base}.>", "dead-letter": self.dead_letter}

    async def publish(self, payload: bytes, *, key: bytes | None = None,
                      headers: dict[str, str] | None = None) -> None:
        assert self.nc is not None
        subject = f"{self.base}.{key.decode() if key else 'none'}"
        await self.nc.publish(subject, payload, headers=headers)
        await self.nc.flush()

    async def read_dead_letters(self) -> list[DeadLetter]:
        return list(self._letters)


HARNESS = NatsCoreHarness
