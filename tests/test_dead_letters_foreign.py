"""Dead letters the gateway did not write, or wrote from odd input: entries put on a
dead-letter destination by something else (no ``wasmgate-dead-letter-*`` headers, shared
message ids, binary header values) and text that is not safe to print. Real Redis and
RabbitMQ on loopback."""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aio_pika
import pytest
import redis

from gateway.cli import _parser
from gateway.dead_letters.cli import execute, matches, parse_where
from gateway.dead_letters.model import DeadLetter
from gateway.errors import ConfigError
from tests.test_dead_letters_cli import AMQP_BROKER
from tests.test_dead_letters_cli import _manifest as _cli_manifest
from triggers.delivery import DL_REASON

REDIS_URL = "redis://127.0.0.1:6379/0"
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"


def _manifest(tmp_path: Path, trigger: str) -> Path:
    """Redis as broker `b`, RabbitMQ as `r`, component `work`, and ``trigger``."""
    return _cli_manifest(tmp_path, AMQP_BROKER + trigger)


def _jetstream_manifest(tmp_path: Path, stream: str, subject: str, dead: str) -> Path:
    """One nats-jetstream trigger on ``stream`` (``subject``) dead-lettering to ``dead``."""
    path = tmp_path / "wasmgate.toml"
    path.write_text(f"""
[application]
name = "dl"
[brokers.n]
kind = "nats"
url = "nats://127.0.0.1:4222"
[component.work]
source = "work.wasm"
[[trigger.nats-jetstream]]
component = "work"
broker = "n"
stream = "{stream}"
consumer = "c"
subjects = ["{subject}"]
dead-letter = "{dead}"
""")
    return path


async def _cli(manifest: Path, *argv: str) -> tuple[int, str]:
    args = _parser().parse_args(["dead-letters", *argv, "--manifest", str(manifest)])
    out = io.StringIO()
    code = await execute(args, out=out, confirm_in=io.StringIO())
    return code, out.getvalue()


@pytest.fixture
def streams() -> Iterator[tuple[Any, str]]:
    client: Any = redis.Redis.from_url(REDIS_URL)
    name = f"test-dl-foreign-{uuid.uuid4().hex}"
    yield client, name
    client.delete(name, f"{name}.dead")
    client.close()


def _redis_trigger(stream: str) -> str:
    return f"""
[[trigger.redis-streams]]
component = "work"
broker = "b"
stream = "{stream}"
dead-letter = "{stream}.dead"
"""


async def test_replay_keeps_binary_field_values_byte_for_byte(
        tmp_path: Path, streams: tuple[Any, str]) -> None:
    client, stream = streams
    # Written by another producer: a binary field besides data, no dead-letter fields.
    client.xadd(f"{stream}.dead", {b"data": b"\x00\xff", b"sig": b"\x8f\xff\x00raw",
                                   b"key": b"k\xff"})
    manifest = _manifest(tmp_path, _redis_trigger(stream))
    code, out = await _cli(manifest, "replay", "--all")
    assert code == 0, out
    [(_, fields)] = client.xrange(stream)
    assert fields[b"sig"] == b"\x8f\xff\x00raw"
    assert (fields[b"data"], fields[b"key"]) == (b"\x00\xff", b"k\xff")
    assert client.xlen(f"{stream}.dead") == 0


async def test_show_and_list_print_no_terminal_control_sequences(
        tmp_path: Path, streams: tuple[Any, str]) -> None:
    client, stream = streams
    hostile = "\x1b]0;owned\x07\x1b[2J"
    entry = client.xadd(f"{stream}.dead", {b"data": b"x", DL_REASON.encode(): hostile.encode(),
                                           f"x-{hostile}".encode(): hostile.encode()})
    manifest = _manifest(tmp_path, _redis_trigger(stream))
    for argv in (("list",), ("show", entry.decode())):
        code, out = await _cli(manifest, *argv)
        assert code == 0, out
        assert "\x1b" not in out and "\x07" not in out
        assert "\\x1b]0;owned\\x07" in out  # shown, escaped


async def test_show_escapes_a_carriage_return_in_the_body(
        tmp_path: Path, streams: tuple[Any, str]) -> None:
    """A bare CR in a text body would move the terminal's cursor back over the line: what
    follows it would overwrite what was printed before (here, the real amount)."""
    client, stream = streams
    entry = client.xadd(f"{stream}.dead", {b"data": b"amount: 1000000\ramount: 1\nnext line"})
    manifest = _manifest(tmp_path, _redis_trigger(stream))
    code, out = await _cli(manifest, "show", entry.decode())
    assert code == 0, out
    assert "\r" not in out
    assert "amount: 1000000\\ramount: 1\nnext line" in out  # escaped; real line breaks kept


async def test_amqp_dead_letters_sharing_a_message_id_are_each_listed(
        tmp_path: Path) -> None:
    queue = f"test-dl-foreign-{uuid.uuid4().hex[:8]}"
    connection = await aio_pika.connect(AMQP_URL)
    try:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, auto_delete=False)
        # Dead-lettered by RabbitMQ itself (a TTL, a reject elsewhere) or by another
        # producer: no wasmgate-dead-letter-id, and message ids that repeat.
        for body in (b"one", b"two", b"three"):
            await channel.default_exchange.publish(
                aio_pika.Message(body, message_id="same"), routing_key=queue)
        manifest = _manifest(tmp_path, f"""
[[trigger.amqp]]
component = "work"
broker = "r"
queue = "jobs"
dead-letter = "jobs.dlx"
dead-letter-queue = "{queue}"
""")
        code, out = await _cli(manifest, "list")
        assert code == 0, out
        assert out.startswith("3 dead letter(s)"), out
        code, out = await _cli(manifest, "purge", "--yes")
        assert (code, out.strip()) == (0, "purged 3 dead letter(s) of amqp[0]")
        assert (await channel.declare_queue(queue, passive=True)
                ).declaration_result.message_count == 0
        await declared.delete()
    finally:
        await connection.close()


def test_where_with_a_key_twice_needs_both() -> None:
    letter = DeadLetter(id="1", body=b"", headers=[(DL_REASON, "timed out after 150 ms")])
    assert matches(letter, parse_where(["reason=timed out", "reason=150 ms"]))
    assert not matches(letter, parse_where(["reason=status 500", "reason=timed out"]))


@pytest.mark.parametrize("term", ["reason=", "status=", "=x", "reason"])
def test_where_refuses_an_empty_value_or_key(term: str) -> None:
    # `reason=` would match every dead letter (every text holds ""): --all is the way.
    with pytest.raises(ConfigError, match="--where"):
        parse_where([term])


async def test_jetstream_listing_reads_the_dead_letters_not_the_whole_stream(
        tmp_path: Path) -> None:
    import nats

    from gateway.dead_letters.stores import open_store

    tag = uuid.uuid4().hex[:8]
    stream, dead = f"DLFOREIGN{tag}", f"dlforeign{tag}.dead"
    nc = await nats.connect("nats://127.0.0.1:4222")
    js = nc.jetstream()
    await js.add_stream(name=stream, subjects=[f"dlforeign{tag}.>"])
    try:
        # A stream shared with busy subjects: 3 dead letters among 600 other messages,
        # and one dead letter already deleted (replayed).
        sequences = []
        for i in range(4):
            ack = await js.publish(dead, f"dead {i}".encode(),
                                   headers={"wasmgate-dead-letter-subject": "x"})
            sequences.append(ack.seq)
            for _ in range(150):
                await js.publish(f"dlforeign{tag}.other", b"busy")
        await js.delete_msg(stream, sequences[1])
        manifest = _jetstream_manifest(tmp_path, stream, f"dlforeign{tag}.in", dead)
        _, store = await open_store(manifest, None)
        try:
            calls = 0
            real = store._js.get_msg  # type: ignore[attr-defined]

            async def counted(*args: Any, **kwargs: Any) -> Any:
                nonlocal calls
                calls += 1
                return await real(*args, **kwargs)

            store._js.get_msg = counted  # type: ignore[attr-defined]
            letters = await store.letters()
        finally:
            await store.close()
        assert [x.body for x in letters] == [b"dead 0", b"dead 2", b"dead 3"]
        assert [x.id for x in letters] == [str(sequences[i]) for i in (0, 2, 3)]
        # One read per dead letter and one to find the end: not one per stored message.
        assert calls <= len(letters) + 1, calls
    finally:
        await js.delete_stream(stream)
        await nc.close()


async def test_kafka_dead_letters_with_null_headers_and_values_are_listed_and_replayed(
        tmp_path: Path) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    from tests.kafka_broker import shared_broker

    bootstrap = f"127.0.0.1:{shared_broker().port}"
    dead, source = f"dl-foreign-{uuid.uuid4().hex[:8]}", f"src-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(dead, 1, 1), NewTopic(source, 1, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        # Written by another producer: a header without a value (legal in Kafka), and a
        # tombstone (no value at all).
        await producer.send_and_wait(dead, None, key=b"k", headers=[
            ("wasmgate-dead-letter-subject", source.encode()), ("x-null", None)])
    finally:
        await producer.stop()
    manifest = _manifest(tmp_path, f"""
[brokers.tansu]
kind = "kafka"
url = "kafka://{bootstrap}"

[[trigger.kafka]]
component = "work"
broker = "tansu"
topics = ["{source}"]
dead-letter = "{dead}"
""")
    code, out = await _cli(manifest, "show", "0-0")
    assert code == 0, out
    assert "  x-null: \n" in out
    code, out = await _cli(manifest, "replay", "--all")
    assert code == 0, out
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(source, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        records: list[Any] = []
        for _ in range(20):
            records += (await consumer.getmany(tp, timeout_ms=500)).get(tp, [])
            if records:
                break
    finally:
        await consumer.stop()
    [record] = records
    assert (record.key, record.value) == (b"k", None)  # still a tombstone
    assert ("x-null", None) in list(record.headers)


async def test_two_sessions_replaying_one_redis_dead_letter_replay_it_once(
        tmp_path: Path, streams: tuple[Any, str]) -> None:
    from gateway.dead_letters.model import DeadLetterNotFound
    from gateway.dead_letters.stores import open_store

    client, stream = streams
    client.xadd(f"{stream}.dead", {b"data": b"once"})
    manifest = _manifest(tmp_path, _redis_trigger(stream))
    _, first = await open_store(manifest, None)
    _, second = await open_store(manifest, None)
    try:
        [letter] = await first.letters()
        [same] = await second.letters()  # two operators, both listed it
        await first.replay(letter, replayed_from="a")
        with pytest.raises(DeadLetterNotFound, match="replayed or purged"):
            await second.replay(same, replayed_from="b")
    finally:
        await first.close()
        await second.close()
    assert [fields[b"data"] for _, fields in client.xrange(stream)] == [b"once"]


async def test_a_dead_letter_without_an_origin_does_not_block_replay_all(
        tmp_path: Path) -> None:
    import nats

    tag = uuid.uuid4().hex[:8]
    stream, dead = f"DLBLOCK{tag}", f"dlblock{tag}.dead"
    nc = await nats.connect("nats://127.0.0.1:4222")
    js = nc.jetstream()
    await js.add_stream(name=stream, subjects=[f"dlblock{tag}.>"])
    try:
        # Oldest first: a message something else put on the dead-letter subject (no
        # wasmgate-dead-letter-subject), then two the gateway dead-lettered.
        await js.publish(dead, b"foreign")
        for body in (b"one", b"two"):
            await js.publish(dead, body,
                             headers={"wasmgate-dead-letter-subject": f"dlblock{tag}.in"})
        manifest = _jetstream_manifest(tmp_path, stream, f"dlblock{tag}.in", dead)
        code, out = await _cli(manifest, "replay", "--all")
        assert code == 1, out  # not everything was replayed
        assert "skipped 1" in out and "does not say its original subject" in out
        assert "replayed 2 of 3" in out
        code, out = await _cli(manifest, "list")
        assert out.startswith("1 dead letter(s)"), out
        replayed = await js.get_msg(stream, subject=f"dlblock{tag}.in", seq=1, next=True)
        assert replayed.data == b"one"
    finally:
        await js.delete_stream(stream)
        await nc.close()
