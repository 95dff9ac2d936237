"""Contract harness for ``[[trigger.nats-jetstream]]`` on the shared broker (4222).

Each test gets a fresh stream on ``contract.<id>.>`` (created here, so a test may publish
before the gateway runs) and a fresh dead-letter subject, whose stream the trigger creates
(``create = true``). ``ack-wait-ms`` is short so a killed gateway's messages come back fast;
the trigger's in-progress heartbeats keep slow handlers from being redelivered meanwhile.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any, ClassVar

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext

from gateway.app import App
from tests.contract.brokers.nats_core import SHARED_URL, wait_triggers_ready
from tests.contract.harness import DeadLetter, toml_options, unique
from tests.contract.nats_server import NatsServer

ACK_WAIT_MS = 2000


class NatsJetStreamHarness:
    name: ClassVar[str] = "nats-jetstream"
    trigger_kind: ClassVar[str] = "nats-jetstream"
    redelivers: ClassVar[bool] = True
    dead_letters: ClassVar[bool] = True
    redelivery_window_s: ClassVar[float] = ACK_WAIT_MS / 1000 + 1.5

    def __init__(self, url: str = SHARED_URL, server: NatsServer | None = None) -> None:
        self.url = url
        self.server = server
        ident = unique("js")
        self.stream = f"contract-{ident}"
        self.base = f"contract.{ident}"
        self.dead_letter = f"dead.{ident}"
        self.nc: Client | None = None
        self.js: JetStreamContext | None = None

    async def setup(self) -> None:
        self.nc = await nats.connect(self.url, max_reconnect_attempts=-1,
                                     reconnect_time_wait=0.2)  # type: ignore[arg-type]
        self.js = self.nc.jetstream()
        await self.js.add_stream(name=self.stream, subjects=[f"{self.base}.>"])

    async def teardown(self) -> None:
        if self.js is not None:
            for name in (self.stream, f"{self.stream}-dead-letter"):
                with suppress(nats.js.errors.NotFoundError):
                    await self.js.delete_stream(name)
        if self.nc is not None:
            await self.nc.close()

    def broker_toml(self) -> str:
        return (f'kind = "nats"\nurl = "{self.url}"\n'
                "reconnect-min-ms = 100\nreconnect-max-ms = 500\n")

    def trigger_toml(self, **options: Any) -> str:
        return ('component = "contract"\nbroker = "b"\n'
                f'stream = "{self.stream}"\nconsumer = "gateway"\ncreate = true\n'
                f'subjects = ["{self.base}.>"]\ndead-letter = "{self.dead_letter}"\n'
                f"ack-wait-ms = {ACK_WAIT_MS}\nfetch-wait-ms = 250\n"
                + toml_options(options))

    async def publish(self, payload: bytes, *, key: bytes | None = None,
                      headers: dict[str, str] | None = None) -> None:
        assert self.js is not None
        subject = f"{self.base}.{key.decode() if key else 'none'}"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while True:  # right after a broker restart JetStream needs a moment to answer
            try:
                await self.js.publish(subject, payload, headers=headers)
                return
            except (nats.errors.NoRespondersError, nats.errors.TimeoutError,
                    nats.js.errors.ServiceUnavailableError):
                if loop.time() > deadline:
                    raise
                await asyncio.sleep(0.1)

    async def read_dead_letters(self) -> list[DeadLetter]:
        assert self.js is not None
        name = f"{self.stream}-dead-letter"
        try:
            info = await self.js.stream_info(name)
        except nats.js.errors.NotFoundError:
            return []
        letters = []
        if info.state.messages:
            for seq in range(info.state.first_seq, info.state.last_seq + 1):
                raw = await self.js.get_msg(name, seq)
                letters.append(DeadLetter(raw.data or b"", dict(raw.headers or {})))
        return letters

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
    async def private(cls) -> AsyncIterator[NatsJetStreamHarness]:
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


HARNESS = NatsJetStreamHarness
