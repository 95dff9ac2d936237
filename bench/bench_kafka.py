"""Kafka through the gateway (a trivial componentize-py handler, and the hand-written WAT
echo component) against the raw aiokafka loop
(consume + commit, no handler) and FastStream with an equivalent plain Python handler.

All three consume the same number of same-size records from a fresh 3-partition topic on a
private tansu broker (tests/kafka_broker.py), in one process and one event loop, each in
its own consumer group, committing after handling (FastStream: ``AckPolicy.ACK``).

* **burst**: publish ``--count`` records as fast as possible while the consumer runs;
  events/s = count / (last handled - first published).
* **paced**: publish ``--paced`` records at ``--rate``/s, under every system's capacity;
  p50/p99 of publish -> handler done (gateway, FastStream) or -> handed over (raw loop).

Run: .venv/bin/python bench/bench_kafka.py [--count 3000] [--size 128]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._measure import (
    StampedLatencies,
    load_average,
    percentiles,
    print_table,
    quiet_logging,
    ratios,
    stamped,
)
from bindings.types import Event, Response
from gateway.app import App
from tests.fixtures.build import WAT_ECHO, build_handler
from tests.kafka_broker import Tansu

PARTITIONS = 3
# Short group timeouts for tansu's slow joins (tests/kafka_broker.py); tansu holds every
# fetch for fetch-max-wait, so all three systems use 100 ms instead of the default 500.
GROUP = {"session_timeout_ms": 3000, "heartbeat_interval_ms": 500, "rebalance_timeout_ms": 1000,
         "fetch_max_wait_ms": 100}


System = Callable[[str, str, StampedLatencies], contextlib.AbstractAsyncContextManager[None]]


@contextlib.asynccontextmanager
async def raw_loop(bootstrap: str, topic: str, tally: StampedLatencies) -> AsyncIterator[None]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=uuid.uuid4().hex,
                                enable_auto_commit=False, auto_offset_reset="earliest",
                                **GROUP)
    await consumer.start()

    async def loop() -> None:
        while True:
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                for record in records:
                    tally.record(record.value)
            if batches:
                await consumer.commit()

    await wait_assigned(consumer)
    task = asyncio.create_task(loop())
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await consumer.stop()


@contextlib.asynccontextmanager
async def faststream(bootstrap: str, topic: str, tally: StampedLatencies) -> AsyncIterator[None]:
    from faststream import AckPolicy
    from faststream.kafka import KafkaBroker

    broker = KafkaBroker(bootstrap, logger=None)

    subscriber = broker.subscriber(topic, group_id=uuid.uuid4().hex,
                                   auto_offset_reset="earliest", ack_policy=AckPolicy.ACK,
                                   **GROUP)

    @subscriber
    async def handle(body: bytes) -> None:
        tally.record(body)

    await broker.start()
    await wait_until(lambda: subscriber.consumer is not None)
    await wait_assigned(subscriber.consumer)
    try:
        yield
    finally:
        await broker.stop()


def gateway(wasm: Path, instances: int, *, no_op: bool = False) -> System:
    """The gateway; with ``no_op`` the component call is replaced by a Python no-op, which
    isolates the trigger's own cost from the Wasm call."""
    @contextlib.asynccontextmanager
    async def run(bootstrap: str, topic: str, tally: StampedLatencies) -> AsyncIterator[None]:
        root = Path(tempfile.mkdtemp())
        manifest = root / "wasmgate.toml"
        manifest.write_text(f"""
[application]
name = "bench-kafka"

[brokers.b]
kind = "kafka"
url = "kafka://{bootstrap}"

[component.echo]
source = "{wasm}"
max-instances = {instances}

[[trigger.kafka]]
component = "echo"
broker = "b"
topics = ["{topic}"]
group = "{uuid.uuid4().hex}"
concurrency = 16
session-timeout-ms = 3000
heartbeat-interval-ms = 500
rebalance-timeout-ms = 1000
fetch-max-wait-ms = 100
""")
        app = App.load(manifest)
        invoke = app.dispatcher._invoke

        async def timed(component: str, event: Event) -> Response:
            response = Response(status=200) if no_op else await invoke(component, event)
            tally.record(event.data)
            return response

        app.dispatcher._invoke = timed
        await app.start()
        [trigger] = app.triggers
        await wait_until(lambda: len(trigger.assignment) == PARTITIONS)  # type: ignore[attr-defined]
        try:
            yield
        finally:
            await app.stop()
    return run


async def wait_assigned(consumer: AIOKafkaConsumer) -> None:
    await wait_until(lambda: len(consumer.assignment()) == PARTITIONS)


async def wait_until(predicate: Callable[[], bool], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark stalled")
        await asyncio.sleep(0.01)


async def measure(system: System, bootstrap: str, args: argparse.Namespace
                  ) -> tuple[float, float, float]:
    """(events/s in the burst, p50 ms, p99 ms when paced)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=2)
    await producer.start()
    try:
        burst_topic, paced_topic = await fresh_topics(bootstrap)
        burst = StampedLatencies(args.count)
        async with system(bootstrap, burst_topic, burst):
            start = time.perf_counter()
            sends = [await producer.send(burst_topic, stamped(args.size), key=str(i).encode())
                     for i in range(args.count)]
            await asyncio.gather(*sends)
            await wait_until(burst.done.is_set)
        rate = args.count / (burst.last - start)
        paced = StampedLatencies(args.paced)
        async with system(bootstrap, paced_topic, paced):
            for i in range(args.paced):
                await producer.send(paced_topic, stamped(args.size), key=str(i).encode())
                await asyncio.sleep(1 / args.rate)
            await wait_until(paced.done.is_set)
        return (rate, *percentiles(paced.latencies_ms))
    finally:
        await producer.stop()


async def fresh_topics(bootstrap: str) -> tuple[str, str]:
    names = (f"bench-{uuid.uuid4().hex[:8]}", f"bench-{uuid.uuid4().hex[:8]}")
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(n, PARTITIONS, 1) for n in names])
    finally:
        await admin.close()
    return names


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=3000)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--paced", type=int, default=400)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--instances", type=int, default=2)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    quiet_logging(logging.ERROR)

    wasm = build_handler("echo")
    broker = Tansu()
    broker.start()
    bootstrap = f"127.0.0.1:{broker.port}"
    systems: dict[str, System] = {
        "raw aiokafka loop": raw_loop,
        "FastStream (Python)": faststream,
        "gateway (Wasm)": gateway(wasm, args.instances),
        "gateway, WAT handler": gateway(WAT_ECHO, args.instances),
        "gateway, no-op instead of Wasm": gateway(wasm, args.instances, no_op=True),
    }
    results: dict[str, tuple[float, float, float]] = {}
    try:
        for name, system in systems.items():
            results[name] = await measure(system, bootstrap, args)
            print(f"  measured {name}", file=sys.stderr, flush=True)
    finally:
        broker.stop()

    print(f"\n{args.count} records of {args.size} B (burst), {args.paced} paced at "
          f"{args.rate:.0f}/s; {PARTITIONS} partitions; {load_average()}\n")
    print_table(["system", "events/s", "p50 ms", "p99 ms"],
                ([name, f"{rate:,.0f}", f"{p50:.1f}", f"{p99:.1f}"]
                 for name, (rate, p50, p99) in results.items()))
    rates = {name: rate for name, (rate, _, _) in results.items()}
    print("\n" + ratios(rates, [("gateway/raw", "gateway (Wasm)", "raw aiokafka loop"),
                                ("gateway/FastStream", "gateway (Wasm)", "FastStream (Python)"),
                                ("gateway(WAT)/FastStream", "gateway, WAT handler",
                                 "FastStream (Python)")]))

if __name__ == "__main__":
    asyncio.run(main())
