"""Per-call cost of the executor, before and after it went native, in one run.

The same echo logic as a componentize-py component, a componentize-js one and a
hand-written WAT one (tests/fixtures/wat/echo.wat), pooled and fresh, for tiny, 1 KB,
64 KB and 1 MB bodies: through ``InstancePool.call`` of the wasmtime-py executor (the
baseline commit, bench/_baseline.py) and of the native one, each in its own process
(bench/_executor_child.py), one after the other. Wall µs is the median call; CPU µs is the
process's CPU time (all threads) per call, the number that holds up on a loaded machine.

Run: .venv/bin/python bench/bench_executor.py [--quick] [--no-js] [--before-tree DIR]

``--before-tree DIR`` measures the gateway of another checkout (with its own built
``gateway/_native``) as "before" instead of the wasmtime-py baseline: a native change's
before and after in one run.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._baseline import Side, baseline_side, current_side, run_side
from tests.fixtures.build import WAT_ECHO, build_handler, build_js_handler

QUICK = "--quick" in sys.argv
SIZES = {"tiny": 0, "1 KB": 1024, "64 KB": 65536, "1 MB": 1 << 20}
SAMPLES = {"tiny": 300, "1 KB": 300, "64 KB": 100, "1 MB": 20}


def fmt(us: float) -> str:
    return f"{us:,.0f}" if us >= 100 else f"{us:.1f}"


def _before_side() -> Side:
    if "--before-tree" not in sys.argv:
        return baseline_side()
    tree = Path(sys.argv[sys.argv.index("--before-tree") + 1]).resolve()
    return Side(f"native at {tree}", sys.executable, tree)


def main() -> None:
    guests = {"componentize-py": str(build_handler("echo")), "WAT": str(WAT_ECHO)}
    if "--no-js" not in sys.argv:
        guests["componentize-js"] = str(build_js_handler("echo"))
    samples = {k: max(10, v // 10) if QUICK else v for k, v in SAMPLES.items()}
    args = {"guests": guests, "isolations": ["pooled", "fresh"], "sizes": SIZES,
            "samples": samples, "memory_mb": 128}
    print(f"load average before: {os.getloadavg()}")
    before_side, after_side = _before_side(), current_side()
    before = run_side(before_side, "_executor_child.py", args)
    after = run_side(after_side, "_executor_child.py", args)
    print(f"load average after: {os.getloadavg()}")
    print()
    print(f"before: {before_side.label}; after: {after_side.label}. "
          "µs per call (median wall; CPU = process CPU per call)")
    print()
    print("| guest | isolation | body | before wall | before CPU | after wall | after CPU "
          "| CPU before/after |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for key, (wall_a, cpu_a) in after.items():
        guest, isolation, size = key.split("|")
        wall_b, cpu_b = before.get(key, (float("nan"), float("nan")))
        print(f"| {guest} | {isolation} | {size} | {fmt(wall_b)} | {fmt(cpu_b)} | "
              f"{fmt(wall_a)} | {fmt(cpu_a)} | {cpu_b / cpu_a:.1f}x |")


if __name__ == "__main__":
    main()
