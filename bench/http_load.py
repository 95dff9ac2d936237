"""A closed-loop HTTP/1.1 load generator: N keep-alive connections, one request in flight each.

Raw asyncio protocols rather than an HTTP client library: the generator shares 2 cores with
the server under test, so its own cost per request must stay small.

Run: python bench/http_load.py HOST:PORT PATH --seconds 5 --connections 16
Prints one JSON line: requests/s, p50/p99 latency (ms), errors, load average.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import statistics
import time

import msgspec


class Result(msgspec.Struct):
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    total: int  # responses over the whole run, warm-up included (to divide server CPU by)
    loadavg: tuple[float, float, float]


class _Tally:
    """What all connections record: latencies of 200s inside the window, other statuses."""

    def __init__(self, window: tuple[float, float]) -> None:
        self.window = window
        self.latencies: list[float] = []
        self.errors: list[bytes] = []
        self.total = 0


class _Connection(asyncio.Protocol):
    """Sends the request, waits for the whole response, records it, sends again."""

    def __init__(self, request: bytes, tally: _Tally, done: asyncio.Future[None]) -> None:
        self.request = request
        self.tally = tally
        self.done = done
        self.buffer = bytearray()
        self.sent_at = 0.0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self._send()

    def _send(self) -> None:
        assert self.transport is not None
        self.sent_at = time.perf_counter()
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buffer[:end]).lower()
        at = head.find(b"content-length:")
        if at < 0:  # the servers under test always send a length
            raise RuntimeError(f"response without content-length: {head!r}")
        line_end = head.find(b"\r\n", at)
        length = int(head[at + 15:line_end if line_end >= 0 else None])
        if len(self.buffer) < end + 4 + length:
            return
        now = time.perf_counter()
        del self.buffer[:end + 4 + length]
        tally = self.tally
        tally.total += 1
        start, stop = tally.window
        if start <= self.sent_at and now <= stop:
            if head.startswith(b"http/1.1 200 "):
                tally.latencies.append(now - self.sent_at)
            else:
                tally.errors.append(head.split(b"\r\n", 1)[0])
        if now < stop:
            self._send()
        elif not self.done.done():
            self.done.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(ConnectionError(f"server closed the connection: {exc}"))


async def run(address: str, path: str, *, seconds: float, connections: int,
              warmup: float) -> Result:
    """Load ``address`` for ``warmup + seconds``; measure only the last ``seconds``."""
    host, _, port = address.rpartition(":")
    request = f"GET {path} HTTP/1.1\r\nhost: {address}\r\n\r\n".encode()
    loop = asyncio.get_running_loop()
    start = time.perf_counter() + warmup
    tally = _Tally((start, start + seconds))
    done: list[asyncio.Future[None]] = []
    transports = []
    for _ in range(connections):
        finished: asyncio.Future[None] = loop.create_future()
        transport, _protocol = await loop.create_connection(
            functools.partial(_Connection, request, tally, finished),
            host, int(port))
        done.append(finished)
        transports.append(transport)
    await asyncio.gather(*done)
    for transport in transports:
        transport.close()
    latencies = sorted(tally.latencies)
    if not latencies:
        raise RuntimeError(f"no successful request in the window; errors: {tally.errors[:3]}")
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    return Result(rps=len(latencies) / seconds, p50_ms=statistics.median(latencies) * 1e3,
                  p99_ms=p99 * 1e3, requests=len(latencies), errors=len(tally.errors),
                  total=tally.total, loadavg=os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("address", help="HOST:PORT")
    parser.add_argument("path")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    result = asyncio.run(run(args.address, args.path, seconds=args.seconds,
                             connections=args.connections, warmup=args.warmup))
    print(msgspec.json.encode(result).decode())


if __name__ == "__main__":
    main()
