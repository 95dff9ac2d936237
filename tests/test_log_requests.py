"""`wasmgate up --log-requests`: one structured line per HTTP request."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from structlog.testing import capture_logs

from gateway.app import App
from gateway.cli import _parser
from tests.broker_process import free_port
from tests.fixtures.build import WAT_ECHO


async def test_one_line_per_request_with_method_path_status_duration_component(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WASMGATE_LOG_REQUESTS", "1")  # what --log-requests sets
    (tmp_path / "wasmgate.toml").write_text(
        f'[application]\nname = "logged"\n[component.echo]\nsource = "{WAT_ECHO}"\n'
        '[[trigger.http]]\nroute = "/echo"\ncomponent = "echo"\n')
    listen = f"127.0.0.1:{free_port()}"
    app = App.load(tmp_path / "wasmgate.toml", listen=listen)
    await app.start()
    try:
        with capture_logs() as logs:
            async with httpx.AsyncClient(base_url=f"http://{listen}") as client:
                assert (await client.post("/echo?x=secret", content=b"hi")).status_code == 200
                assert (await client.get("/nowhere")).status_code == 404
    finally:
        await app.stop()
    lines = [e for e in logs if e["event"] == "http request"]
    assert len(lines) == 2
    echo, missing = lines
    assert {k: echo[k] for k in ("method", "path", "status", "component")} == {
        "method": "POST", "path": "/echo", "status": 200, "component": "echo"}
    assert echo["duration_ms"] >= 0
    assert "x=secret" not in str(echo)  # the query string is not logged
    assert (missing["path"], missing["status"], missing["component"]) == ("/nowhere", 404, None)


async def test_no_request_lines_without_the_flag(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WASMGATE_LOG_REQUESTS", raising=False)
    (tmp_path / "wasmgate.toml").write_text(
        f'[application]\nname = "quiet"\n[component.echo]\nsource = "{WAT_ECHO}"\n'
        '[[trigger.http]]\nroute = "/echo"\ncomponent = "echo"\n')
    listen = f"127.0.0.1:{free_port()}"
    app = App.load(tmp_path / "wasmgate.toml", listen=listen)
    await app.start()
    try:
        with capture_logs() as logs:
            async with httpx.AsyncClient(base_url=f"http://{listen}") as client:
                await client.post("/echo", content=b"hi")
    finally:
        await app.stop()
    assert not [e for e in logs if e["event"] == "http request"]


def test_up_and_watch_take_the_flag() -> None:
    assert _parser().parse_args(["up", "--log-requests"]).log_requests
    assert _parser().parse_args(["watch", "--log-requests"]).log_requests
