"""Dead letters of a ``[[trigger.kafka]]``: records of its ``dead-letter`` topic.

List reads every partition from the beginning with a group-less consumer (nothing is
committed, no group is joined). A Kafka topic cannot delete one record, so a replayed or
purged dead letter is *marked*: a record keyed ``<partition>:<offset>`` on the marker topic
``<dead-letter>.wasmgate-replayed`` (created compacted on first use; one marker per dead
letter, so compaction keeps them all and nothing else). List hides marked records. The
marker is written only after the broker acknowledged the re-published record (acks=all):
a crash in between replays that record again next time, never loses it.

The id is ``<partition>-<offset>`` in the dead-letter topic. Copies of one dead letter (the
same ``wasmgate-dead-letter-id``: written again after a kill before its record was committed)
are listed once, as the first; replaying or purging it marks every copy.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from gateway.brokers.kafka import client_options
from gateway.dead_letters.model import REPLAYED_FROM, DeadLetter, NotReplayable
from gateway.manifest import BrokerSpec
from triggers.delivery import DL_ID, DL_ORIGIN, DL_SUBJECT
from triggers.kafka_config import KafkaConfig

MARKER_SUFFIX = ".wasmgate-replayed"
_POLL_MS = 200
_DEAD_LETTER_PREFIX = "wasmgate-dead-letter-"


class KafkaDeadLetters:
    def __init__(self, config: KafkaConfig, spec: BrokerSpec) -> None:
        assert config.dead_letter is not None
        self.config, self.topic = config, config.dead_letter
        self.markers = self.topic + MARKER_SUFFIX
        self.describe = f"kafka topic {self.topic!r} on broker `{config.broker}`"
        self._options = client_options(config.broker, spec)
        self._producer: Any = None
        # Each listed record's headers and value as stored (a header or the value may be
        # None): a replay sends these, not their decoded text.
        self._raw: dict[str, tuple[list[tuple[str, bytes | None]], bytes | None]] = {}
        self._marker_topic_exists = False
        # Listed id -> the later copies of the same dead letter, marked along with it.
        self._copies: dict[str, list[str]] = {}

    async def open(self) -> None:
        self._producer = AIOKafkaProducer(**self._options, acks="all",
                                          client_id="wasmgate-dead-letters")
        try:
            await self._producer.start()
        except BaseException:
            await self._producer.stop()
            raise

    async def letters(self) -> list[DeadLetter]:
        marked = {record.key.decode() for record in await self._read(self.markers)
                  if record.key is not None}
        letters = []
        first_of: dict[bytes, str] = {}
        for record in await self._read(self.topic):
            ident = f"{record.partition}-{record.offset}"
            if f"{record.partition}:{record.offset}" in marked:
                continue
            dead_letter_id = dict(record.headers).get(DL_ID)
            if dead_letter_id and dead_letter_id in first_of:
                self._copies[first_of[dead_letter_id]].append(ident)
                continue
            if dead_letter_id:
                first_of[dead_letter_id] = ident
            self._copies[ident] = []
            self._raw[ident] = (list(record.headers), record.value)
            letters.append(DeadLetter(
                id=ident, body=record.value or b"", key=record.key,
                headers=[(k, "" if v is None else v.decode("utf-8", "replace"))
                         for k, v in record.headers],
                stored_at=datetime.fromtimestamp(record.timestamp / 1000, UTC),
                location={"topic": self.topic, "partition": str(record.partition),
                          "offset": str(record.offset)}))
        return letters

    async def replay(self, letter: DeadLetter, *, replayed_from: str) -> str:
        target = letter.header(DL_ORIGIN + "topic") or letter.header(DL_SUBJECT)
        if not target:
            raise NotReplayable(f"dead letter {letter.id} in {self.describe} does not say its "
                              f"original topic ({DL_SUBJECT}); cannot replay it")
        raw_headers, value = self._raw.get(letter.id, ([], letter.body))
        headers = [(k, v) for k, v in raw_headers
                   if not k.startswith(_DEAD_LETTER_PREFIX) and k != REPLAYED_FROM]
        headers.append((REPLAYED_FROM, replayed_from.encode()))
        meta = await self._producer.send_and_wait(target, value, key=letter.key,
                                                  headers=headers)
        await self._mark([letter], b"replayed")
        return f"kafka topic {target!r} partition {meta.partition} offset {meta.offset}"

    async def purge(self, letters: list[DeadLetter]) -> int:
        await self._mark(letters, b"purged")
        return len(letters)

    async def _mark(self, letters: list[DeadLetter], what: bytes) -> None:
        await self._ensure_marker_topic()
        for letter in letters:
            for ident in (letter.id, *self._copies.get(letter.id, ())):
                partition, _, offset = ident.partition("-")
                await self._producer.send_and_wait(self.markers, what,
                                                   key=f"{partition}:{offset}".encode())

    async def _ensure_marker_topic(self) -> None:
        if self._marker_topic_exists:
            return
        admin = AIOKafkaAdminClient(**self._options)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(self.markers, 1, 1, topic_configs={
                "cleanup.policy": "compact"})])
        except TopicAlreadyExistsError:
            pass
        finally:
            await admin.close()
        self._marker_topic_exists = True

    async def _read(self, topic: str) -> list[Any]:
        """Every record of ``topic`` (all partitions, from the start to the current end);
        empty when the topic does not exist."""
        consumer = AIOKafkaConsumer(**self._options, group_id=None, enable_auto_commit=False)
        await consumer.start()
        try:
            await consumer.topics()  # fetches the cluster's metadata
            partitions = consumer.partitions_for_topic(topic)
            if not partitions:
                return []
            tps = [TopicPartition(topic, p) for p in sorted(partitions)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            records: list[Any] = []
            while True:
                batch = await consumer.getmany(*tps, timeout_ms=_POLL_MS)
                for tp in tps:
                    records += batch.get(tp, [])
                # Past the end offsets and one poll found nothing more: the whole topic.
                # The poll matters: some brokers (tansu) report an end offset below the
                # last record's.
                if not batch and all([await consumer.position(tp) >= ends[tp] for tp in tps]):
                    break
            return records
        finally:
            await consumer.stop()

    async def close(self) -> None:
        if self._producer is not None:
            await self._producer.stop()


__all__ = ["MARKER_SUFFIX", "KafkaDeadLetters"]
