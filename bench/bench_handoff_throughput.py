"""Throughput of one pool under concurrency, by hand-off: asyncio.to_thread, the pool's own
worker threads (gateway/handoff.py), and own threads with the short C calls after the guest
call (result delete, post-return) made with the GIL held (ctypes.PyDLL), an experiment
that was measured and not kept.

16 concurrent callers, 4 instances, 2,000 events of 256 B per round, rounds interleaved;
prints the median and every round.

Run: .venv/bin/python bench/bench_handoff_throughput.py
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec
import structlog
from wasmtime import _ffi as ffi

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bindings.host.imports import HostImports
from bindings.host.kv import SqliteKeyValue
from bindings.types import Event
from gateway import convert
from gateway.engine import WasmEngine
from gateway.executor import InstancePool
from gateway.manifest import ComponentSpec
from tests.fixtures.build import WAT_ECHO, build_handler

ROUNDS = 5
EVENTS = 2000
CONCURRENCY = 16

_PYDLL = ctypes.PyDLL(ffi.dll._name)


def _gil_held(name: str, restype: Any, argtypes: list[Any]) -> Any:
    fn = _PYDLL[name]
    fn.restype = restype
    fn.argtypes = argtypes
    return fn


RELEASING = (convert._val_delete, convert._post_return)
HOLDING = (
    _gil_held("wasmtime_component_val_delete", None,
              [ctypes.POINTER(ffi.wasmtime_component_val)]),
    _gil_held("wasmtime_component_func_post_return", ctypes.POINTER(ffi.wasmtime_error_t),
              [ctypes.POINTER(ffi.wasmtime_component_func),
               ctypes.POINTER(ffi.wasmtime_context_t)]),
)


async def events_per_second(pool: InstancePool, n: int) -> float:
    event = Event(id="x", source="bench", type="t", subject="hi", data=b"x" * 256)
    slots = asyncio.Semaphore(CONCURRENCY)

    async def one() -> None:
        async with slots:
            await pool.call(event)

    t = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(n)))
    return n / (time.perf_counter() - t)


async def main() -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    tmp = Path(tempfile.mkdtemp())
    engine = WasmEngine(tmp / "cache")
    host = HostImports("echo", {"default": SqliteKeyValue(tmp / "kv.sqlite")}, {})
    print(f"load average before: {os.getloadavg()}")
    for guest, wasm in (("componentize-py", build_handler("echo")), ("WAT", WAT_ECHO)):
        spec = msgspec.convert({"source": str(wasm), "max-instances": 4}, ComponentSpec)
        compiled = engine.load_component(wasm)
        rates: dict[str, list[float]] = {}
        for _ in range(ROUNDS):
            for variant in ("to_thread", "own threads", "own threads, GIL held"):
                convert._val_delete, convert._post_return = (
                    HOLDING if variant.endswith("held") else RELEASING)
                pool = InstancePool("echo", spec, engine, compiled, host.link,
                                    handoff="to_thread" if variant == "to_thread"
                                    else "threads")
                await events_per_second(pool, 200)  # warm
                rates.setdefault(variant, []).append(await events_per_second(pool, EVENTS))
                pool.close()
        convert._val_delete, convert._post_return = RELEASING
        for variant, values in rates.items():
            print(f"{guest:>16} {variant:<22} median {statistics.median(values):>8,.0f}/s  "
                  f"rounds {[round(v) for v in values]}")
    print(f"load average after: {os.getloadavg()}")
    engine.close()


if __name__ == "__main__":
    asyncio.run(main())
