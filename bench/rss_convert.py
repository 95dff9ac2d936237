"""Leak check for the call paths: RSS of this process across 20k pooled calls per path.

A path that leaks even one small C allocation per call shows as steady growth here; a flat
line after the first thousand calls (allocator warm-up) is what we want.

Run: .venv/bin/python bench/rss_convert.py
"""

from __future__ import annotations

import asyncio
import logging
import sys
import tempfile
from pathlib import Path

import msgspec
import structlog

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bindings.host.imports import HostImports
from bindings.host.kv import SqliteKeyValue
from bindings.types import Event
from gateway.engine import WasmEngine
from gateway.executor import CallPath, InstancePool
from gateway.manifest import ComponentSpec
from tests.fixtures.build import WAT_ECHO, build_handler

CALLS = 20_000
EVENT = Event(id="rss", source="bench", type="t", subject="hi", content_type="text/plain",
              key=b"k", headers=[("a", "b")] * 4, metadata=[("m", "n")] * 4, data=b"x" * 1024)


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def run(pool: InstancePool) -> list[int]:
    marks = []
    for i in range(CALLS + 1):
        if i % 5000 == 0:
            marks.append(rss_kib())
        await pool.call(EVENT)
    return marks


async def main() -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    tmp = Path(tempfile.mkdtemp())
    engine = WasmEngine(tmp / "cache")
    host = HostImports("echo", {"default": SqliteKeyValue(tmp / "kv.sqlite")}, {})
    print(f"RSS (KiB) every 5000 calls, {CALLS} pooled calls of a 1 KB event per row")
    for label, wasm in (("wat", WAT_ECHO), ("componentize-py", build_handler("echo"))):
        compiled = engine.load_component(wasm)
        path: CallPath
        for path in ("specialised", "stock"):
            # One instance for all calls (max-uses above CALLS): growth is the host's, not
            # a recycled guest heap's.
            spec = msgspec.convert({"source": str(wasm), "max-instances": 1,
                                    "max-uses": CALLS * 2}, ComponentSpec)
            pool = InstancePool("echo", spec, engine, compiled, host.link, call_path=path)
            marks = await run(pool)
            print(f"{label:>16} {path:>11}: {marks}  growth after 5k: {marks[-1] - marks[1]} KiB")
    engine.close()


if __name__ == "__main__":
    asyncio.run(main())
