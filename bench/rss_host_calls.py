"""Leak check for the host calls: RSS of this process across 20k host calls of each kind
(kv get of a 4 KB value, kv set, kv list-keys, config get, an error value), one pooled
instance.

Each event repeats its host call 100 times inside the guest (the caps fixture's `times`).
A host call that leaks one small allocation per call shows as growth proportional to the
calls.

Run: .venv/bin/python bench/rss_host_calls.py
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
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
from gateway.executor import InstancePool
from gateway.manifest import ComponentSpec
from tests.fixtures.build import build_handler

CALLS = int(os.environ.get("RSS_CALLS", "20000"))
PER_EVENT = 100
OPS = [
    {"op": "kv-get", "store": "default", "key": "big"},
    {"op": "kv-set", "store": "default", "key": "k", "value": "v" * 1000},
    {"op": "kv-list", "store": "default", "prefix": "k"},
    {"op": "config", "name": "greeting"},
    {"op": "kv-get", "store": "ungranted", "key": "k"},
]


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def main() -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    tmp = Path(tempfile.mkdtemp())
    engine = WasmEngine(tmp / "cache")
    wasm = build_handler("caps")
    compiled = engine.load_component(wasm)
    print(f"RSS (KiB) every 5000 host calls, {CALLS} calls per row; load avg "
          f"{os.getloadavg()[0]:.2f}")
    for path in ("native",):
        kv = SqliteKeyValue(tmp / f"{path}.sqlite")
        kv.set("big", b"b" * 4096)
        host = HostImports("caps", {"default": kv}, {"greeting": "hello"})
        spec = msgspec.convert({"source": str(wasm), "max-instances": 1,
                                "max-uses": 1_000_000}, ComponentSpec)
        pool = InstancePool("caps", spec, engine, compiled, host)
        for msg in OPS:
            event = Event(id="rss", source="bench", type="t",
                          data=json.dumps({**msg, "times": PER_EVENT}).encode())
            marks = []
            for i in range(CALLS // PER_EVENT + 1):
                if i % (5000 // PER_EVENT) == 0:
                    marks.append(rss_kib())
                await pool.call(event)
            print(f"{path:>6} {msg['op']:>8} {msg.get('store', ''):>9}: {marks}  "
                  f"growth after 5k: {marks[-1] - marks[1]} KiB")
    engine.close()


if __name__ == "__main__":
    asyncio.run(main())
