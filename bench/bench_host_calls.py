"""Cost of one host call from a componentize-py handler, before and after the executor went
native, against the same operation from plain Python: kv get, kv increment (SQLite),
config get, log emit, publish to NATS core.

The guest side runs in bench/_host_calls_child.py, once in the wasmtime-py executor's tree
(bench/_baseline.py) and once in this one; the plain-Python baseline calls the same
backend (or the same NATS client) N times in a loop in this process.

Run: .venv/bin/python bench/bench_host_calls.py
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import structlog

from bench._baseline import baseline_side, current_side, run_side
from bench._measure import load_average, print_table, quiet_logging
from bindings.host.kv import SqliteKeyValue
from tests.fixtures.build import build_handler

N = 200
ROUNDS = 15
NATS_URL = "nats://127.0.0.1:4222"


async def plain_per_call_us(op: Any) -> float:
    samples = []
    for _ in range(ROUNDS):
        t = time.perf_counter()
        for _ in range(N):
            await op()
        samples.append((time.perf_counter() - t) / N)
    return statistics.median(samples) * 1e6


async def plain_rows(subject: str) -> dict[str, float]:
    import nats

    store = SqliteKeyValue(Path(tempfile.mkdtemp()) / "kv.sqlite")
    store.set("k", b"v" * 100)
    nc = await nats.connect(NATS_URL)
    variables = {"greeting": "hello"}
    quiet = structlog.get_logger("bench")

    async def kv_get() -> None:
        store.get("k")

    async def kv_incr() -> None:
        store.increment("n", 1)

    async def config_get() -> None:
        variables.get("greeting")

    async def log_emit() -> None:
        quiet.info("a line of about forty characters, filtered")

    async def nats_publish() -> None:
        # The same confirmation the host import waits for: the server has it after flush.
        await nc.publish(subject, b"x" * 100)
        await nc.flush()

    ops = {"kv get (SQLite, 100 B)": kv_get, "kv increment (SQLite)": kv_incr,
           "config get": config_get, "log emit (filtered)": log_emit,
           "publish NATS core (100 B)": nats_publish}
    result = {name: await plain_per_call_us(op) for name, op in ops.items()}
    await nc.close()
    return result


def main() -> None:
    quiet_logging()
    subject = f"bench.{uuid.uuid4().hex[:8]}"
    rows = {
        "kv get (SQLite, 100 B)": {"op": "kv-get", "store": "default", "key": "k"},
        "kv increment (SQLite)": {"op": "kv-incr", "store": "default", "key": "n"},
        "config get": {"op": "config", "name": "greeting"},
        "log emit (filtered)": {"op": "log",
                                "message": "a line of about forty characters, filtered"},
        "publish NATS core (100 B)": {"op": "publish", "broker": "nats",
                                      "destination": subject, "body": "x" * 100},
    }
    args = {"wasm": str(build_handler("caps")), "subject": subject, "rows": rows,
            "n": N, "rounds": ROUNDS}
    print(f"host calls: median of {ROUNDS} rounds of {N} calls; {load_average()}\n")
    before = run_side(baseline_side(), "_host_calls_child.py", args)
    after = run_side(current_side(), "_host_calls_child.py", args)
    plain = asyncio.run(plain_rows(subject))
    table = []
    for name in rows:
        (wb, cb), (wa, ca), p = before[name], after[name], plain[name]
        table.append([name, f"{wb:.1f} µs ({cb:.1f} CPU)", f"{wa:.1f} µs ({ca:.1f} CPU)",
                      f"{p:.1f} µs", f"{wb / p:.1f}x", f"{wa / p:.1f}x"])
    print_table(["operation", "wasmtime-py (before)", "native (after)", "plain Python",
                 "before/plain", "after/plain"], table)
    print(f"after: {load_average()}")


if __name__ == "__main__":
    main()
