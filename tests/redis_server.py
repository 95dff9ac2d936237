"""A private ``redis-server`` process for fault tests: killed and restarted on one port.

The shared Redis on 6379 is never stopped; tests that cut the connection start one of
these on a free port. It runs with ``--save ''`` (no snapshots) and an append-only file
synced on every write, so a ``kill -9`` and restart keeps streams, groups and pending
entries, as a production Redis with AOF would.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import redis.asyncio as aioredis

from tests.contract.harness import free_port


class RedisServer:
    """One redis-server on 127.0.0.1:``port`` with its data in a temporary directory."""

    def __init__(self, port: int | None = None, *, persistent: bool = True) -> None:
        self.port = port or free_port()
        self.persistent = persistent
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._dir = Path(tempfile.mkdtemp(prefix="wasmgate-redis-"))
        self._process: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--dir", str(self._dir), "--daemonize", "no"]
        if self.persistent:
            args += ["--appendonly", "yes", "--appendfsync", "always"]
        self._process = subprocess.Popen(args, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL)
        await self._wait_answering()

    def kill(self) -> None:
        """SIGKILL: every client connection drops at once, no goodbye."""
        if self._process is not None:
            self._process.send_signal(signal.SIGKILL)
            self._process.wait(timeout=10)
            self._process = None

    async def restart(self, *, down_for: float = 0.5) -> None:
        self.kill()
        await asyncio.sleep(down_for)
        await self.start()

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self._dir, ignore_errors=True)

    async def _wait_answering(self, timeout: float = 20.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        client = aioredis.Redis(host="127.0.0.1", port=self.port)
        try:
            while True:
                try:
                    if await client.ping():
                        return
                except (aioredis.ConnectionError, OSError):
                    pass
                if self._process is not None and self._process.poll() is not None:
                    raise RuntimeError(f"redis-server on port {self.port} exited")
                if loop.time() > deadline:
                    raise RuntimeError(f"redis-server on port {self.port} did not answer")
                await asyncio.sleep(0.05)
        finally:
            await client.aclose()
