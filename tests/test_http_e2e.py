"""The HTTP trigger end to end: a real uvicorn server, a real component, real requests."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from bindings.types import Event, Response
from gateway.app import App
from tests.fixtures.build import build_handler


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _start_app(tmp_path: Path, component_extra: str = "",
                     trigger_extra: str = "", source: str | None = None) -> tuple[App, str]:
    """Start an app with the echo component (or ``source``, as component `echo`) on a free
    port; return it and its base URL."""
    wasm = source or build_handler("echo")
    (tmp_path / "wasmgate.toml").write_text(f"""
[application]
name = "e2e"

[component.echo]
source = "{wasm}"
{component_extra}

[[trigger.http]]
route = "/echo/..."
component = "echo"
{trigger_extra}
""")
    listen = f"127.0.0.1:{_free_port()}"
    app = App.load(tmp_path / "wasmgate.toml", listen=listen)
    await app.start()
    return app, f"http://{listen}"


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[str]:
    app, base = await _start_app(tmp_path, 'timeout-ms = 300\nkey-value-stores = ["default"]',
                                 "max-body-bytes = 1024")
    yield base
    await app.stop()


async def test_request_reaches_the_handler_and_back(gateway: str) -> None:
    async with httpx.AsyncClient() as client:
        r = await client.post(f"{gateway}/echo/x", content=b"ping")
        assert r.status_code == 200
        assert r.content == b"echo:ping"
        assert r.headers["x-subject"] == "/echo/x"
        assert (await client.get(f"{gateway}/healthz")).status_code == 200
        metrics = await client.get(f"{gateway}/metrics")
        assert metrics.status_code == 200
        assert 'wasmgate_events_total{component="echo",error_kind="",verdict="ack"}' in \
            metrics.text
        assert (await client.get(f"{gateway}/other")).status_code == 404


async def test_oversize_body_is_413_and_the_gateway_keeps_serving(gateway: str) -> None:
    async with httpx.AsyncClient() as client:
        r = await client.post(f"{gateway}/echo/x", content=b"x" * 2048)
        assert r.status_code == 413
        assert (await client.post(f"{gateway}/echo/x", content=b"ok")).status_code == 200


async def test_handler_failures_map_to_status_codes(gateway: str) -> None:
    async with httpx.AsyncClient() as client:
        trap = await client.post(f"{gateway}/echo/trap")
        assert (trap.status_code, trap.content) == (500, b"handler failed\n")
        assert (await client.post(f"{gateway}/echo/loop")).status_code == 504
        assert (await client.post(f"{gateway}/echo/err")).status_code == 500
        assert (await client.post(f"{gateway}/echo/status", content=b"418")).status_code == 418
        assert (await client.post(f"{gateway}/echo/x", content=b"still")).content == b"echo:still"


async def test_shutdown_finishes_the_request_in_flight(tmp_path: Path) -> None:
    app, base = await _start_app(tmp_path)
    started = asyncio.Event()
    invoke = app.dispatcher._invoke

    async def noting_the_start(component: str, event: Event) -> Response:
        started.set()
        return await invoke(component, event)

    app.dispatcher._invoke = noting_the_start
    async with httpx.AsyncClient() as client:
        request = asyncio.create_task(client.post(f"{base}/echo/slow"))
        await asyncio.wait_for(started.wait(), 30)  # the handler is busy for ~0.5 s from here
        await app.stop()
        response = await request
    assert (response.status_code, response.content) == (200, b"finished")
    async with httpx.AsyncClient() as client:
        with pytest.raises(httpx.ConnectError):  # intake stopped
            await client.get(f"{base}/healthz")
