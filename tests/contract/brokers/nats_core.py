"""Contract harness for ``[[trigger.nats]]`` (NATS core) on the shared broker (4222).

Each test gets fresh subjects: the trigger subscribes to ``contract.<id>.>`` and a message's
key becomes its last subject token (NATS has no message key: the subject is the key).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, ClassVar

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg

from gateway.app import App
from tests.contract.harness import DeadLetter, toml_options, unique
from tests.contract.nats_server import NatsServer

SHARED_URL = "nats://127.0.0.1:4222"


async def wait_triggers_ready(app: App) -> None:
    for trigger in app.triggers:
        await asyncio.wait_for(trigger.ready.wait(), 30)  # type: ignore[attr-defined]


class NatsCoreHarness:
    name: ClassVar[str] = "nats-core"
    trigger_kind: ClassVar[str] = "nats"
    redelivers: ClassVar[bool] = False
    dead_letters: ClassVar[bool] = True
    redelivery_window_s: ClassVar[float] = 1.0

    def __init__(self, url: str = SHARED_URL, server: NatsServer | None = None) -> None:
        self.url = url
        self.server = server
        self.base = f"contract.{unique('core')}"
        self.dead_letter = f"dead.{unique('core')}"
        self.nc: Client | None = None
        self._letters: list[DeadLetter] = []

    async def setup(self) -> None:
        self.nc = await nats.connect(self.url, max_reconnect_attempts=-1,
                                     reconnect_time_wait=0.2)  # type: ignore[arg-type]

        async def collect(msg: Msg) -> None:
            self._letters.append(DeadLetter(msg.data, dict(msg.headers or {})))

        await self.nc.subscribe(self.dead_letter, cb=collect)
        await self.nc.flush()

    async def teardown(self) -> None:
        if self.nc is not None:
            await self.nc.close()

    def broker_toml(self) -> str:
        return (f'kind = "nats"\nurl = "{self.url}"\n'
                "reconnect-min-ms = 100\nreconnect-max-ms = 500\n")

    def trigger_toml(self, **options: Any) -> str:
        return ('component = "contract"\nbroker = "b"\n'
                f'subject = "{self.base}.>"\ndead-letter = "{self.dead_letter}"\n'
                + toml_options(options))

    async def publish(self, payload: bytes, *, key: bytes | None = None,
                      headers: dict[str, str] | None = None) -> None:
        assert self.nc is not None
        subject = f"{self.base}.{key.decode() if key else 'none'}"
        await self.nc.publish(subject, payload, headers=headers)
        await self.nc.flush()

    async def read_dead_letters(self) -> list[DeadLetter]:
        return list(self._letters)

    async def interrupt(self) -> None:
        assert self.server is not None and self.nc is not None
        await self.server.restart()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while not self.nc.is_connected:
            if loop.time() > deadline:
                raise AssertionError("the harness client did not reconnect")
            await asyncio.sleep(0.05)

    @classmethod
    @asynccontextmanager
    async def private(cls) -> AsyncIterator[NatsCoreHarness]:
        server = NatsServer()
        server.start()
        harness = cls(server.url, server)
        try:
            await harness.setup()
            yield harness
            await harness.teardown()
        finally:
            server.close()

    async def wait_ready(self, app: App) -> None:
        await wait_triggers_ready(app)


HARNESS = NatsCoreHarness
