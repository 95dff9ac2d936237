"""The HTTP trigger's edges: a full pool, and guest responses HTTP cannot or must not carry.

Real uvicorn over loopback, the real echo component: its ``respond`` mode returns whatever
response the JSON request body describes (a status of 700, a header holding CRLF, 100,000
headers, a body over the limit). Every refusal must be a 502 on a connection that goes on serving,
with the reason, the component and the event id in the log, and no traceback.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
import structlog

from tests.fixtures.build import WAT_ECHO
from tests.test_http_e2e import _start_app

on_module_loop = pytest.mark.asyncio(loop_scope="module")


# One gateway with the default limits for the module: each app start costs a component load.
@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def gateway(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    app, base = await _start_app(tmp_path_factory.mktemp("hardening"))
    yield base
    await app.stop()


async def _respond(client: httpx.AsyncClient, base: str, **spec: Any) -> httpx.Response:
    """Ask the echo component to return the response ``spec`` describes."""
    return await client.post(f"{base}/echo/respond", content=json.dumps(spec).encode())


def _port(response: httpx.Response) -> int:
    """The client-side port the response came in on: equal ports, one connection."""
    stream = response.extensions["network_stream"]
    return int(stream.get_extra_info("client_addr")[1])


async def _assert_refused(base: str, caplog: pytest.LogCaptureFixture, *, reason: str,
                          **spec: Any) -> None:
    """The response ``spec`` describes is answered 502, logged with ``reason``, component
    and event id, without a traceback; the same connection then serves the next request."""
    caplog.set_level(logging.INFO)
    limits = httpx.Limits(max_connections=1)
    async with httpx.AsyncClient(limits=limits) as client:
        with structlog.testing.capture_logs() as logs:
            refused = await _respond(client, base, **spec)
            assert (refused.status_code, refused.content) == (
                502, b"handler response cannot be sent\n"), logs
            refused_port = _port(refused)
            after = await client.post(f"{base}/echo/x", content=b"next")
            assert _port(after) == refused_port
    assert (after.status_code, after.content) == (200, b"echo:next")
    errors = [e for e in logs if e["log_level"] == "error"]
    assert len(errors) == 1, logs
    error = errors[0]
    assert error["component"] == "echo"
    assert len(error["event_id"]) == 32
    assert "component `echo`" in error["error"]
    assert reason in error["error"]
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"


@on_module_loop
@pytest.mark.parametrize("status", [700, 600, 99, 0])
async def test_status_outside_100_to_599_is_502(
        gateway: str, caplog: pytest.LogCaptureFixture, status: int) -> None:
    await _assert_refused(gateway, caplog, status=status, reason=f"returned status {status}")


@on_module_loop
@pytest.mark.parametrize("status", [100, 101, 103])
async def test_informational_status_as_the_answer_is_502(
        gateway: str, caplog: pytest.LogCaptureFixture, status: int) -> None:
    await _assert_refused(gateway, caplog, status=status, reason="1xx status is interim")


@on_module_loop
@pytest.mark.parametrize(("header", "reason"), [
    (["x-a", "v\r\nset-cookie: session=forged"], "control character (CR)"),
    (["x-a", "v\nx-b: forged"], "control character (LF)"),
    (["x-a", "v\x00"], "control character (NUL)"),
    (["x-a\r\nx-b", "v"], "header name 'x-a\\r\\nx-b'"),
    (["bad name", "v"], "header name 'bad name'"),
    (["x:y", "v"], "header name 'x:y'"),
    (["", "v"], "header name ''"),
    (["x-a", "\u65e5\u672c"], "outside Latin-1"),
])
async def test_unsendable_header_is_502(gateway: str, caplog: pytest.LogCaptureFixture,
                                        header: list[str], reason: str) -> None:
    await _assert_refused(gateway, caplog, headers=[header], reason=reason)


@on_module_loop
async def test_100_headers_are_sent_and_100000_are_502_naming_max_response_headers(
        gateway: str, caplog: pytest.LogCaptureFixture) -> None:
    async with httpx.AsyncClient() as client:
        r = await _respond(client, gateway, **{"header-count": 100, "body": "ok"})
    assert (r.status_code, r.content) == (200, b"ok")
    assert len([k for k in r.headers if k.startswith("x-h")]) == 100
    await _assert_refused(gateway, caplog, **{"header-count": 100_000},
                          reason="returned 100000 headers, over its max-response-headers = 100")


@on_module_loop
async def test_response_over_16_mib_is_502_naming_max_response_bytes(
        gateway: str, caplog: pytest.LogCaptureFixture) -> None:
    await _assert_refused(gateway, caplog, **{"body-bytes": 16 * 1024 * 1024 + 1},
                          reason="over its max-response-bytes = 16777216")


@on_module_loop
async def test_content_length_that_is_not_the_body_length_is_502(
        gateway: str, caplog: pytest.LogCaptureFixture) -> None:
    await _assert_refused(gateway, caplog, headers=[["content-length", "3"]],
                          body="longer than three", reason="content-length 3 with a 17-byte")
    await _assert_refused(gateway, caplog, headers=[["content-length", "-1"]],
                          reason="content-length '-1'; it must be one number")


@on_module_loop
async def test_a_body_on_204_is_502(gateway: str, caplog: pytest.LogCaptureFixture) -> None:
    await _assert_refused(gateway, caplog, status=204, body="abc",
                          reason="a 204 response has no body")


@on_module_loop
async def test_the_gateway_frames_the_body_itself(gateway: str) -> None:
    async with httpx.AsyncClient() as client:
        r = await _respond(client, gateway, body="hi",
                           headers=[["transfer-encoding", "chunked"], ["content-length", "2"],
                                    ["content-length", "2"]])
        empty = await _respond(client, gateway, status=204)
    assert (r.status_code, r.content) == (200, b"hi")
    # One length, no second framing a proxy in front could read differently.
    assert r.headers.get_list("content-length") == ["2"]
    assert "transfer-encoding" not in r.headers
    assert empty.status_code == 204
    assert "content-length" not in empty.headers


async def test_response_limits_follow_the_component_settings(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    app, base = await _start_app(tmp_path, "max-response-headers = 3\nmax-response-bytes = 64")
    try:
        async with httpx.AsyncClient() as client:
            r = await _respond(client, base, **{"header-count": 3, "body-bytes": 40})
        assert (r.status_code, len(r.content)) == (200, 40)
        await _assert_refused(base, caplog, **{"header-count": 4},
                              reason="raise `max-response-headers` in [component.echo]")
        await _assert_refused(base, caplog, **{"body-bytes": 65},
                              reason="raise `max-response-bytes` in [component.echo]")
    finally:
        await app.stop()


async def test_full_pool_is_503_with_retry_after(tmp_path: Path) -> None:
    # One instance, busy ~0.5 s per `slow` call; admission gives up after 50 ms. Of two
    # requests made together one is served and the other finds the pool full.
    app, base = await _start_app(tmp_path, "max-instances = 1\nadmission-timeout-ms = 50")
    try:
        async with httpx.AsyncClient() as client:
            with structlog.testing.capture_logs() as logs:
                first, second = await asyncio.gather(client.post(f"{base}/echo/slow"),
                                                     client.post(f"{base}/echo/slow"))
            busy, served = sorted([first, second], key=lambda r: r.status_code, reverse=True)
            assert (served.status_code, served.content) == (200, b"finished")
            assert (busy.status_code, busy.content) == (503, b"component busy, retry later\n")
            assert busy.headers["retry-after"] == "1"
            assert (await client.post(f"{base}/echo/x", content=b"a")).status_code == 200
    finally:
        await app.stop()
    [failure] = [e for e in logs if e["log_level"] == "error"]
    assert failure["kind"] == "admission"
    assert "raise `max-instances` or `admission-timeout-ms`" in failure["error"]


_WEBSOCKET_UPGRADE = (b"GET /echo/upgraded HTTP/1.1\r\nHost: gateway\r\nUpgrade: websocket\r\n"
                      b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                      b"Sec-WebSocket-Version: 13\r\n\r\n")


@on_module_loop
async def test_a_websocket_upgrade_on_a_route_is_served_as_plain_http(
        gateway: str, caplog: pytest.LogCaptureFixture) -> None:
    """No route speaks WebSocket: the Upgrade header is ignored and the request served like
    any other (it was a 500), and the connection goes on serving."""
    caplog.set_level(logging.INFO)
    host, port = gateway.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(_WEBSOCKET_UPGRADE)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 200 "), head
        assert b"x-subject: /echo/upgraded" in head
        assert await reader.readexactly(5) == b"echo:"
        writer.write(b"GET /echo/next HTTP/1.1\r\nHost: gateway\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 200 ") and b"x-subject: /echo/next" in head
    finally:
        writer.close()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.records


async def test_the_listening_line_names_every_route_on_the_address(tmp_path: Path) -> None:
    """The server starts with the first route's trigger: the line named that route only."""
    second = '\n[[trigger.http]]\nroute = "/other"\ncomponent = "echo"\n' \
             '\n[[trigger.http]]\nroute = "/third/..."\ncomponent = "echo"\n'
    with structlog.testing.capture_logs() as logs:
        app, _ = await _start_app(tmp_path, trigger_extra=second)
        await app.stop()
    (listening,) = [e for e in logs if e["event"] == "http listening"]
    assert listening["routes"] == ["/echo/...", "/other", "/third/..."]


# The echo WAT guest (tests/fixtures/wat/echo.wat) made to claim a huge response: its memory
# is 2300 pages (144 MiB, untouched pages cost no RAM) and the response's list lengths are
# set past wasmtime's 128 MiB "hostcall fuel", which trapped the lift (a 500) before.
_ECHO_BODY_LENGTH = "(i32.store offset=20 (local.get $ret) (i32.add (local.get $dl) (i32.const 5)))"
_ECHO_HEADER_COUNT = "(i32.store offset=12 (local.get $ret) (i32.const 1))"
_HUGE = {
    # 140 MiB of body, from the guest's zero pages.
    "body": (_ECHO_BODY_LENGTH, "(i32.store offset=20 (local.get $ret) (i32.const 146800640))",
             "max-response-bytes = 16777216"),
    # Three million (empty) headers: 48 MB of list, 144 MB as the host's Vec of pairs.
    "headers": (_ECHO_HEADER_COUNT, "(i32.store offset=12 (local.get $ret) (i32.const 3000000))",
                "max-response-headers = 100"),
}


@pytest.mark.parametrize("what", _HUGE)
async def test_a_response_past_the_hosts_copy_limit_is_a_502_naming_the_setting(
        tmp_path: Path, what: str) -> None:
    """Refused from the lengths the guest wrote, before any of it is copied into the host."""
    old, new, says = _HUGE[what]
    text = WAT_ECHO.read_text()
    assert old in text and '(memory (export "memory") 2)' in text
    wat = tmp_path / "huge.wat"
    wat.write_text(text.replace(old, new).replace('(memory (export "memory") 2)',
                                                  '(memory (export "memory") 2300)'))
    app, base = await _start_app(tmp_path, component_extra="memory-mb = 160",
                                 source=str(wat))
    try:
        with structlog.testing.capture_logs() as logs:
            async with httpx.AsyncClient() as client:
                reply = await client.get(f"{base}/echo/huge")
                assert reply.status_code == 502, (reply.status_code, reply.text, logs)
                after = await client.get(f"{base}/echo/small")  # the gateway goes on serving
    finally:
        await app.stop()
    assert after.status_code == 502  # the same guest: every response of it is too large
    (failed, _) = [e for e in logs if e["event"] == "handler failed"]
    assert says in failed["error"], failed
    assert f"raise `{says.split(' ')[0]}`" in failed["error"], failed
