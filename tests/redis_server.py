"""A private ``redis-server`` process for fault tests: killed and restarted on one port.

The shared Redis on 6379 is never stopped; tests that cut the connection start one of
these on a free port. It runs with ``--save ''`` (no snapshots) and an append-only file
synced on every write, so a ``kill -9`` and restart keeps streams, groups and pending
entries, as a production Redis with AOF would.
"""

from __future__ import annotations

import asyncio
import subprocess

import redis.asyncio as aioredis

from tests.broker_process import BrokerProcess


class RedisServer(BrokerProcess):
    """One redis-server on 127.0.0.1:``port`` with its data in a temporary directory."""

    name = "redis-server"

    def __init__(self, port: int | None = None, *, persistent: bool = True) -> None:
        super().__init__(port)
        self.persistent = persistent

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--dir", str(self.directory), "--daemonize", "no"]
        if self.persistent:
            args += ["--appendonly", "yes", "--appendfsync", "always"]
        return args

    async def wait_answering(self, process: subprocess.Popen[bytes],
                             timeout: float = 20.0) -> None:
        """Until PING answers: a listening Redis still loading its AOF answers LOADING."""
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
                if process.poll() is not None:
                    raise RuntimeError(f"redis-server on port {self.port} exited")
                if loop.time() > deadline:
                    raise RuntimeError(f"redis-server on port {self.port} did not answer")
                await asyncio.sleep(0.05)
        finally:
            await client.aclose()
