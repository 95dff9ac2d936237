"""Slow HTTP clients are cut off at the configured deadlines, and never block other clients.

Real uvicorn over loopback, the real echo component, raw sockets for the misbehaving
clients. Time bounds are generous multiples of the configured timeouts: the tests check
that a deadline exists and that others are served meanwhile, not how fast anything is.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio

from gateway.errors import ConfigError
from tests.test_http_e2e import _start_app
from triggers.base import TriggerContext
from triggers.http import HttpTrigger, build_http_trigger

HEADER_TIMEOUT = 0.5
BODY_TIMEOUT = 1.5
KEEP_ALIVE = 0.3
SEND_TIMEOUT = 1.0
GENEROUS = 10.0  # bound on "within the deadline" on a loaded 2-core machine


# One gateway for the module: compiling the component per test would cost seconds each.
on_module_loop = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def gateway(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    app, base = await _start_app(
        tmp_path_factory.mktemp("slow"), 'key-value-stores = ["default"]',
        f"body-timeout-ms = {int(BODY_TIMEOUT * 1000)}\n"
        f"header-timeout-ms = {int(HEADER_TIMEOUT * 1000)}\n"
        f"keep-alive-timeout-ms = {int(KEEP_ALIVE * 1000)}\n"
        f"send-timeout-ms = {int(SEND_TIMEOUT * 1000)}")
    yield base
    await app.stop()


@contextlib.asynccontextmanager
async def _connect(base: str) -> AsyncIterator[tuple[asyncio.StreamReader,
                                                     asyncio.StreamWriter]]:
    host, port = base.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def _read_until_closed(reader: asyncio.StreamReader) -> tuple[bytes, float]:
    """Return everything the server sent before closing, and how long that took."""
    start = time.monotonic()
    data = await asyncio.wait_for(reader.read(), GENEROUS)
    return data, time.monotonic() - start


@on_module_loop
async def test_stalled_body_gets_408_while_others_are_served(gateway: str) -> None:
    async with _connect(gateway) as (reader, writer):
        writer.write(b"POST /echo/x HTTP/1.1\r\nhost: t\r\ncontent-length: 100\r\n\r\n0123456789")
        await writer.drain()  # ... and the other 90 bytes never come
        async with httpx.AsyncClient() as client:
            r = await client.post(f"{gateway}/echo/x", content=b"meanwhile")
        assert (r.status_code, r.content) == (200, b"echo:meanwhile")
        with pytest.raises(TimeoutError):  # the stalled client is still waiting, unanswered
            await asyncio.wait_for(reader.read(1), 0.05)
        data, _ = await _read_until_closed(reader)
    assert data.startswith(b"HTTP/1.1 408 ")
    assert b"connection: close" in data.lower()


@on_module_loop
async def test_slowloris_headers_get_408_and_the_connection_closes(gateway: str) -> None:
    async with _connect(gateway) as (reader, writer):
        writer.write(b"GET /echo/x HTTP/1.1\r\nhost: t\r\n")

        async def trickle() -> None:  # one header line every 100 ms, forever
            while True:
                await asyncio.sleep(0.1)
                writer.write(b"x-slow: 1\r\n")

        trickler = asyncio.create_task(trickle())
        try:
            async with httpx.AsyncClient() as client:
                assert (await client.get(f"{gateway}/echo/x")).status_code == 200
            data, waited = await _read_until_closed(reader)
        finally:
            trickler.cancel()
    assert data.startswith(b"HTTP/1.1 408 "), data
    assert waited < HEADER_TIMEOUT + GENEROUS  # closed although bytes kept arriving


@on_module_loop
async def test_a_connection_that_sends_nothing_is_closed_without_a_reply(gateway: str) -> None:
    async with _connect(gateway) as (reader, _):
        data, _ = await _read_until_closed(reader)
    assert data == b""  # no 408 for a socket that never started a request


@on_module_loop
async def test_idle_keep_alive_connection_is_closed(gateway: str) -> None:
    async with _connect(gateway) as (reader, writer):
        writer.write(b"GET /healthz HTTP/1.1\r\nhost: t\r\n\r\n")
        data, _ = await _read_until_closed(reader)  # the reply, then close after keep-alive
    assert data.startswith(b"HTTP/1.1 200 ") and data.endswith(b'"status":"ok","pid":'
                                                    + str(os.getpid()).encode() + b',"worker":0}')


@on_module_loop
async def test_client_gone_mid_body_is_not_dispatched(gateway: str) -> None:
    async with httpx.AsyncClient() as client:
        before = int((await client.post(f"{gateway}/echo/count")).content)
        abandoned = await _abandoned(client, gateway)
        async with _connect(gateway) as (_, writer):
            writer.write(b"POST /echo/count HTTP/1.1\r\nhost: t\r\ncontent-length: 100\r\n\r\n"
                         b"partial")
            await writer.drain()
        # Until the server has seen the client leave (it must then do nothing more).
        deadline = time.monotonic() + 30
        while await _abandoned(client, gateway) == abandoned:
            assert time.monotonic() < deadline, "the server never saw the client leave"
            await asyncio.sleep(0.02)
        after = int((await client.post(f"{gateway}/echo/count")).content)
    assert after == before + 1  # the half-sent request never reached the handler


async def _abandoned(client: httpx.AsyncClient, gateway: str) -> int:
    """``wasmgate_http_abandoned_requests_total`` for the echo component, from /metrics."""
    return await _metric(client, gateway,
                         'wasmgate_http_abandoned_requests_total{component="echo"} ')


async def _metric(client: httpx.AsyncClient, gateway: str, prefix: str) -> int:
    text = (await client.get(f"{gateway}/metrics")).text
    return next((int(float(line.removeprefix(prefix))) for line in text.splitlines()
                 if line.startswith(prefix)), 0)


@on_module_loop
async def test_a_client_that_stops_reading_is_dropped_with_what_was_queued_for_it(
        gateway: str) -> None:
    stalled = "wasmgate_http_stalled_clients_total "
    size = 8_000_000
    loop = asyncio.get_running_loop()
    host, port = gateway.removeprefix("http://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # backs up at once
    sock.setblocking(False)
    try:
        async with httpx.AsyncClient() as client:
            before = await _metric(client, gateway, stalled)
            await loop.sock_connect(sock, (host, int(port)))
            body = str(size).encode()
            await loop.sock_sendall(sock, b"POST /echo/big HTTP/1.1\r\nhost: t\r\n"
                                    b"content-length: %d\r\n\r\n%s" % (len(body), body))
            # ... and never reads. Others are served meanwhile.
            r = await client.post(f"{gateway}/echo/x", content=b"meanwhile")
            assert (r.status_code, r.content) == (200, b"echo:meanwhile")
            deadline = time.monotonic() + GENEROUS
            while await _metric(client, gateway, stalled) == before:
                assert time.monotonic() < deadline, "the stalled client was never dropped"
                await asyncio.sleep(0.1)
        received = 0
        with contextlib.suppress(ConnectionResetError):
            while chunk := await asyncio.wait_for(loop.sock_recv(sock, 65536), GENEROUS):
                received += len(chunk)
    finally:
        sock.close()
    # Aborted: what the kernel buffers held arrives, then the end; never the whole body.
    assert received < size


@on_module_loop
async def test_pipelined_requests_are_answered_in_order(gateway: str) -> None:
    # Responses leave through the protocol's coalesced writes: none lost, none reordered.
    async with _connect(gateway) as (reader, writer):
        writer.write(b"POST /echo/a HTTP/1.1\r\nhost: t\r\ncontent-length: 3\r\n\r\none"
                     b"POST /echo/b HTTP/1.1\r\nhost: t\r\ncontent-length: 3\r\n\r\ntwo"
                     b"GET /healthz HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n")
        data, _ = await _read_until_closed(reader)
    assert data.count(b"HTTP/1.1 200 ") == 3
    assert data.index(b"echo:one") < data.index(b"echo:two") < data.index(b'"status":"ok"')


def _build(table: str, listen: str, **extra: object) -> HttpTrigger:
    config = {"route": "/x", "component": "c", **extra}
    return build_http_trigger(config, context=TriggerContext(
        manifest_path="wasmgate.toml", field=table, listen=listen))


async def test_connection_limits_must_agree_per_address() -> None:
    first = _build("trigger.http[0]", "127.0.0.1:1", **{"header-timeout-ms": 500})
    _build("trigger.http[1]", "127.0.0.1:1")  # unset: takes the address's value
    with pytest.raises(ConfigError) as exc:
        _build("trigger.http[2]", "127.0.0.1:1", **{"header-timeout-ms": 800})
    message = str(exc.value)
    assert "trigger.http[2].header-timeout-ms" in message and "trigger.http[0]" in message
    other = _build("trigger.http[0]", "127.0.0.1:2", **{"header-timeout-ms": 800})
    await first.stop()  # never started: this only drops the address from the registry
    await other.stop()


@pytest.mark.parametrize("field", ["body-timeout-ms", "send-timeout-ms"])
def test_timeouts_must_be_positive(field: str) -> None:
    with pytest.raises(ConfigError, match=rf"trigger.http\[0\].{field}"):
        _build("trigger.http[0]", "127.0.0.1:3", **{field: 0})


async def test_send_timeouts_must_agree_per_address() -> None:
    first = _build("trigger.http[0]", "127.0.0.1:4", **{"send-timeout-ms": 1000})
    with pytest.raises(ConfigError) as exc:
        _build("trigger.http[1]", "127.0.0.1:4", **{"send-timeout-ms": 2000})
    message = str(exc.value)
    assert "send-timeout-ms = 2000 disagrees with send-timeout-ms = 1000" in message
    assert "trigger.http[1].send-timeout-ms" in message
    await first.stop()
