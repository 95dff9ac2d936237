"""Cost of one host call from a componentize-py handler, against the same operation from
plain Python, side by side: kv get, kv increment (SQLite), config get, log emit, publish to
NATS core; each through wasmtime-py's stock host-function trampoline and through the fast
one (bindings/host/trampolines.py), in the same run.

Method: one event runs the host call `times` times inside the guest (the caps fixture's
`times` field); the per-call cost is the difference between a run with N calls and a run
with 1 call, divided by N - 1, so the event's own overhead cancels out. The plain-Python
baseline calls the same backend object (or the same NATS client) N times in a loop.

Run: .venv/bin/python bench/bench_host_calls.py
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import structlog

from bench._measure import load_average, print_table, quiet_logging
from bindings.types import Event, new_event_id
from gateway.app import App
from tests.fixtures.build import build_handler

N = 200
ROUNDS = 15
NATS_URL = "nats://127.0.0.1:4222"


def manifest(directory: Path, subject: str) -> Path:
    path = directory / "wasmgate.toml"
    path.write_text(f"""
[application]
name = "bench-host-calls"

[variables]
greeting = {{ default = "hello" }}

[brokers.nats]
kind = "nats"
url = "{NATS_URL}"

[component.caps]
source = "{build_handler('caps')}"
key-value-stores = ["default"]
publish = ["nats:{subject}"]
""")
    return path


async def guest_per_call_us(app: App, msg: dict[str, Any]) -> float:
    async def run(times: int) -> float:
        event = Event(id=new_event_id(), source="bench", type="bench",
                      data=json.dumps({**msg, "times": times}).encode())
        t = time.perf_counter()
        response = await app.invoke("caps", event)
        elapsed = time.perf_counter() - t
        assert "ok" in json.loads(response.body), response.body
        return elapsed

    await run(N)  # warm up
    samples = [(await run(N) - await run(1)) / (N - 1) for _ in range(ROUNDS)]
    return statistics.median(samples) * 1e6


async def plain_per_call_us(op: Any) -> float:
    samples = []
    for _ in range(ROUNDS):
        t = time.perf_counter()
        for _ in range(N):
            await op()
        samples.append((time.perf_counter() - t) / N)
    return statistics.median(samples) * 1e6


async def main() -> None:
    import nats

    quiet_logging()
    subject = f"bench.{uuid.uuid4().hex[:8]}"
    apps: dict[str, App] = {}
    for path in ("stock", "fast"):
        # HostImports reads the switch when the app links its component.
        os.environ["WASMGATE_HOST_CALLS"] = path
        apps[path] = App.load(manifest(Path(tempfile.mkdtemp()), subject))
        await apps[path].start()
    del os.environ["WASMGATE_HOST_CALLS"]
    store = apps["fast"].capabilities.store("default")
    apps["stock"].capabilities.store("default").set("k", b"v" * 100)
    store.set("k", b"v" * 100)
    nc = await nats.connect(NATS_URL)

    async def kv_get() -> None:
        store.get("k")

    async def kv_incr() -> None:
        store.increment("n", 1)

    async def nats_publish() -> None:
        # The same confirmation the host import waits for: the server has it after flush.
        await nc.publish(subject, b"x" * 100)
        await nc.flush()

    variables = {"greeting": "hello"}
    quiet = structlog.get_logger("bench")

    async def config_get() -> None:
        variables.get("greeting")

    async def log_emit() -> None:
        quiet.info("a line of about forty characters, filtered")

    rows = [
        ("kv get (SQLite, 100 B)", {"op": "kv-get", "store": "default", "key": "k"}, kv_get),
        ("kv increment (SQLite)", {"op": "kv-incr", "store": "default", "key": "n"}, kv_incr),
        ("config get", {"op": "config", "name": "greeting"}, config_get),
        ("log emit (filtered)", {"op": "log", "message": "a line of about forty characters, "
                                 "filtered"}, log_emit),
        ("publish NATS core (100 B)", {"op": "publish", "broker": "nats",
                                       "destination": subject, "body": "x" * 100},
         nats_publish),
    ]
    print(f"host calls: median of {ROUNDS} rounds of {N} calls; {load_average()}\n")
    table = []
    for name, msg, op in rows:
        stock = await guest_per_call_us(apps["stock"], msg)
        fast = await guest_per_call_us(apps["fast"], msg)
        plain = await plain_per_call_us(op)
        table.append([name, f"{stock:.1f} µs", f"{fast:.1f} µs", f"{plain:.1f} µs",
                      f"{stock / plain:.1f}x", f"{fast / plain:.1f}x"])
    print_table(["operation", "stock", "fast", "plain Python", "stock/plain", "fast/plain"],
                table)
    print(f"after: {load_average()}")
    await nc.close()
    for app in apps.values():
        await app.stop()


if __name__ == "__main__":
    asyncio.run(main())
