"""AMQP (RabbitMQ) end to end: the gateway with a Wasm handler against the raw aio-pika
loop and FastStream with the same (trivial) handler in plain Python.

Each contender gets a fresh durable quorum queue on the shared RabbitMQ (the gateway's
default queue type) and the same messages (``BENCH_N`` of ``BENCH_SIZE`` bytes):

* **throughput**: the messages are loaded first, then the consumer starts; events/s is the
  count over the time from consumer start to the last one acked.
* **latency**: with the consumer running, ``BENCH_LAT_N`` messages are published at
  ``BENCH_LAT_RATE``/s; latency is publish (before basic.publish) to acked (raw, gateway:
  after basic.ack is sent) or to handler done (FastStream acks right after; that favours
  it slightly).

Contenders, all in this one process, one at a time, each with prefetch 16:

* raw: aio-pika ``queue.consume`` with a callback that acks; no handler.
* FastStream 0.7: ``RabbitBroker`` subscriber (default ack policy: ack after the handler),
  an ``async def`` handler that does what the Wasm one does.
* gateway: ``[[trigger.amqp]]`` (concurrency 16, ordering "none") into the echo component
  (``tests/fixtures/handlers/echo``, componentize-py, pooled instances); then the same
  into the hand-written WAT echo component (``tests/fixtures/wat/echo.wat``).

Run: .venv/bin/python bench/bench_amqp.py   (prints the table; numbers go in BENCHMARKS.md)
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage
from faststream.rabbit import Channel, RabbitBroker, RabbitMessage, RabbitQueue

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._measure import (
    Completions,
    load_average,
    print_table,
    quiet_logging,
    ratios,
)
from gateway.app import App
from tests.fixtures.build import WAT_ECHO, build_handler
from triggers.amqp import AmqpTrigger

URL = os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
N = int(os.environ.get("BENCH_N", "3000"))
SIZE = int(os.environ.get("BENCH_SIZE", "256"))
LAT_N = int(os.environ.get("BENCH_LAT_N", "300"))
LAT_RATE = float(os.environ.get("BENCH_LAT_RATE", "200"))
PREFETCH = 16
INSTANCES = int(os.environ.get("BENCH_INSTANCES", "8"))
PAYLOAD = b"x" * SIZE
QUEUE_ARGS = {"x-queue-type": "quorum"}


Run = Completions[str]


Step = Callable[[], Awaitable[None]]
# consumer(queue, run) prepares (loads, compiles, connects nothing yet) and returns
# (start, stop): the clock runs from start() on.
Consumer = Callable[[str, Run], Awaitable[tuple[Step, Step]]]


async def publish(channel: AbstractChannel, queue: str, message_id: str) -> None:
    await channel.default_exchange.publish(
        aio_pika.Message(PAYLOAD, message_id=message_id,
                         delivery_mode=aio_pika.DeliveryMode.PERSISTENT), routing_key=queue)


async def load(channel: AbstractChannel, queue: str, n: int) -> None:
    # Confirmed in batches of 200 in flight (a confirm per message, awaited together).
    for start in range(0, n, 200):
        await asyncio.gather(*(publish(channel, queue, f"load-{i}")
                               for i in range(start, min(n, start + 200))))


async def measure(name: str, consumer: Consumer, channel: AbstractChannel) -> dict[str, Any]:
    queue = f"bench-{name}-{uuid.uuid4().hex[:8]}"
    await channel.declare_queue(queue, durable=True, arguments=QUEUE_ARGS)
    try:
        await load(channel, queue, N)
        run = Run(expect=N)
        start, stop = await consumer(queue, run)

        async def publish_one(i: int) -> str:
            await publish(channel, queue, f"lat-{i}")
            return f"lat-{i}"

        result = await run.burst_then_paced(start, publish_one, burst=N, paced=LAT_N,
                                            rate=LAT_RATE)
        await stop()
    finally:
        await channel.queue_delete(queue)
    return result


async def raw_consumer(queue: str, run: Run) -> tuple[Step, Step]:
    connection = await aio_pika.connect(URL)
    channel = await connection.channel()
    await channel.set_qos(prefetch_count=PREFETCH)

    async def on_message(message: AbstractIncomingMessage) -> None:
        await message.ack()
        run.mark(message.message_id or "?")

    async def start() -> None:
        q = await channel.get_queue(queue, ensure=False)
        await q.consume(on_message)

    async def stop() -> None:
        await connection.close()
    return start, stop


async def faststream_consumer(queue: str, run: Run) -> tuple[Step, Step]:
    broker = RabbitBroker(URL, logger=None)

    @broker.subscriber(RabbitQueue(queue, durable=True, arguments=QUEUE_ARGS),
                       channel=Channel(prefetch_count=PREFETCH))
    async def handle(msg: RabbitMessage) -> None:
        # What the echo component does: read the event, answer with its data.
        _ = b"echo:" + msg.body
        run.mark(msg.raw_message.message_id or "?")

    async def stop() -> None:
        await broker.stop()
    return broker.start, stop


def gateway(wasm: Path) -> Consumer:
    """The gateway consumer, running the component at ``wasm``."""
    async def consumer(queue: str, run: Run) -> tuple[Step, Step]:
        return await gateway_consumer(wasm, queue, run)
    return consumer


async def gateway_consumer(wasm: Path, queue: str, run: Run) -> tuple[Step, Step]:
    directory = Path(tempfile.mkdtemp(prefix="bench-amqp-"))
    manifest = directory / "wasmgate.toml"
    manifest.write_text(f"""
[application]
name = "bench-amqp"

[brokers.r]
kind = "amqp"
url = "{URL}"

[component.echo]
source = "{wasm}"
isolation = "pooled"
max-instances = {INSTANCES}

[[trigger.amqp]]
component = "echo"
broker = "r"
queue = "{queue}"
concurrency = {PREFETCH}
ordering = "none"
""")
    app = App.load(manifest)
    [trigger] = app.triggers
    assert isinstance(trigger, AmqpTrigger)
    # Done = after the ack is sent, observed by wrapping the trigger's settle step.
    settle = trigger._settle

    async def timed_settle(session: Any, message: AbstractIncomingMessage, event: Any,
                           outcome: Any) -> None:
        await settle(session, message, event, outcome)
        run.mark(message.message_id or "?")

    trigger._settle = timed_settle  # type: ignore[method-assign]

    async def start() -> None:
        await app.start()

    async def stop() -> None:
        await app.stop()
    return start, stop


async def main() -> None:
    quiet_logging()
    build_handler("echo")
    connection = await aio_pika.connect(URL)
    channel = await connection.channel(publisher_confirms=True)
    results: dict[str, dict[str, Any]] = {}
    for name, consumer in (("raw", raw_consumer), ("faststream", faststream_consumer),
                           ("gateway", gateway(build_handler("echo"))),
                           ("gateway-wat", gateway(WAT_ECHO))):
        results[name] = await measure(name, consumer, channel)
        print(f"{name}: {results[name]}", file=sys.stderr)
    await connection.close()
    print(f"\nAMQP (RabbitMQ, quorum queue), {N} messages of {SIZE} B (latency: {LAT_N} at "
          f"{LAT_RATE:.0f}/s), prefetch {PREFETCH}; {load_average()}\n")
    labels = {"raw": "raw aio-pika loop (consume + ack, no handler)",
              "faststream": "FastStream 0.7, plain Python handler",
              "gateway": "wasmgate, Wasm handler (componentize-py)",
              "gateway-wat": "wasmgate, WAT handler"}
    print_table(["contender", "events/s", "p50 ms", "p99 ms"],
                ([labels[name], f"{r['rate']:.0f}", f"{r['p50']:.1f}", f"{r['p99']:.1f}"]
                 for name, r in results.items()))
    rates = {name: r["rate"] for name, r in results.items()}
    print("\n" + ratios(rates, [("gateway/raw", "gateway", "raw"),
                                ("gateway/FastStream", "gateway", "faststream"),
                                ("gateway(WAT)/FastStream", "gateway-wat", "faststream")])
          + " (aim: >= 0.50x)")

if __name__ == "__main__":
    asyncio.run(main())
