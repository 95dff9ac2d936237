"""A private broker process on a free loopback port, for tests that kill and restart a
broker without touching the shared one.

:class:`BrokerProcess` starts the command a subclass names, waits until it answers, and
kills it with SIGKILL (every client connection drops at once, no goodbye) and restarts it
on the same port with the same data directory. Its log is ``<directory>/server.log``.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import ClassVar


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(port: int, *, timeout: float = 20.0, what: str = "broker",
                   process: subprocess.Popen[bytes] | None = None) -> None:
    """Return once 127.0.0.1:``port`` accepts a connection; fail if ``process`` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what} on 127.0.0.1:{port} exited "
                               f"with status {process.returncode}")
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port} within {timeout}s")


class BrokerProcess:
    """One broker process on 127.0.0.1:``port``, its data in a temporary directory."""

    name: ClassVar[str]  # the executable, for messages

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.directory = Path(tempfile.mkdtemp(prefix=f"wasmgate-{self.name}-"))
        self.log = self.directory / "server.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """What a client connects to."""
        raise NotImplementedError

    def command(self) -> list[str]:
        raise NotImplementedError

    async def start(self) -> None:
        with open(self.log, "ab") as log:  # the child keeps its own copy of the descriptor
            self._process = subprocess.Popen(self.command(), stdout=subprocess.DEVNULL,
                                             stderr=log, stdin=subprocess.DEVNULL)
        try:
            await self.wait_answering(self._process)
        except RuntimeError as exc:
            raise RuntimeError(f"private {exc}; see {self.log}") from None

    async def wait_answering(self, process: subprocess.Popen[bytes]) -> None:
        """Return once the broker takes clients (here: its port accepts a connection)."""
        await asyncio.to_thread(wait_listening, self.port, what=self.name, process=process)

    def kill(self) -> None:
        """SIGKILL: every client connection drops at once, no goodbye."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGKILL)
            self._process.wait(timeout=10)
        self._process = None

    async def restart(self, *, down_s: float = 0.5) -> None:
        """Kill -9, stay down a moment (clients notice), start again on the same port."""
        self.kill()
        await asyncio.sleep(down_s)
        await self.start()

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self.directory, ignore_errors=True)
