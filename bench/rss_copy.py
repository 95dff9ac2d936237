"""Host memory per byte copied through a call, before and after the executor went native.

A pooled componentize-py echo call with 1 MB and 30 MB payloads, through the wasmtime-py
executor (bench/_baseline.py) and the native one, each in its own process
(bench/_rss_child.py). Reports the peak RSS growth during the call divided by the payload
size: the first call (which also grows the guest's heap) and the second (host cost only).

Run: .venv/bin/python bench/rss_copy.py
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._baseline import baseline_side, current_side, run_side
from tests.fixtures.build import build_handler

SIZES = {"1 MB": 1 << 20, "30 MB": 30 << 20}


def main() -> None:
    args = {"wasm": str(build_handler("echo")), "sizes": SIZES, "memory_mb": 512}
    sides = [baseline_side(), current_side()]
    results = {side.label: run_side(side, "_rss_child.py", args) for side in sides}
    print("Peak RSS growth per byte of payload (echo: data in, `echo:` + data out):")
    print()
    print("| executor | payload | first call | second call (host only) |")
    print("|---|---:|---:|---:|")
    for label, rows in results.items():
        for size, found in rows.items():
            if isinstance(found, str):
                print(f"| {label} | {size} | fails: {found} | |")
            else:
                first, second = found
                print(f"| {label} | {size} | {first:.1f}x | {second:.1f}x |")


if __name__ == "__main__":
    main()
