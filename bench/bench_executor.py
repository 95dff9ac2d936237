"""Per-event cost through the dispatcher: the same echo logic as plain Python, as a
componentize-py component and as a minimal hand-written WAT component, for tiny, 1 KB and
64 KB bodies; pooled (warm instance) and fresh (new Store + instance per event); wasmtime-py's
stock conversion against gateway/convert.py's specialised one; on-demand against the pooling
instance allocator; the hand-off to the worker thread (asyncio.to_thread against the pool's
own threads, gateway/handoff.py) and the host-call path (wasmtime-py's stock trampoline
against bindings/host/trampolines.py) for pooled instances.

Run: .venv/bin/python bench/bench_executor.py [--quick]   (prints markdown tables for
BENCHMARKS.md). Medians of one run; the machine's load average is printed before and after.
"""

from __future__ import annotations

import asyncio
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import msgspec
import structlog

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bindings.host.imports import HostCallPath, HostImports
from bindings.host.kv import SqliteKeyValue
from bindings.types import Event, Response
from gateway.dispatch import Dispatcher
from gateway.engine import PoolingAllocator, WasmEngine
from gateway.executor import CallPath, Handoff, InstancePool
from gateway.handoff import WorkerThreads
from gateway.manifest import ComponentSpec
from tests.fixtures.build import WAT_ECHO, build_handler

SIZES = {"tiny": 0, "1 KB": 1024, "64 KB": 65536}
QUICK = "--quick" in sys.argv


async def plain_python(component: str, event: Event) -> Response:
    return Response(status=200, headers=[("x-subject", event.subject)], body=b"echo:" + event.data)


async def plain_python_on_a_thread(component: str, event: Event) -> Response:
    # The executor's floor: the same hop to a worker thread that every wasm call takes.
    return await asyncio.to_thread(
        lambda: Response(status=200, headers=[("x-subject", event.subject)],
                         body=b"echo:" + event.data))


_OWN_THREADS: WorkerThreads[Event, Response] = WorkerThreads(
    lambda event: Response(status=200, headers=[("x-subject", event.subject)],
                           body=b"echo:" + event.data), name="bench")


async def plain_python_on_own_threads(component: str, event: Event) -> Response:
    # The same function behind the executor's own worker threads.
    return await _OWN_THREADS.call(event)


def samples(size: int, fresh: bool) -> int:
    n = 30 if size >= 65536 else 300
    if fresh:
        n = max(10, n // 5)
    return max(5, n // 5) if QUICK else n


async def per_call_us(invoke: Callable[[str, Event], Coroutine[Any, Any, Response]],
                      event: Event, n: int) -> float:
    dispatcher = Dispatcher(invoke)
    for _ in range(3):  # warm: first-call paths, allocator, caches
        await dispatcher.dispatch("echo", event)
    times = []
    for _ in range(n):
        t = time.perf_counter()
        outcome = await dispatcher.dispatch("echo", event)
        times.append(time.perf_counter() - t)
        assert outcome.response is not None and outcome.response.status == 200, outcome
        assert outcome.response.body == b"echo:" + event.data
    return statistics.median(times) * 1e6


def fmt(us: float) -> str:
    return f"{us:,.0f} µs" if us >= 100 else f"{us:.1f} µs"


async def main() -> None:
    # Guest log lines would dominate the output; the bench measures calls, not logging.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    print(f"load average before: {os.getloadavg()}")
    tmp = Path(tempfile.mkdtemp())
    engines = {"on-demand": WasmEngine(tmp / "cache", pooling="off"),
               "pooling": WasmEngine(tmp / "cache", pooling=PoolingAllocator())}
    kv = SqliteKeyValue(tmp / "kv.sqlite")
    hosts = {p: HostImports("echo", {"default": kv}, {}, host_calls=p)
             for p in ("fast", "stock")}
    sources = {"componentize-py": build_handler("echo"), "WAT": WAT_ECHO}

    def pool(guest: str, isolation: str, path: CallPath, allocator: str, *,
             host_calls: HostCallPath = "fast", handoff: Handoff = "threads") -> InstancePool:
        engine = engines[allocator]
        wasm = sources[guest]
        spec = msgspec.convert({"source": str(wasm), "isolation": isolation}, ComponentSpec)
        return InstancePool("echo", spec, engine, engine.load_component(wasm),
                            hosts[host_calls].link, call_path=path, handoff=handoff)

    # (body, guest, host-call path, hand-off) -> pooled specialised µs
    variants: dict[tuple[str, str, str, str], float] = {}
    own: dict[str, float] = {}

    rows: dict[tuple[str, str, str, str, str], float] = {}
    plain: dict[str, float] = {}
    hop: dict[str, float] = {}
    for label, size in SIZES.items():
        event = Event(id="b", source="bench", type="t", subject="hi", data=b"x" * size)
        plain[label] = await per_call_us(plain_python, event, samples(size, False))
        hop[label] = await per_call_us(plain_python_on_a_thread, event, samples(size, False))
        own[label] = await per_call_us(plain_python_on_own_threads, event, samples(size, False))
        for guest in sources:
            # Interleaved so that load changes hit every variant alike.
            host_calls: HostCallPath
            handoff: Handoff
            for host_calls, handoff in (("stock", "to_thread"), ("fast", "to_thread"),
                                        ("stock", "threads"), ("fast", "threads")):
                p = pool(guest, "pooled", "specialised", "on-demand", host_calls=host_calls,
                         handoff=handoff)
                variants[(label, guest, host_calls, handoff)] = await per_call_us(
                    lambda c, e, p=p: p.call(e), event, samples(size, False))
        for guest in sources:
            for path in ("stock", "specialised"):
                for isolation in ("pooled", "fresh"):
                    allocators = ["on-demand"]
                    if isolation == "fresh" and path == "specialised":
                        allocators.append("pooling")
                    for allocator in allocators:
                        p = pool(guest, isolation, path, allocator)
                        rows[(label, guest, path, isolation, allocator)] = await per_call_us(
                            lambda c, e, p=p: p.call(e), event,
                            samples(size, isolation == "fresh"))
    for engine in engines.values():
        engine.close()

    print()
    print("Specialised conversion, on-demand allocator (the default configuration):")
    print()
    print("| body | plain Python | plain Python on a worker thread | componentize-py pooled "
          "| componentize-py fresh | WAT pooled | WAT fresh |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for label in SIZES:
        cells = [fmt(rows[(label, g, "specialised", i, "on-demand")])
                 for g in sources for i in ("pooled", "fresh")]
        print(f"| {label} | {fmt(plain[label])} | {fmt(hop[label])} | " + " | ".join(cells)
              + " |")
    print()
    print("Stock wasmtime-py conversion -> specialised (same run, on-demand allocator):")
    print()
    print("| body | guest | pooled stock | pooled specialised | fresh stock "
          "| fresh specialised |")
    print("|---:|---|---:|---:|---:|---:|")
    for label in SIZES:
        for g in sources:
            cells = [fmt(rows[(label, g, path, i, "on-demand")])
                     for i in ("pooled", "fresh") for path in ("stock", "specialised")]
            print(f"| {label} | {g} | " + " | ".join(cells) + " |")
    print()
    print_allocators(rows, list(sources))
    print_variants(variants, hop, own, list(sources))
    print(f"load average after: {os.getloadavg()}")


def print_allocators(rows: dict[tuple[str, str, str, str, str], float],
                     guests: list[str]) -> None:
    print("Fresh instance + call, on-demand -> pooling allocator (specialised conversion):")
    print()
    print("| body | guest | on-demand | pooling |")
    print("|---:|---|---:|---:|")
    for label in SIZES:
        for g in guests:
            print(f"| {label} | {g} | "
                  f"{fmt(rows[(label, g, 'specialised', 'fresh', 'on-demand')])} | "
                  f"{fmt(rows[(label, g, 'specialised', 'fresh', 'pooling')])} |")
    print()


def print_variants(variants: dict[tuple[str, str, str, str], float], hop: dict[str, float],
                   own: dict[str, float], guests: list[str]) -> None:
    print("Pooled, specialised conversion: host-call path x hand-off (same run):")
    print()
    print("| body | guest | stock host calls, to_thread | fast host calls, to_thread "
          "| stock host calls, own threads | fast host calls, own threads |")
    print("|---:|---|---:|---:|---:|---:|")
    for label in SIZES:
        print(f"| {label} | plain Python (hop only) | {fmt(hop[label])} | {fmt(hop[label])} | "
              f"{fmt(own[label])} | {fmt(own[label])} |")
        for g in guests:
            cells = [fmt(variants[(label, g, h, o)])
                     for o in ("to_thread", "threads") for h in ("stock", "fast")]
            print(f"| {label} | {g} | " + " | ".join(cells) + " |")
    print()


if __name__ == "__main__":
    asyncio.run(main())
