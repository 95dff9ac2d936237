"""Kafka trigger tests beyond the contract suite: config errors, the event shape, and the
paths the contract cannot reach (broker down at start, dead-lettering while the broker is
away, a stop that abandons a record, a rebalance between two members).

Broker tests run a real tansu broker (tests/kafka_broker.py) and drive the trigger with a
plain Python dispatch, so they need no Wasm build.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bindings.types import Event, Response
from gateway.dispatch import Outcome, Verdict
from gateway.errors import ConfigError
from gateway.manifest import BrokerSpec
from tests.contract.harness import unique, wait_until
from tests.kafka_broker import ConnectionCutter, Tansu, free_port
from triggers.base import TriggerContext
from triggers.delivery import DL_REASON
from triggers.kafka import KafkaTrigger, build_kafka_trigger

MANIFEST = "/srv/app/wasmgate.toml"
ACK = Outcome(verdict=Verdict.ACK, response=Response(status=200))
FAST_GROUP = {"session-timeout-ms": 3000, "heartbeat-interval-ms": 500,
              "rebalance-timeout-ms": 1000, "commit-interval-ms": 100}


def context(url: str = "kafka://127.0.0.1:9092") -> TriggerContext:
    return TriggerContext(manifest_path=MANIFEST, field="trigger.kafka[0]",
                          brokers={"b": BrokerSpec(kind="kafka", url=url,
                                                   reconnect_min_ms=100,
                                                   reconnect_max_ms=500)})


def build(url: str = "kafka://127.0.0.1:9092", **table: Any) -> KafkaTrigger:
    return build_kafka_trigger({"component": "c", "broker": "b", "topics": ["orders"], **table},
                               context=context(url))


# -- configuration -------------------------------------------------------------------------

@pytest.mark.parametrize(("table", "field", "says"), [
    ({"topics": []}, "trigger.kafka[0].topics", "at least one topic"),
    ({"topics": ["bad topic"]}, "trigger.kafka[0].topics", "invalid topic name"),
    ({"dead-letter": "orders"}, "trigger.kafka[0].dead-letter", "also consumed"),
    ({"heartbeat-interval-ms": 10_000}, "trigger.kafka[0].heartbeat-interval-ms",
     "must be below session-timeout-ms"),
    ({"start-from": "beginning"}, "trigger.kafka[0].start-from", "Invalid enum value"),
    ({"topic": "orders"}, "trigger.kafka[0]", "unknown field `topic`"),
])
def test_bad_config_names_file_field_and_fix(table: dict[str, Any], field: str,
                                             says: str) -> None:
    with pytest.raises(ConfigError) as info:
        build(**table)
    message = str(info.value)
    assert MANIFEST in message and field in message and says in message


@pytest.mark.parametrize(("url", "says"), [
    ("nats://127.0.0.1:4222", "write kafka://host:9092"),
    ("kafka://hostonly", "needs host:port"),
    ("kafka://h:9092?sasl-mechanism=GSSAPI", "unsupported sasl-mechanism"),
])
def test_bad_broker_url_names_the_broker_table(url: str, says: str) -> None:
    with pytest.raises(ConfigError) as info:
        build(url)
    assert "brokers.b.url" in str(info.value) and says in str(info.value)


def test_several_bootstrap_servers_and_defaults() -> None:
    trigger = build("kafka://a:9092,b:9093")
    assert trigger._client_options["bootstrap_servers"] == ["a:9092", "b:9093"]
    assert trigger.group == "wasmgate-c"
    assert trigger.config.start_from == "earliest"
    assert trigger.config.retry_policy.max_attempts == 5


@dataclass
class FakeRecord:
    topic: str = "orders"
    partition: int = 2
    offset: int = 41
    timestamp: int = 1_700_000_000_123
    timestamp_type: int = 0
    key: bytes | None = b"k"
    value: bytes | None = b"{}"
    headers: tuple[tuple[str, bytes], ...] = (("content-type", b"application/json"),
                                               ("x-bin", b"\xff"))


def test_event_carries_the_record_and_a_stable_id() -> None:
    event = build().build_event(FakeRecord())
    assert event.id == "orders-2-41"
    assert event.source == "wasmgate/kafka/b"
    assert event.type == "wasmgate.kafka.message"
    assert event.subject == "orders"
    assert event.time == 1_700_000_000_123_000
    assert event.key == b"k" and event.data == b"{}"
    assert event.content_type == "application/json"
    assert event.headers[1] == ("x-bin", "\ufffd")
    meta = dict(event.metadata)
    assert meta["partition"] == "2" and meta["offset"] == "41" and meta["attempt"] == "1"
    assert meta["group"] == "wasmgate-c" and meta["timestamp-type"] == "create-time"


def test_a_null_header_value_is_an_empty_header_not_a_crash() -> None:
    # Kafka allows a header without a value (aiokafka gives None). It raised AttributeError
    # in the intake loop, which ended the trigger's consumption for good.
    record = FakeRecord(headers=(("x-null", None), ("x-ok", b"1")))  # type: ignore[arg-type]
    assert build().build_event(record).headers == [("x-null", ""), ("x-ok", "1")]


# -- against a real broker -----------------------------------------------------------------

@dataclass
class Broker:
    tansu: Tansu
    cutter: ConnectionCutter

    @property
    def url(self) -> str:
        return f"kafka://127.0.0.1:{self.cutter.port}"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.cutter.port}"


@pytest.fixture
async def broker() -> AsyncIterator[Broker]:
    """A private tansu behind a connection cutter (the broker advertises the cutter)."""
    port = free_port()
    tansu = Tansu(advertised=port)
    tansu.start()
    cutter = ConnectionCutter(tansu.port, port=port)
    await cutter.start()
    try:
        yield Broker(tansu, cutter)
    finally:
        await cutter.close()
        tansu.stop()


async def create_topics(bootstrap: str, *topics: tuple[str, int]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(t, n, 1) for t, n in topics])
    finally:
        await admin.close()


@contextlib.asynccontextmanager
async def producer(bootstrap: str) -> AsyncIterator[AIOKafkaProducer]:
    p = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await p.start()
    try:
        yield p
    finally:
        await p.stop()


async def committed(bootstrap: str, group: str, tp: TopicPartition) -> int | None:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        value: int | None = await consumer.committed(tp)
        return value
    finally:
        await consumer.stop()


async def read_all(bootstrap: str, tp: TopicPartition) -> list[Any]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        end = (await consumer.end_offsets([tp]))[tp]
        records: list[Any] = []
        while await consumer.position(tp) < end:
            records += (await consumer.getmany(tp, timeout_ms=1000)).get(tp, [])
        return records
    finally:
        await consumer.stop()


Handler = Callable[[Event], Awaitable[Outcome]]


def recording(handler: Handler | None = None) -> tuple[list[Event], Any]:
    seen: list[Event] = []

    async def dispatch(component: str, event: Event) -> Outcome:
        seen.append(event)
        return await handler(event) if handler else ACK
    return seen, dispatch


async def wait_assigned(trigger: KafkaTrigger, n: int = 1) -> None:
    await wait_until(lambda: len(trigger.assignment) >= n, timeout=60,
                     what="the trigger to join its group")


async def test_dead_letter_is_produced_when_the_broker_is_back_before_commit(
        broker: Broker) -> None:
    topic, dlq = unique("dl"), unique("dl-dlq")
    await create_topics(broker.bootstrap, (topic, 1), (dlq, 1))
    release = asyncio.Event()

    async def poison(event: Event) -> Outcome:
        await release.wait()
        return Outcome(verdict=Verdict.DEAD_LETTER, response=Response(status=422))

    trigger = build(broker.url, topics=[topic], **{"dead-letter": dlq}, **FAST_GROUP)
    seen, dispatch = recording(poison)
    await trigger.start(dispatch)
    await wait_assigned(trigger)
    async with producer(broker.bootstrap) as p:
        await p.send_and_wait(topic, b"bad", key=b"k", headers=[("x-h", b"v")])
    await wait_until(lambda: len(seen) == 1, what="the handler to start")
    # The broker goes away while the handler runs; the dead letter must wait for it.
    await broker.cutter.close()
    release.set()
    await asyncio.sleep(2.0)  # how long the broker stays away, not a wait for an event
    await broker.cutter.start()
    tp = TopicPartition(topic, 0)
    await wait_until(lambda: trigger._book.get(tp) is not None
                     and trigger._book.get(tp).committed == 1,  # type: ignore[union-attr]
                     timeout=60, what="the record's offset to be committed")
    await trigger.stop()
    letters = await read_all(broker.bootstrap, TopicPartition(dlq, 0))
    assert len(letters) >= 1  # at least once: a produce retried after a cut may duplicate
    letter = letters[0]
    assert (letter.key, letter.value) == (b"k", b"bad")
    headers = dict(letter.headers)
    assert headers["x-h"] == b"v" and b"422" in headers[DL_REASON]
    assert await committed(broker.bootstrap, trigger.group, tp) == 1


async def test_a_record_abandoned_at_stop_is_redelivered_with_what_followed_it(
        broker: Broker) -> None:
    topic = unique("grace")
    await create_topics(broker.bootstrap, (topic, 1))
    group = unique("g")

    async def stuck_on_first(event: Event) -> Outcome:
        if event.data == b"first":
            await asyncio.Event().wait()  # never finishes; cancelled by the grace limit
        return ACK

    options = {"group": group, "ordering": "none", "stop-grace-ms": 300, **FAST_GROUP}
    trigger = build(broker.url, topics=[topic], **options)
    seen, dispatch = recording(stuck_on_first)
    await trigger.start(dispatch)
    await wait_assigned(trigger)
    async with producer(broker.bootstrap) as p:
        for value in (b"first", b"second", b"third"):
            await p.send_and_wait(topic, value, partition=0)
    await wait_until(lambda: len(seen) == 3, what="all three records to start")
    tp = TopicPartition(topic, 0)
    # "second" and "third" settled; their commit must wait for "first".
    await wait_until(lambda: trigger._book.get(tp) is not None
                     and trigger._book.get(tp).finished_behind == 2,  # type: ignore[union-attr]
                     what="the two records behind the stuck one to be settled")
    await trigger.stop()
    assert await committed(broker.bootstrap, group, TopicPartition(topic, 0)) in (None, 0)

    again = build(broker.url, topics=[topic], **options)
    seen_again, dispatch_again = recording()
    await again.start(dispatch_again)
    await wait_until(lambda: len(seen_again) == 3, timeout=60, what="the redelivery")
    await again.stop()
    assert [e.data for e in seen_again] == [b"first", b"second", b"third"]
    assert await committed(broker.bootstrap, group, TopicPartition(topic, 0)) == 3


async def test_a_rebalance_hands_partitions_over_without_losing_records(
        broker: Broker) -> None:
    topic = unique("rebalance")
    await create_topics(broker.bootstrap, (topic, 4))
    group = unique("g")
    options = {"group": group, **FAST_GROUP}
    first, second = (build(broker.url, topics=[topic], **options) for _ in range(2))
    seen_first, dispatch_first = recording()
    seen_second, dispatch_second = recording()
    await first.start(dispatch_first)
    await wait_assigned(first, 4)
    async with producer(broker.bootstrap) as p:
        for i in range(20):
            await p.send_and_wait(topic, str(i).encode(), key=str(i).encode())
        await second.start(dispatch_second)
        await wait_until(lambda: len(first.assignment) + len(second.assignment) == 4
                         and bool(second.assignment) and bool(first.assignment), timeout=60,
                         what="the partitions to be split between the members")
        for i in range(20, 40):
            await p.send_and_wait(topic, str(i).encode(), key=str(i).encode())
    everything = {str(i).encode() for i in range(40)}
    await wait_until(lambda: {e.data for e in seen_first + seen_second} >= everything,
                     timeout=60, what="every record on one member or the other")
    await asyncio.gather(first.stop(), second.stop())
