"""Contract harness for ``[[trigger.kafka]]`` over a real Kafka-protocol broker (tansu).

Each test gets a fresh topic (3 partitions), dead-letter topic and consumer group. The
shared broker is one tansu process for the session; :meth:`KafkaHarness.private` starts
its own tansu behind a :class:`~tests.kafka_broker.ConnectionCutter`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, ClassVar

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from gateway.app import App
from tests.contract.harness import DeadLetter, HarnessBase, unique, wait_until
from tests.kafka_broker import ConnectionCutter, Tansu, free_port, shared_broker
from triggers.kafka import KafkaTrigger

PARTITIONS = 3
# Short group timeouts: tansu makes every join wait the rebalance timeout, and a member of
# a group's first generation is only forgotten after the session timeout (see
# tests/kafka_broker.py).
GROUP_OPTIONS = {
    "session-timeout-ms": 3000,
    "heartbeat-interval-ms": 500,
    "rebalance-timeout-ms": 1000,
    "commit-interval-ms": 100,
    "revoke-wait-ms": 2000,
}


class KafkaHarness(HarnessBase):
    name: ClassVar[str] = "kafka"
    trigger_kind: ClassVar[str] = "kafka"
    redelivers: ClassVar[bool] = True
    dead_letters: ClassVar[bool] = True
    redelivery_window_s: ClassVar[float] = 2.0
    broker_kind: ClassVar[str] = "kafka"

    def __init__(self, port: int | None = None) -> None:
        self.port = port if port is not None else shared_broker().port
        self.bootstrap = f"127.0.0.1:{self.port}"
        super().__init__(f"kafka://{self.bootstrap}")
        self.topic = unique("wg")
        self.dead_letter = f"{self.topic}-dlq"
        self.group = unique("wg-group")
        self._producer: AIOKafkaProducer | None = None
        self._cutter: ConnectionCutter | None = None

    async def setup(self) -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(self.topic, PARTITIONS, 1),
                                       NewTopic(self.dead_letter, 1, 1)])
        finally:
            await admin.close()
        self._producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all")
        await self._producer.start()

    async def teardown(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    def trigger_options(self) -> dict[str, Any]:
        return {"topics": [self.topic], "group": self.group, "dead-letter": self.dead_letter,
                **GROUP_OPTIONS}

    async def publish(self, payload: bytes, *, key: bytes | None = None,
                      headers: dict[str, str] | None = None) -> None:
        assert self._producer is not None
        await self._producer.send_and_wait(
            self.topic, payload, key=key,
            headers=[(k, v.encode()) for k, v in (headers or {}).items()] or None)

    async def break_dead_letters(self) -> None:
        # tansu takes a produce to a deleted topic (and then fails the re-created one), so
        # the dead-letter topic cannot be broken alone here. Kafka holds a record whose dead
        # letter is refused in process (triggers/kafka_dead_letters.py); tests/test_kafka.py
        # covers it with the whole broker down and back.
        pytest.skip("tansu cannot refuse writes to one topic while serving the source")

    async def mend_dead_letters(self) -> None:
        raise AssertionError("break_dead_letters() skips on this harness")

    async def read_dead_letters(self) -> list[DeadLetter]:
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None,
                                    enable_auto_commit=False)
        await consumer.start()
        try:
            tp = TopicPartition(self.dead_letter, 0)
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            end = (await consumer.end_offsets([tp]))[tp]
            letters: list[DeadLetter] = []
            while await consumer.position(tp) < end:
                batch = await consumer.getmany(tp, timeout_ms=1000)
                letters += [DeadLetter(data=r.value,
                                       headers={k: v.decode() for k, v in r.headers})
                            for r in batch.get(tp, [])]
            return letters
        finally:
            await consumer.stop()

    async def interrupt(self) -> None:
        assert self._cutter is not None, "interrupt() needs a harness from private()"
        await self._cutter.cut()

    async def take_down(self) -> None:
        assert self._cutter is not None, "take_down() needs a harness from private()"
        await self._cutter.close()  # the advertised address now refuses connections

    async def bring_up(self) -> None:
        assert self._cutter is not None, "bring_up() needs a harness from private()"
        await self._cutter.start()

    @classmethod
    @asynccontextmanager
    async def private(cls) -> AsyncIterator[KafkaHarness]:
        # The broker advertises the cutter's port, so every client goes through it.
        cutter_port = free_port()
        broker = Tansu(advertised=cutter_port)
        broker.start()
        cutter = ConnectionCutter(broker.port, port=cutter_port)
        await cutter.start()
        harness = cls(port=cutter.port)
        harness._cutter = cutter
        try:
            await harness.setup()
            yield harness
            await harness.teardown()
        finally:
            await cutter.close()
            broker.stop()

    async def wait_ready(self, app: App) -> None:
        [trigger] = [t for t in app.triggers if isinstance(t, KafkaTrigger)]
        await wait_until(lambda: len(trigger.assignment) == PARTITIONS, timeout=60,
                         what="the kafka trigger to join its group")
        # Let the fetch positions settle before the test publishes.
        await asyncio.sleep(0.2)


HARNESS = KafkaHarness
