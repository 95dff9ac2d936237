"""How long `make demo`'s flow takes: `wasmgate build`, then `wasmgate up` until `/hello`
first answers, on a copy of examples/demo, in three runs: first (cold build and compile
caches for this copy), again with nothing changed, and after editing one handler.

    .venv/bin/python bench/demo_timing.py

Prints a Markdown table (wall seconds per phase, the 1-minute load average at the end of
each run) for README.md. Wall time is what a newcomer waits for; the load average says how
busy the shared machine was, since it moves these numbers a lot.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WASMGATE = [sys.executable, "-m", "gateway.cli"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _build(app: Path) -> float:
    started = time.monotonic()
    subprocess.run([*WASMGATE, "build"], cwd=app, check=True, env=_env(),
                   stdout=subprocess.DEVNULL)
    return time.monotonic() - started


def _up_to_first_answer(app: Path) -> float:
    port = _free_port()
    started = time.monotonic()
    proc = subprocess.Popen([*WASMGATE, "up", "--listen", f"127.0.0.1:{port}"], cwd=app,
                            env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"wasmgate up exited with {proc.returncode}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/hello", timeout=5) as r:
                    if r.status == 200:
                        return time.monotonic() - started
            except OSError:
                time.sleep(0.05)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _env() -> dict[str, str]:
    # The venv's bin first: the demo's build commands call `wasmgate componentize`.
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
            "PYTHONPATH": str(REPO)}


def _run(app: Path, label: str) -> str:
    build = _build(app)
    up = _up_to_first_answer(app)
    load = os.getloadavg()[0]
    return f"| {label} | {build:.1f} s | {up:.1f} s | {build + up:.1f} s | {load:.1f} |"


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="wasmgate-demo-timing-") as tmp:
        app = Path(tmp) / "demo"
        shutil.copytree(REPO / "examples" / "demo", app,
                        ignore=shutil.ignore_patterns(".wasmgate", "build"))
        rows = [_run(app, "first run")]
        rows.append(_run(app, "nothing changed"))
        handler = app / "handlers" / "hello" / "app.py"
        handler.write_text(handler.read_text() + "\n# edited\n")
        rows.append(_run(app, "one handler edited"))
    print("| run | `wasmgate build` | `up` to first answer | total | load avg (1 min) |")
    print("|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
