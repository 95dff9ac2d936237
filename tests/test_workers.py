"""``wasmgate up --workers N``: worker processes share one HTTP port (SO_REUSEPORT), stop
gracefully on one signal, and a dead worker is restarted."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.fixtures.build import build_handler

pytestmark = pytest.mark.wasm
REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_healthy(base: str, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "the supervisor exited"
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError("no worker answered /healthz")


def _workers_seen(base: str, want: int, tries: int = 200) -> dict[int, int]:
    """worker index -> pid, from /healthz over fresh connections (the kernel picks)."""
    seen: dict[int, int] = {}
    for _ in range(tries):
        # A new connection each time: SO_REUSEPORT balances connections, not requests.
        health = httpx.get(f"{base}/healthz", headers={"connection": "close"}).json()
        seen[health["worker"]] = health["pid"]
        if len(seen) == want:
            break
    return seen


def test_workers_share_the_port_restart_and_stop_gracefully(tmp_path: Path) -> None:
    (tmp_path / "wasmgate.toml").write_text(f"""
[application]
name = "workers"
[component.echo]
source = "{build_handler('echo')}"
[[trigger.http]]
route = "/echo/..."
component = "echo"
""")
    base_port = _free_port()
    base = f"http://127.0.0.1:{base_port}"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    supervisor = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "up", str(tmp_path / "wasmgate.toml"),
         "--listen", f"127.0.0.1:{base_port}", "--workers", "2"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_healthy(base, supervisor)
        seen = _workers_seen(base, 2)
        assert set(seen) == {0, 1}, f"only workers {sorted(seen)} answered"
        assert httpx.post(f"{base}/echo/x", content=b"hi").content == b"echo:hi"

        # A worker that dies is replaced; the port keeps being served meanwhile.
        os.kill(seen[1], signal.SIGKILL)
        deadline = time.monotonic() + 60
        while True:
            again = _workers_seen(base, 2, tries=50)
            if set(again) == {0, 1} and again[1] != seen[1]:
                break
            assert time.monotonic() < deadline, "worker 1 was not restarted"
            time.sleep(0.5)

        supervisor.send_signal(signal.SIGINT)
        assert supervisor.wait(timeout=30) == 0
        for pid in again.values():
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
        stderr = supervisor.communicate()[1].decode()
    assert "worker died; restarting" in stderr
