"""Python (componentize-py) against JavaScript (componentize-js) handlers: build time,
component size, compile time, and per-event cost fresh and pooled through the same executor.

Both fixtures answer with the same shape (one log line, one header, ``echo:`` + body): the
Python echo's default mode and the JS echo's ``py-shape`` mode.

Run: .venv/bin/python bench/bench_languages.py   (prints tables; numbers go in BENCHMARKS.md)
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import msgspec
import structlog
import wasmtime
from wasmtime import component as wc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bindings import WIT_DIR, WIT_WORLD
from bindings.host.imports import HostImports
from bindings.host.kv import SqliteKeyValue
from bindings.js import componentize_js
from bindings.types import Event
from gateway.dispatch import Dispatcher
from gateway.engine import WasmEngine
from gateway.executor import InstancePool
from gateway.manifest import ComponentSpec
from tests.fixtures.build import HERE

SIZES = {"tiny": 0, "1 KB": 1024, "64 KB": 65536}


def build_python(out: Path) -> None:
    tool = Path(sys.executable).with_name("componentize-py")
    subprocess.run([str(tool), "-d", str(WIT_DIR), "-w", WIT_WORLD, "componentize", "app",
                    "-p", str(HERE / "handlers" / "echo"), "-o", str(out)],
                   check=True, capture_output=True)


def build_js(out: Path) -> None:
    componentize_js(HERE / "handlers-js" / "echo" / "app.js", out)


async def per_call_us(pool: InstancePool, event: Event, n: int) -> float:
    dispatcher = Dispatcher(lambda _c, e: pool.call(e))
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        outcome = await dispatcher.dispatch("echo", event)
        samples.append(time.perf_counter() - t)
        assert outcome.response is not None and outcome.response.body == b"echo:" + event.data
    return statistics.median(samples) * 1e6


async def main() -> None:
    # Guest log lines would dominate the output; the bench measures calls, not logging.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    tmp = Path(tempfile.mkdtemp())
    wasm: dict[str, Path] = {}
    print(f"{'language':>10} | {'build':>7} | {'size':>8} | {'compile':>7} | {'.cwasm':>8}")
    print("-" * 55)
    for lang, build in (("python", build_python), ("javascript", build_js)):
        out = tmp / f"{lang}.wasm"
        t = time.perf_counter()
        build(out)  # uncached: the digest cache of tests/fixtures/build.py is bypassed
        build_s = time.perf_counter() - t
        t = time.perf_counter()
        compiled = wc.Component(wasmtime.Engine(), out.read_bytes())
        compile_s = time.perf_counter() - t
        cwasm = len(compiled.serialize())
        wasm[lang] = out
        print(f"{lang:>10} | {build_s:>5.1f} s | {out.stat().st_size / 2**20:>5.1f} MB | "
              f"{compile_s:>5.1f} s | {cwasm / 2**20:>5.1f} MB")

    engine = WasmEngine(tmp / "cache")
    pools: dict[tuple[str, str], InstancePool] = {}
    for lang, path in wasm.items():
        compiled = engine.load_component(path)
        host = HostImports("echo", {"default": SqliteKeyValue(tmp / f"{lang}.sqlite")}, {})
        for iso in ("pooled", "fresh"):
            spec = msgspec.convert({"source": str(path), "isolation": iso}, ComponentSpec)
            pools[lang, iso] = InstancePool("echo", spec, engine, compiled, host.link)

    print()
    print(f"{'body':>6} | {'py pooled':>10} | {'js pooled':>10} | {'py fresh':>10} | "
          f"{'js fresh':>10} | {'js/py pooled':>12} | {'js/py fresh':>11}")
    print("-" * 88)
    for label, size in SIZES.items():
        # The JS fixture picks its behaviour by subject; the Python one answers this
        # subject with its default (same-shaped) reply.
        event = Event(id="b", source="bench", type="t", subject="py-shape", data=b"x" * size)
        n = 30 if size >= 65536 else 200
        us: dict[tuple[str, str], float] = {}
        for lang in wasm:
            await per_call_us(pools[lang, "pooled"], event, 5)  # warm
            us[lang, "pooled"] = await per_call_us(pools[lang, "pooled"], event, n)
            us[lang, "fresh"] = await per_call_us(pools[lang, "fresh"], event, max(10, n // 5))
        print(f"{label:>6} | {us['python', 'pooled']:>7.0f} µs | "
              f"{us['javascript', 'pooled']:>7.0f} µs | {us['python', 'fresh']:>7.0f} µs | "
              f"{us['javascript', 'fresh']:>7.0f} µs | "
              f"{us['javascript', 'pooled'] / us['python', 'pooled']:>11.2f}x | "
              f"{us['javascript', 'fresh'] / us['python', 'fresh']:>10.2f}x")
    engine.close()


if __name__ == "__main__":
    asyncio.run(main())
