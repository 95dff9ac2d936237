"""NATS core and JetStream through the gateway (a no-op componentize-py handler, and the
hand-written WAT echo component) against the
raw nats-py loop (consume + ack, no handler) and FastStream with a no-op Python handler.
The gateway runs with the native executor (this tree) and with the wasmtime-py one (the
baseline tree, bench/_baseline.py), each in a process of its own, in the same run.

Two phases per system, same message count and size for all:

* **burst**: publish ``--count`` messages as fast as possible; events/s = count / (last
  handled - first published). Latency here is mostly queueing.
* **paced**: publish ``--paced`` messages at ``--rate``/s, well under every system's
  capacity; p50/p99 of publish -> handler done (gateway, FastStream) or -> acked (raw).

CPU µs per event is the process's CPU time (all threads, the publisher included, the same
for every system) over the burst, divided by the messages.

One process, one event loop, the shared broker on 127.0.0.1:4222. Run:
    .venv/bin/python bench/bench_nats.py [--count 5000] [--size 128]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import nats
import nats.js.errors

ROOT = Path(__file__).resolve().parents[1]
# The baseline side imports its gateway from BENCH_TREE (bench/_baseline.py).
sys.path.insert(0, os.environ.get("BENCH_TREE", str(ROOT)))
sys.path.insert(1, str(ROOT))

# ruff: noqa: E402 (imports follow the path set-up above)
from bench._baseline import Side, baseline_side, current_side
from bench._measure import (
    STAMP,
    StampedLatencies,
    load_average,
    percentiles,
    print_table,
    quiet_logging,
    ratios,
)
from bindings import WIT_DIR, WIT_WORLD
from bindings.types import Event, Response
from gateway.app import App
from tests.fixtures.build import WAT_ECHO

URL = "nats://127.0.0.1:4222"
HERE = Path(__file__).resolve().parent
INSTANCES = 8  # --instances (the manifest default)


def build_noop() -> Path:
    out = HERE / "build" / "noop.wasm"
    src = HERE / "handlers" / "noop"
    if not out.exists() or out.stat().st_mtime < (src / "app.py").stat().st_mtime:
        out.parent.mkdir(exist_ok=True)
        tool = Path(sys.executable).with_name("componentize-py")
        subprocess.run([str(tool), "-d", str(WIT_DIR), "-w", WIT_WORLD, "componentize", "app",
                        "-p", str(src), "-o", str(out)], check=True, capture_output=True)
    return out


@dataclass
class Result:
    rate: float
    p50: float
    p99: float
    cpu_us: float = 0.0


# A system under test: given (subject, stream or None, recorder) start consuming and return
# a stop coroutine.
Start = Callable[[str, str | None, StampedLatencies], Awaitable[Callable[[], Awaitable[None]]]]


async def raw(subject: str, stream: str | None, rec: StampedLatencies
              ) -> Callable[[], Awaitable[None]]:
    nc = await nats.connect(URL)
    if stream is None:
        async def on_msg(msg: nats.aio.msg.Msg) -> None:
            rec.record(msg.data)

        await nc.subscribe(subject, cb=on_msg, pending_msgs_limit=1_000_000)
        await nc.flush()

        async def stop_core() -> None:
            await nc.close()
        return stop_core
    js = nc.jetstream()
    psub = await js.pull_subscribe(subject, durable="raw", stream=stream)
    running = True

    async def loop() -> None:
        while running:
            try:
                msgs = await psub.fetch(64, timeout=0.5)
            except TimeoutError:
                continue
            for msg in msgs:
                await msg.ack()
                rec.record(msg.data)

    task = asyncio.create_task(loop())

    async def stop_js() -> None:
        nonlocal running
        running = False
        await task
        await nc.close()
    return stop_js


async def faststream(subject: str, stream: str | None, rec: StampedLatencies
                     ) -> Callable[[], Awaitable[None]]:
    from faststream.nats import JStream, NatsBroker, PullSub

    broker = NatsBroker(URL, logger=None)
    if stream is None:
        @broker.subscriber(subject)
        async def handler(body: bytes) -> None:
            rec.record(body)
    else:
        @broker.subscriber(subject, stream=JStream(stream, declare=False), durable="fs",
                           pull_sub=PullSub(batch_size=64, timeout=0.5))
        async def js_handler(body: bytes) -> None:
            rec.record(body)
    await broker.start()

    async def stop() -> None:
        await broker.stop()
    return stop


def gateway(wasm: Path, *, skip_wasm: bool = False) -> Start:
    """The gateway; with ``skip_wasm`` the component call is replaced by a Python no-op, to
    show what the adapter and dispatcher cost without the executor."""

    async def python_noop(component: str, event: Event) -> Response:
        return Response(status=200)

    async def start(subject: str, stream: str | None, rec: StampedLatencies
                    ) -> Callable[[], Awaitable[None]]:
        # A fixed directory, so the compiled component is cached across runs (.wasmgate/).
        tmp = HERE / "build" / "app"
        tmp.mkdir(parents=True, exist_ok=True)
        if stream is None:
            trigger = f'[[trigger.nats]]\nsubject = "{subject}"\n'
        else:
            trigger = (f'[[trigger.nats-jetstream]]\nstream = "{stream}"\n'
                       'consumer = "gateway"\nbatch = 64\ncreate = true\n'
                       f'subjects = ["{subject}"]\n')
        (tmp / "wasmgate.toml").write_text(f"""
[application]
name = "bench"

[brokers.b]
kind = "nats"
url = "{URL}"

[component.noop]
source = "{wasm}"
max-instances = {INSTANCES}

{trigger}component = "noop"
broker = "b"
concurrency = 16
ordering = "none"
""")
        app = App.load(tmp / "wasmgate.toml")
        invoke = python_noop if skip_wasm else app.dispatcher._invoke

        async def timed(component: str, event: Event) -> Response:
            response = await invoke(component, event)
            rec.record(event.data)
            return response

        app.dispatcher._invoke = timed
        await app.start()
        return app.stop
    return start


async def run_phase(start: Start, *, count: int, size: int, rate: float | None,
                    jetstream: bool) -> Result:
    ident = uuid.uuid4().hex[:8]
    subject = f"bench.{ident}"
    stream = f"bench-{ident}" if jetstream else None
    pub = await nats.connect(URL)
    js = pub.jetstream()
    if stream is not None:
        await js.add_stream(name=stream, subjects=[subject])
    rec = StampedLatencies(count)
    stop = await start(subject, stream, rec)
    # Core NATS is at most once: let every subscription reach the server before publishing.
    await asyncio.sleep(0.5)
    padding = b"x" * max(0, size - STAMP.size)
    try:
        first = time.perf_counter()
        cpu_first = time.process_time()
        futures = []
        for i in range(count):
            data = STAMP.pack(time.perf_counter_ns()) + padding
            if stream is not None:
                # Async publish: pipelined, acks collected at the end.
                futures.append(await js.publish_async(subject, data))
            else:
                await pub.publish(subject, data)
            if rate is not None:
                await asyncio.sleep(max(0.0, first + (i + 1) / rate - time.perf_counter()))
        await pub.flush()
        if futures:
            await asyncio.gather(*futures)
        try:
            await asyncio.wait_for(rec.done.wait(), timeout=60)
        except TimeoutError:
            raise SystemExit(f"{getattr(start, '__name__', start)}: only "
                             f"{len(rec.latencies_ms)} of {count} handled") from None
        cpu = time.process_time() - cpu_first
    finally:
        await stop()
        if stream is not None:
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await js.delete_stream(stream)
        await pub.close()
    p50, p99 = percentiles(rec.latencies_ms)
    return Result(rate=count / (rec.last - first), p50=p50, p99=p99, cpu_us=cpu / count * 1e6)


SYSTEMS = {"raw": "raw nats-py", "faststream": "FastStream", "wasm": "gateway (wasm)",
           "wat": "gateway, WAT handler", "nowasm": "gateway, no wasm"}
# Run in a process per executor: the gateway with a wasm or WAT handler.
SIDE_SYSTEMS = ("wasm", "wat")


def start_for(key: str) -> Start:
    if key == "raw":
        return raw
    if key == "faststream":
        return faststream
    if key == "wat":
        return gateway(WAT_ECHO)
    return gateway(build_noop(), skip_wasm=key == "nowasm")


async def measure(keys: list[str], args: argparse.Namespace
                  ) -> dict[str, dict[str, list[Result]]]:
    """{"NATS core" | "JetStream": {key: [burst, paced]}}"""
    out: dict[str, dict[str, list[Result]]] = {}
    for label, jetstream in (("NATS core", False), ("JetStream", True)):
        out[label] = {}
        for key in keys:
            start = start_for(key)
            burst = await run_phase(start, count=args.count, size=args.size, rate=None,
                                    jetstream=jetstream)
            paced = await run_phase(start, count=args.paced, size=args.size, rate=args.rate,
                                    jetstream=jetstream)
            out[label][key] = [burst, paced]
    return out


def measure_side(side: Side, args: argparse.Namespace) -> dict[str, dict[str, list[Result]]]:
    """The gateway systems measured in ``side``'s own process."""
    env = {**os.environ, "BENCH_TREE": str(side.tree), "PYTHONPATH": str(side.tree)}
    cmd = [side.python, __file__, "--json", "--systems", ",".join(SIDE_SYSTEMS),
           "--count", str(args.count), "--size", str(args.size), "--paced", str(args.paced),
           "--rate", str(args.rate), "--instances", str(args.instances)]
    done = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
    raw_out = json.loads(done.stdout.strip().splitlines()[-1])
    return {label: {k: [Result(**r) for r in v] for k, v in rows.items()}
            for label, rows in raw_out.items()}


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--paced", type=int, default=400)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--instances", type=int, default=INSTANCES,
                        help="the component's max-instances (worker threads in use)")
    parser.add_argument("--systems", default=",".join(SYSTEMS), help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    globals()["INSTANCES"] = args.instances
    quiet_logging()
    keys = args.systems.split(",")
    if args.json:
        found = await measure(keys, args)
        print(json.dumps({label: {k: [vars(r) for r in v] for k, v in rows.items()}
                          for label, rows in found.items()}))
        return
    print(f"{args.count} msgs of {args.size} B burst, {args.paced} paced at {args.rate:.0f}/s; "
          f"before: {load_average()}")
    here = await measure([k for k in keys if k not in SIDE_SYSTEMS], args)
    sides = {"native": measure_side(current_side(), args),
             "wasmtime-py": measure_side(baseline_side(), args)}
    for label in ("NATS core", "JetStream"):
        results = {SYSTEMS[k]: v for k, v in here[label].items()}
        for side, found in sides.items():
            for key, value in found[label].items():
                results[f"{SYSTEMS[key]}, {side}"] = value
        print(f"\n### {label}\n")
        print_table(["system", "events/s (burst)", "CPU µs/event (burst)", "p50 ms (paced)",
                     "p99 ms (paced)", "p50 ms (burst)"],
                    ([name, f"{burst.rate:,.0f}", f"{burst.cpu_us:.0f}", f"{paced.p50:.2f}",
                      f"{paced.p99:.2f}", f"{burst.p50:.0f}"]
                     for name, (burst, paced) in results.items()))
        rates = {name: burst.rate for name, (burst, _) in results.items()}
        print("\n" + ratios(rates, [
            ("native/FastStream", "gateway (wasm), native", "FastStream"),
            ("wasmtime-py/FastStream", "gateway (wasm), wasmtime-py", "FastStream"),
            ("native(WAT)/FastStream", "gateway, WAT handler, native", "FastStream"),
            ("gateway no wasm/FastStream", "gateway, no wasm", "FastStream")]))
    print(f"\nafter: {load_average()}")


if __name__ == "__main__":
    asyncio.run(main())
