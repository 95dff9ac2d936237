"""One side of bench/bench_host_calls.py: µs per host call from a componentize-py guest.

One event runs the host call `times` times inside the guest (the caps fixture's `times`
field); the per-call cost is the difference between a run with N calls and a run with 1,
divided by N - 1, so the event's own overhead cancels out. Runs in either source tree (see
bench/_baseline.py) and prints one JSON document: ``{row: [wall_us, cpu_us]}``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import structlog

from bindings.types import Event, new_event_id
from gateway.app import App

MANIFEST = """
[application]
name = "bench-host-calls"

[variables]
greeting = {{ default = "hello" }}

[brokers.nats]
kind = "nats"
url = "nats://127.0.0.1:4222"

[component.caps]
source = "{wasm}"
key-value-stores = ["default"]
publish = ["nats:{subject}"]
"""


async def per_call(app: App, msg: dict[str, Any], n: int, rounds: int) -> list[float]:
    async def run(times: int) -> tuple[float, float]:
        event = Event(id=new_event_id(), source="bench", type="bench",
                      data=json.dumps({**msg, "times": times}).encode())
        t, c = time.perf_counter(), time.process_time()
        response = await app.invoke("caps", event)
        elapsed = time.perf_counter() - t, time.process_time() - c
        assert "ok" in json.loads(response.body), response.body
        return elapsed

    await run(n)  # warm up
    walls, cpus = [], []
    for _ in range(rounds):
        (wall_n, cpu_n), (wall_1, cpu_1) = await run(n), await run(1)
        walls.append((wall_n - wall_1) / (n - 1))
        cpus.append((cpu_n - cpu_1) / (n - 1))
    return [statistics.median(walls) * 1e6, statistics.median(cpus) * 1e6]


async def main(args: dict[str, Any]) -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    directory = Path(tempfile.mkdtemp())
    (directory / "wasmgate.toml").write_text(
        MANIFEST.format(wasm=args["wasm"], subject=args["subject"]))
    app = App.load(directory / "wasmgate.toml")
    await app.start()
    app.capabilities.store("default").set("k", b"v" * 100)
    results = {row: await per_call(app, msg, args["n"], args["rounds"])
               for row, msg in args["rows"].items()}
    await app.stop()
    print(json.dumps(results))


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1])))
