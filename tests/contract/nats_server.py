"""A private ``nats-server -js`` on a free port, for tests that kill and restart a broker
without touching the shared one on 4222."""

from __future__ import annotations

import asyncio
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.contract.harness import free_port


def nats_server_binary() -> str:
    found = shutil.which("nats-server") or "/usr/sbin/nats-server"
    if not Path(found).exists():
        raise RuntimeError("nats-server not found; install Debian's nats-server package")
    return found


class NatsServer:
    """One private broker process; its JetStream store survives a kill and restart."""

    def __init__(self) -> None:
        self.port = free_port()
        self._dir = tempfile.TemporaryDirectory(prefix="wasmgate-nats-")
        self.store = Path(self._dir.name)
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        with open(self.store / "server.log", "ab") as log:  # the child keeps its own copy
            self._process = subprocess.Popen(
                [nats_server_binary(), "-js", "-a", "127.0.0.1", "-p", str(self.port),
                 "-sd", str(self.store)],
                stdout=subprocess.DEVNULL, stderr=log)
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                if self._process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"private nats-server on {self.port} did not start; "
                                       f"see {self.store / 'server.log'}") from None
                time.sleep(0.05)

    def kill(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGKILL)
            self._process.wait(timeout=10)
        self._process = None

    async def restart(self, *, down_s: float = 0.5) -> None:
        """Kill -9, stay down a moment (clients notice), start again on the same port."""
        self.kill()
        await asyncio.sleep(down_s)
        await asyncio.to_thread(self.start)

    def close(self) -> None:
        self.kill()
        self._dir.cleanup()
