"""Per-event cost through the dispatcher: componentize-py handler (fresh and pooled) against
the same logic as a plain Python function, for tiny, 1 KB and 64 KB bodies.

Run: .venv/bin/python bench/bench_executor.py   (prints a table; numbers go in BENCHMARKS.md)
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bindings.host.imports import HostImports
from bindings.host.kv import SqliteKeyValue
from bindings.types import Event, Response
from gateway.dispatch import Dispatcher
from gateway.engine import WasmEngine
from gateway.executor import InstancePool
from gateway.manifest import ComponentSpec
from tests.fixtures.build import build_handler

SIZES = {"tiny": 0, "1 KB": 1024, "64 KB": 65536}


async def plain_python(component: str, event: Event) -> Response:
    return Response(status=200, headers=[("x-subject", event.subject)], body=b"echo:" + event.data)


async def per_call_us(dispatcher: Dispatcher, event: Event, n: int) -> float:
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        outcome = await dispatcher.dispatch("echo", event)
        samples.append(time.perf_counter() - t)
        assert outcome.response is not None and outcome.response.status == 200
    return statistics.median(samples) * 1e6


async def main() -> None:
    import logging

    import structlog

    # Guest log lines would dominate the output; the bench measures calls, not logging.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    wasm = build_handler("echo")
    tmp = Path(tempfile.mkdtemp())
    engine = WasmEngine(tmp / "cache")
    compiled = engine.load_component(wasm)
    host = HostImports("echo", {"default": SqliteKeyValue(tmp / "kv.sqlite")}, {})
    pools = {
        iso: InstancePool("echo", msgspec.convert({"source": str(wasm), "isolation": iso},
                                                  ComponentSpec), engine, compiled, host.link)
        for iso in ("pooled", "fresh")
    }
    print(f"{'body':>6} | {'plain Python':>12} | {'wasm pooled':>11} | {'wasm fresh':>10} | "
          f"{'pooled/plain':>12} | {'fresh/plain':>11}")
    print("-" * 80)
    for label, size in SIZES.items():
        event = Event(id="b", source="bench", type="t", subject="hi", data=b"x" * size)
        n = 30 if size >= 65536 else 300
        plain = await per_call_us(Dispatcher(plain_python), event, n)
        pooled_d = Dispatcher(lambda c, e: pools["pooled"].call(e))
        fresh_d = Dispatcher(lambda c, e: pools["fresh"].call(e))
        await per_call_us(pooled_d, event, 5)  # warm
        pooled = await per_call_us(pooled_d, event, n)
        fresh = await per_call_us(fresh_d, event, max(10, n // 5))
        print(f"{label:>6} | {plain:>9.1f} µs | {pooled:>8.1f} µs | {fresh:>7.1f} µs | "
              f"{pooled / plain:>11.0f}x | {fresh / plain:>10.0f}x")
    engine.close()


if __name__ == "__main__":
    asyncio.run(main())
