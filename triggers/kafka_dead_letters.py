"""Producing a Kafka trigger's dead letters: the record's key, value and original header
bytes plus the ``wasmgate-dead-letter-*`` headers, to the ``dead-letter`` topic, with
``acks=all``. A record is not settled until the broker has its dead letter, so a failed
produce is retried (with the connection's backoff) rather than dropped."""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from bindings.types import Event
from gateway.dispatch import Outcome
from triggers.closing import close_quietly
from triggers.delivery import ConnectionWatch, dead_letter_headers, dead_letter_refused

log = structlog.get_logger("wasmgate.kafka")


class Record(Protocol):
    """The fields of aiokafka's ConsumerRecord that the trigger reads (aiokafka is untyped)."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    timestamp_type: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]


class DeadLetterProducer:
    """One lazily started producer per trigger, shared by every dead letter it sends."""

    def __init__(self, client_options: dict[str, Any], *, component: str,
                 watch: ConnectionWatch) -> None:
        self._options = client_options
        self._component = component
        self._watch = watch
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()

    async def send(self, topic: str, record: Record, event: Event, outcome: Outcome) -> None:
        """Produce ``record``'s dead letter to ``topic``; returns once the broker has it."""
        added = dead_letter_headers(event, outcome, self._component)[len(event.headers):]
        # The original header bytes are kept as they were (event headers are decoded text).
        headers = [*record.headers, *((k, v.encode()) for k, v in added)]
        while True:
            try:
                producer = await self._started()
                await producer.send_and_wait(topic, record.value, key=record.key,
                                             headers=headers)
            except KafkaError as exc:
                # Not settled until the broker has it: keep the offset and try again.
                dead_letter_refused(self._component, topic, event.id, exc,
                                    held="in process, offset not committed")
                await self._watch.down(exc)
                continue
            self._watch.up()
            return

    async def close(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await close_quietly(producer.stop(), what="kafka dead-letter producer")

    async def _started(self) -> AIOKafkaProducer:
        async with self._lock:
            if self._producer is None:
                producer = AIOKafkaProducer(**self._options, acks="all",
                                            client_id=f"wasmgate-{self._component}-dlq")
                try:
                    await producer.start()
                except BaseException:
                    await close_quietly(producer.stop(), what="kafka dead-letter producer")
                    raise
                self._producer = producer
            return self._producer


__all__ = ["DeadLetterProducer", "Record"]
