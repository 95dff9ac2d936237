"""A TCP relay that holds back one command of a client's stream for a while: the bytes
before it pass at once, the command and everything after it pass later, in order.

It makes a race that a loaded machine hits once in a hundred runs happen every time: a
broker that gets a client's later command (a PING) before an earlier one (a SUB) still
sitting somewhere on the way.
"""

from __future__ import annotations

import asyncio
import contextlib


class LoopbackServer:
    """A TCP server on a free loopback port whose connection tasks ``close()`` cancels;
    a subclass handles each connection in ``_serve`` and adds its tasks to ``_tasks``."""

    def __init__(self) -> None:
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
                     ) -> None:
        raise NotImplementedError


class HoldingRelay(LoopbackServer):
    """Relay ``127.0.0.1:<port>`` to ``upstream``; hold the first client chunk that contains
    ``marker`` (from the marker on) for ``hold_s`` seconds."""

    def __init__(self, upstream: tuple[str, int], marker: bytes, hold_s: float) -> None:
        self.upstream = upstream
        self.marker = marker
        self.hold_s = hold_s
        self.held = False  # whether the marker was seen and held (a test checks it)
        super().__init__()

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter
                     ) -> None:
        upstream_r, upstream_w = await asyncio.open_connection(*self.upstream)
        pumps = [asyncio.create_task(self._pump(client_r, upstream_w, hold=True)),
                 asyncio.create_task(self._pump(upstream_r, client_w, hold=False))]
        self._tasks.update(pumps)
        await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        for pump in pumps:
            pump.cancel()
        for writer in (client_w, upstream_w):
            writer.close()
        self._tasks.difference_update(pumps)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *,
                    hold: bool) -> None:
        with contextlib.suppress(ConnectionError):
            while chunk := await reader.read(65536):
                at = chunk.find(self.marker) if hold and not self.held else -1
                if at >= 0:
                    self.held = True
                    writer.write(chunk[:at])
                    await writer.drain()
                    await asyncio.sleep(self.hold_s)
                    chunk = chunk[at:]
                writer.write(chunk)
                await writer.drain()
