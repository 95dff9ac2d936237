"""One side of bench/bench_executor.py: per-call wall and CPU time of an executor.

Runs inside either source tree (the native executor's or the wasmtime-py baseline's, see
bench/_baseline.py) and adapts to its InstancePool signature. Prints one JSON document:
``{"<guest>|<isolation>|<size>": [wall_us, cpu_us], ...}``. CPU time is the whole
process's (every thread), so work moved off the loop thread is still counted.
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

import msgspec
import structlog

from bindings.host.imports import HostImports
from bindings.host.kv import SqliteKeyValue
from bindings.types import Event
from gateway.engine import WasmEngine
from gateway.executor import InstancePool
from gateway.manifest import ComponentSpec


def make_pool(engine: WasmEngine, wasm: Path, isolation: str, host: HostImports,
              memory_mb: int) -> InstancePool:
    spec = msgspec.convert({"source": str(wasm), "isolation": isolation,
                            "memory-mb": memory_mb}, ComponentSpec)
    compiled = engine.load_component(wasm)
    link: Any = getattr(host, "link", host)  # the baseline took host.link
    return InstancePool("echo", spec, engine, compiled, link)


async def measure(pool: InstancePool, event: Event, n: int) -> tuple[float, float]:
    expected = b"echo:" + event.data
    for _ in range(3):
        await pool.call(event)
    walls = []
    cpu0 = time.process_time()
    for _ in range(n):
        t = time.perf_counter()
        response = await pool.call(event)
        walls.append(time.perf_counter() - t)
        assert response.body == expected, response.body[:40]
    cpu = (time.process_time() - cpu0) / n
    return statistics.median(walls) * 1e6, cpu * 1e6


async def main(args: dict[str, Any]) -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    tmp = Path(tempfile.mkdtemp())
    engine = WasmEngine(tmp / "cache")
    host = HostImports("echo", {"default": SqliteKeyValue(tmp / "kv.sqlite")}, {})
    results: dict[str, list[float]] = {}
    for guest, wasm in args["guests"].items():
        for isolation in args["isolations"]:
            pool = make_pool(engine, Path(wasm), isolation, host, args["memory_mb"])
            for label, size in args["sizes"].items():
                n = args["samples"][label] // (5 if isolation == "fresh" else 1)
                event = Event(id="b", source="bench", type="t", subject="hi",
                              data=b"x" * size)
                results[f"{guest}|{isolation}|{label}"] = list(
                    await measure(pool, event, max(n, 5)))
            close = getattr(pool, "close", None)
            if close is not None:
                close()
    engine.close()
    print(json.dumps(results))


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1])))
