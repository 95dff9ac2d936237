"""Contract harness for ``[[trigger.nats-jetstream]]`` on the shared broker (4222).

Each test gets a fresh stream on ``contract.<id>.>`` (created here, so a test may publish
before the gateway runs) and a fresh dead-letter subject, whose stream the trigger creates
(``create = true``). ``ack-wait-ms`` is short so a killed gateway's messages come back fast;
the trigger's in-progress heartbeats keep slow handlers from being redelivered meanwhile.
"""

from __future__ import annotations

import asyncio
from contextlib import suppress
from typing import Any, ClassVar

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext

from tests.broker_process import BrokerProcess
from tests.contract.brokers.nats_core import SHARED_URL, NatsHarness
from tests.contract.harness import DeadLetter, unique

ACK_WAIT_MS = 2000


class NatsJetStreamHarness(NatsHarness):
    name: ClassVar[str] = "nats-jetstream"
    trigger_kind: ClassVar[str] = "nats-jetstream"
    redelivers: ClassVar[bool] = True
    dead_letters: ClassVar[bool] = True
    redelivery_window_s: ClassVar[float] = ACK_WAIT_MS / 1000 + 1.5

    def __init__(self, url: str = SHARED_URL, server: BrokerProcess | None = None) -> None:
        super().__init__(url, server)
        ident = unique("js")
        self.stream = f"contract-{ident}"
        self.base = f"contract.{ident}"
        self.dead_letter = f"dead.{ident}"
        self.js: JetStreamContext | None = None

    async def setup(self) -> None:
        self.js = (await self.connect()).jetstream()
        await self.js.add_stream(name=self.stream, subjects=[f"{self.base}.>"])

    async def teardown(self) -> None:
        if self.js is not None:
            for name in (self.stream, f"{self.stream}-dead-letter"):
                with suppress(nats.js.errors.NotFoundError):
                    await self.js.delete_stream(name)
        await super().teardown()

    def trigger_options(self) -> dict[str, Any]:
        return {"stream": self.stream, "consumer": "gateway", "create": True,
                "subjects": [f"{self.base}.>"], "dead-letter": self.dead_letter,
                "ack-wait-ms": ACK_WAIT_MS, "fetch-wait-ms": 250}
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

    async def break_dead_letters(self) -> None:
        # The trigger created the dead-letter stream at start; without it a publish to the
        # dead-letter subject has no responders.
        assert self.js is not None
        await self.js.delete_stream(f"{self.stream}-dead-letter")

    async def mend_dead_letters(self) -> None:
        assert self.js is not None
        await self.js.add_stream(name=f"{self.stream}-dead-letter", subjects=[self.dead_letter])

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


HARNESS = NatsJetStreamHarness
