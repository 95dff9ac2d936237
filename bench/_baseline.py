"""The executor as it was before it went native, for side-by-side runs.

``BASELINE_COMMIT`` is the last commit whose executor was wasmtime-py's (gateway/convert.py
and friends). :func:`baseline_side` checks it out once into a git worktree under the user's
cache directory, with a venv holding wasmtime-py and the gateway's own dependencies, so a
benchmark can run the same measurement script against both executors in one run:
``run_side(baseline_side(), ...)`` and ``run_side(current_side(), ...)``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BASELINE_COMMIT = "9ca1ac5"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "wasmgate"
BASELINE_DEPS = ["wasmtime==50.0.1", "pytest>=8", "msgspec>=0.19", "structlog>=24.1",
                 "croniter>=2.0",
                 "uvicorn[standard]>=0.30", "httpx>=0.27", "redis>=5", "nats-py>=2.9",
                 "aio-pika>=9.4", "aiokafka>=0.11", "psycopg[binary]>=3.2", "pyyaml>=6"]


@dataclass(frozen=True)
class Side:
    """One executor to measure: the interpreter and the source tree it imports from."""

    label: str
    python: str
    tree: Path


def current_side() -> Side:
    return Side("native", sys.executable, ROOT)


def baseline_side() -> Side:
    """The wasmtime-py executor at ``BASELINE_COMMIT`` (checked out and installed once)."""
    tree = CACHE / f"bench-baseline-{BASELINE_COMMIT}"
    venv = tree / ".bench-venv"
    python = venv / "bin" / "python"
    if not (tree / "gateway").exists():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-f",
                        str(tree), BASELINE_COMMIT], check=True, capture_output=True)
    if not (venv / ".ready").exists():
        print(f"installing the baseline executor's dependencies into {venv} (once)",
              file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *BASELINE_DEPS], check=True)
        (venv / ".ready").touch()
    return Side(f"wasmtime-py ({BASELINE_COMMIT})", str(python), tree)


def run_side(side: Side, script: str, args: dict[str, Any]) -> Any:
    """Run ``bench/<script>`` with ``side``'s interpreter and tree; return its JSON output
    (the script prints one JSON document as its last line)."""
    env = {**os.environ, "PYTHONPATH": str(side.tree)}
    out = subprocess.run([side.python, str(ROOT / "bench" / script), json.dumps(args)],
                         env=env, check=True, capture_output=True, text=True, cwd=side.tree)
    return json.loads(out.stdout.strip().splitlines()[-1])
