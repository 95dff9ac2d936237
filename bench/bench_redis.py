"""Redis Streams end to end: the gateway with a Wasm handler against the raw redis-py loop
and FastStream with the same (trivial) handler in plain Python.

Each contender gets a fresh stream and consumer group on the shared Redis and the same
messages (``BENCH_N`` entries of ``BENCH_SIZE`` bytes):

* **throughput**: the entries are loaded first, then the consumer starts; events/s is the
  count over the time from consumer start to the last one acked.
* **latency**: with the consumer running, ``BENCH_LAT_N`` entries are published at
  ``BENCH_LAT_RATE``/s; latency is publish (before XADD) to acked (raw, gateway: after
  XACK returns) or to handler done (FastStream acks right after; that favours it slightly).

Contenders, all in this one process, one at a time:

* raw: XREADGROUP (COUNT 32, BLOCK 1000) and one XACK per batch; no handler.
* FastStream 0.7: ``StreamSub`` with a group, its default ack policy (ack after the
  handler), an ``async def`` handler that does what the Wasm one does.
* gateway: ``[[trigger.redis-streams]]`` (concurrency 16, ordering "none") into the echo
  component (``tests/fixtures/handlers/echo``, componentize-py, pooled instances); then the
  same into the hand-written WAT echo component (``tests/fixtures/wat/echo.wat``).

Run: .venv/bin/python bench/bench_redis.py   (prints the table; numbers go in BENCHMARKS.md)
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

import redis.asyncio as aioredis
from faststream.redis import RedisBroker, RedisStreamMessage, StreamSub

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
from triggers.redis_streams import RedisStreamsTrigger

URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
N = int(os.environ.get("BENCH_N", "3000"))
SIZE = int(os.environ.get("BENCH_SIZE", "256"))
LAT_N = int(os.environ.get("BENCH_LAT_N", "300"))
LAT_RATE = float(os.environ.get("BENCH_LAT_RATE", "200"))
GROUP = "bench"
PAYLOAD = b"x" * SIZE


Run = Completions[bytes]


Step = Callable[[], Awaitable[None]]
# consumer(stream, run) prepares (loads, compiles, connects nothing yet) and returns
# (start, stop): the clock runs from start() on.
Consumer = Callable[[str, Run], Awaitable[tuple[Step, Step]]]


async def load(client: aioredis.Redis, stream: str, n: int) -> None:
    for start in range(0, n, 500):
        async with client.pipeline(transaction=False) as pipe:
            for _ in range(start, min(n, start + 500)):
                pipe.xadd(stream, {"data": PAYLOAD})
            await pipe.execute()


async def measure(name: str, consumer: Consumer, client: aioredis.Redis) -> dict[str, Any]:
    stream = f"bench-{name}-{uuid.uuid4().hex[:8]}"
    await client.xgroup_create(stream, GROUP, id="0", mkstream=True)
    try:
        await load(client, stream, N)
        run = Run(expect=N)
        start, stop = await consumer(stream, run)

        async def publish(_: int) -> bytes:
            entry_id: bytes = await client.xadd(stream, {"data": PAYLOAD})
            return entry_id

        result = await run.burst_then_paced(start, publish, burst=N, paced=LAT_N,
                                            rate=LAT_RATE)
        await stop()
    finally:
        await client.delete(stream)
    return result


async def raw_consumer(stream: str, run: Run) -> tuple[Step, Step]:
    client = aioredis.Redis.from_url(URL)

    async def loop() -> None:
        while True:
            reply = await client.xreadgroup(GROUP, "raw", {stream: ">"}, count=32, block=1000)
            ids = [entry_id for _, entries in reply or [] for entry_id, _ in entries]
            if ids:
                await client.xack(stream, GROUP, *ids)
                for entry_id in ids:
                    run.mark(entry_id)

    tasks: list[asyncio.Task[None]] = []

    async def start() -> None:
        tasks.append(asyncio.create_task(loop()))

    async def stop() -> None:
        tasks[0].cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await client.aclose()
    return start, stop


async def faststream_consumer(stream: str, run: Run) -> tuple[Step, Step]:
    broker = RedisBroker(URL, logger=None)

    @broker.subscriber(stream=StreamSub(stream, group=GROUP, consumer="fs", max_records=32,
                                        polling_interval=1000))
    async def handle(msg: RedisStreamMessage) -> bytes:
        # What the echo component does: read the event, answer with its data.
        body = b"echo:" + msg.body
        run.mark(msg.raw_message["message_ids"][0])
        return body

    async def stop() -> None:
        await broker.stop()
    return broker.start, stop


def gateway(wasm: Path) -> Consumer:
    """The gateway consumer, running the component at ``wasm``."""
    async def consumer(stream: str, run: Run) -> tuple[Step, Step]:
        return await gateway_consumer(wasm, stream, run)
    return consumer


async def gateway_consumer(wasm: Path, stream: str, run: Run) -> tuple[Step, Step]:
    directory = Path(tempfile.mkdtemp(prefix="bench-redis-"))
    manifest = directory / "wasmgate.toml"
    manifest.write_text(f"""
[application]
name = "bench-redis"

[brokers.r]
kind = "redis"
url = "{URL}"

[component.echo]
source = "{wasm}"
isolation = "pooled"
max-instances = 8

[[trigger.redis-streams]]
component = "echo"
broker = "r"
stream = "{stream}"
group = "{GROUP}"
concurrency = 16
ordering = "none"
batch-size = 32
""")
    app = App.load(manifest)
    [trigger] = app.triggers
    assert isinstance(trigger, RedisStreamsTrigger)

    async def start() -> None:
        await app.start()
        # Done = after XACK returns, observed by wrapping the trigger's settle client
        # (created by start(); the first XREADGROUP round trip is still ahead of any XACK).
        writer = trigger._writer
        assert writer is not None
        xack = writer.xack

        async def timed_xack(name: Any, group: Any, *ids: Any) -> Any:
            result = await xack(name, group, *ids)
            for entry_id in ids:
                run.mark(entry_id)
            return result

        writer.xack = timed_xack  # type: ignore[method-assign]

    async def stop() -> None:
        await app.stop()
    return start, stop


async def main() -> None:
    quiet_logging()
    build_handler("echo")
    client = aioredis.Redis.from_url(URL)
    results: dict[str, dict[str, Any]] = {}
    for name, consumer in (("raw", raw_consumer), ("faststream", faststream_consumer),
                           ("gateway", gateway(build_handler("echo"))),
                           ("gateway-wat", gateway(WAT_ECHO))):
        results[name] = await measure(name, consumer, client)
        print(f"{name}: {results[name]}", file=sys.stderr)
    await client.aclose()
    print(f"\nRedis Streams, {N} entries of {SIZE} B (latency: {LAT_N} at {LAT_RATE:.0f}/s); "
          f"{load_average()}\n")
    labels = {"raw": "raw redis-py loop (no handler)",
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
