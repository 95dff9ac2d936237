"""One side of bench/rss_copy.py: how much a call's payload grows the process's memory.

For each payload size: a pooled echo call (data in, ``echo:`` + data out) is made twice on
the same instance; the peak RSS (VmHWM, reset through /proc/self/clear_refs before each
call) above the RSS before it is reported per byte of payload. The first call also grows
the guest's own heap to hold the data; the second finds that heap already grown, so its
growth is what the host side costs per call. Prints one JSON document.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import tempfile
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


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(field)


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")


async def main(args: dict[str, Any]) -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    tmp = Path(tempfile.mkdtemp())
    engine = WasmEngine(tmp / "cache")
    host = HostImports("echo", {"default": SqliteKeyValue(tmp / "kv.sqlite")}, {})
    wasm = Path(args["wasm"])
    fields = {"source": str(wasm), "memory-mb": args["memory_mb"], "max-instances": 1,
              "timeout-ms": 60_000}
    if "max_response_bytes" in ComponentSpec.__struct_fields__:  # not in the baseline
        fields["max-response-bytes"] = 64 << 20
    spec = msgspec.convert(fields, ComponentSpec)
    link: Any = getattr(host, "link", host)
    pool = InstancePool("echo", spec, engine, engine.load_component(wasm), link)
    await pool.call(Event(id="w", source="b", type="t", subject="hi", data=b"warm"))
    results: dict[str, list[float] | str] = {}
    for label, size in args["sizes"].items():
        event = Event(id="b", source="b", type="t", subject="hi", data=b"x" * size)
        growth: list[float] = []
        try:
            for _ in range(2):
                before = _status_kb("VmRSS")
                _reset_peak()
                response = await pool.call(event)
                peak = _status_kb("VmHWM")
                assert len(response.body) == size + 5
                del response
                growth.append((peak - before) * 1024 / size)
        except Exception as exc:  # the baseline cannot copy 30 MB at all: say so
            results[label] = str(exc)
            continue
        results[label] = growth
    print(json.dumps(results))


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1])))
