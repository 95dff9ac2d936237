"""Outbound HTTP hardening, through a real component (tests/fixtures/handlers/caps) against
tiny raw-socket upstreams on 127.0.0.1 that record exactly the bytes they received.

What a handler cannot do: point a request at another virtual host with ``Host:``, pass
hop-by-hop headers through, open a CONNECT tunnel, crash the host call with a malformed URL
or header, or hold its instance slot past the smallest of ``outbound-timeout-ms``, the
request's ``timeout-ms`` and the event's deadline by trickling a reply a byte at a time.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from bindings.types import Event, new_event_id
from gateway.app import App
from gateway.errors import ConfigError
from tests.fixtures.build import build_handler

pytestmark = pytest.mark.wasm

# Far above any honest run of these tests; only there so a regression fails instead of hanging.
HANG_GUARD_S = 12.0

Call = Callable[..., Any]


class Upstream:
    """A raw HTTP/1.1 server on a thread: records each request's bytes, then answers with
    ``reply`` (sent whole) or, when ``trickle`` is set, headers and then one body byte every
    ``trickle`` seconds until the client goes away."""

    def __init__(self, reply: bytes = b"", trickle: float | None = None,
                 hold: bool = False, host: str = "127.0.0.1") -> None:
        self.reply = reply or (b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n"
                               b"Connection: close, X-Hop\r\nKeep-Alive: timeout=5\r\n"
                               b"X-Hop: 1\r\nX-End: 1\r\n\r\npong")
        self.trickle = trickle
        self.hold = hold  # keep the connection open after the reply, sending nothing more
        self.requests: list[bytes] = []
        self._stop = threading.Event()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._server = socket.create_server((host, 0), family=family)
        self._server.settimeout(0.2)
        self.port = self._server.getsockname()[1]
        self.url = f"http://{f'[{host}]' if ':' in host else host}:{self.port}"
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            data = b""
            try:
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                self.requests.append(data)
                if self.trickle is None:
                    conn.sendall(self.reply)
                    if self.hold:
                        self._stop.wait()
                    return
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
                while not self._stop.wait(self.trickle):
                    conn.sendall(b"x")
            except OSError:
                return

    def header_names(self) -> list[str]:
        """The header names of the last request, lowercased, in order."""
        head = self.requests[-1].split(b"\r\n\r\n", 1)[0].decode("latin-1")
        return [line.split(":", 1)[0].strip().lower() for line in head.split("\r\n")[1:]]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._server.close()


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    server = Upstream()
    yield server
    server.close()


@pytest.fixture
def trickling() -> Iterator[Upstream]:
    # A byte every 0.3 s: each read is quick, so only a total deadline stops the request.
    server = Upstream(trickle=0.3)
    yield server
    server.close()


def _manifest(tmp_path: Path, component_extra: str) -> Path:
    path = tmp_path / "wasmgate.toml"
    path.write_text(f"""
[application]
name = "outbound-{uuid.uuid4().hex[:8]}"

[component.caps]
source = "{build_handler("caps")}"
{component_extra}
""")
    return path


@pytest.fixture
async def app_factory(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    apps: list[App] = []

    async def make(component_extra: str) -> App:
        app = App.load(_manifest(tmp_path, component_extra))
        apps.append(app)
        return app

    yield make
    for app in apps:
        await app.stop()


async def _invoke(app: App, **msg: Any) -> Any:
    event = Event(id=new_event_id(), source="test", type="test", data=json.dumps(msg).encode())
    response = await asyncio.wait_for(app.invoke("caps", event), HANG_GUARD_S)
    assert response.status == 200, response.body
    return json.loads(response.body)


async def _caller(app_factory: Any, *allowed: str, extra: str = "") -> Call:
    hosts = ", ".join(f'"{a}"' for a in allowed)
    app = await app_factory(f"allowed-outbound-hosts = [{hosts}]\n{extra}")

    async def call(**msg: Any) -> Any:
        return await _invoke(app, op="http", **msg)
    return call


# -- what a request may carry -------------------------------------------------------------


async def test_a_host_header_naming_another_host_is_refused_and_nothing_is_sent(
        app_factory: Any, upstream: Upstream) -> None:
    call = await _caller(app_factory, upstream.url)
    refused = await call(url=f"{upstream.url}/x", headers=[["Host", "admin.internal"]])
    assert "`Host: admin.internal` does not name the URL's host" in refused["err"]
    assert upstream.requests == []
    # Naming the URL's own host is fine; it goes out once, as the URL says.
    same = await call(url=f"{upstream.url}/x", headers=[["host", f"127.0.0.1:{upstream.port}"]])
    assert same["ok"]["status"] == 200
    assert upstream.header_names().count("host") == 1
    assert f"Host: 127.0.0.1:{upstream.port}\r\n".encode() in upstream.requests[-1]


async def test_hop_by_hop_headers_are_dropped_both_ways(app_factory: Any,
                                                        upstream: Upstream) -> None:
    call = await _caller(app_factory, upstream.url)
    result = await call(url=f"{upstream.url}/x", **{"reply-headers": True}, headers=[
        ["TE", "trailers"], ["Connection", "keep-alive, X-Session"], ["X-Session", "s1"],
        ["Keep-Alive", "timeout=99"], ["Upgrade", "websocket"], ["Trailer", "X-Sum"],
        ["Proxy-Authorization", "Basic Zm9vOmJhcg=="], ["Proxy-Connection", "keep-alive"],
        ["X-End-To-End", "kept"]])
    assert result["ok"]["status"] == 200
    sent = upstream.header_names()
    for name in ("te", "connection", "x-session", "keep-alive", "upgrade", "trailer",
                 "proxy-authorization", "proxy-connection"):
        assert name not in sent, (name, upstream.requests[-1])
    assert b"X-End-To-End: kept\r\n" in upstream.requests[-1]
    # The reply's own hop-by-hop headers (and X-Hop, named in its Connection) stay behind.
    received = {name for name, _ in result["ok"]["headers"]}
    assert "x-end" in received
    assert not received & {"connection", "keep-alive", "x-hop"}


@pytest.mark.parametrize("method", ["CONNECT", "connect", "TRACE"])
async def test_connect_and_trace_are_refused(app_factory: Any, upstream: Upstream,
                                             method: str) -> None:
    call = await _caller(app_factory, upstream.url)
    refused = await call(method=method, url=f"{upstream.url}/")
    assert f"outbound {method.upper()} requests are refused" in refused["err"]
    assert upstream.requests == []


@pytest.mark.parametrize(("url", "says"), [
    ("http://127.0.0.1:99999/", "port 99999 is outside 1-65535"),
    ("http://[::1", "an IPv6 host needs both brackets"),
    ("http://127.0.0.1:{port}/a\tb", "it contains a tab at position"),
    ("http://127.0.0.1:{port}/a\r\nX-Injected: 1", "it contains a CR at position"),
    ("http://127.0.0.1:{port}/\nGET /admin", "it contains an LF at position"),
])
async def test_a_malformed_url_is_an_error_value_the_guest_sees(
        app_factory: Any, upstream: Upstream, url: str, says: str) -> None:
    call = await _caller(app_factory, "http://127.0.0.1:*")
    result = await call(url=url.format(port=upstream.port))
    assert result["err"].startswith("invalid outbound URL"), result
    assert says in result["err"]
    assert upstream.requests == []
    # The component (and the gateway) keep working.
    assert (await call(url=f"{upstream.url}/"))["ok"]["status"] == 200


async def test_malformed_header_names_and_values_are_error_values(app_factory: Any,
                                                                  upstream: Upstream) -> None:
    call = await _caller(app_factory, upstream.url)
    accented = await call(url=f"{upstream.url}/", headers=[["X-Name", "Zoë-s3cr3t"]])
    assert "outbound header `X-Name` has a value with non-ASCII characters" in accented["err"]
    assert "s3cr3t" not in accented["err"]  # a value may be a credential: never echoed
    name = await call(url=f"{upstream.url}/", headers=[["X-Ünïcode", "1"]])
    assert "invalid outbound header name 'X-Ünïcode'" in name["err"]
    split = await call(url=f"{upstream.url}/", headers=[["X-A", "1\r\nX-Injected: 1"]])
    assert "outbound header `X-A` has a value with a control character" in split["err"]
    assert upstream.requests == []


# -- one deadline for the whole request ---------------------------------------------------


async def test_a_trickling_upstream_is_cut_at_outbound_timeout_ms_in_total(
        app_factory: Any, trickling: Upstream) -> None:
    # The numbers: timeout-ms 3 s, outbound-timeout-ms 2 s. Each read succeeds
    # within 0.3 s, so a per-read timeout would keep reading for minutes.
    call = await _caller(app_factory, trickling.url,
                         extra="timeout-ms = 3000\noutbound-timeout-ms = 2000")
    result = await call(url=f"{trickling.url}/slow")
    assert "timed out after 2000 ms (`outbound-timeout-ms` of [component.caps]" in result["err"]
    assert "the whole request" in result["err"]


async def test_the_request_timeout_ms_bounds_the_whole_request(app_factory: Any,
                                                               trickling: Upstream) -> None:
    call = await _caller(app_factory, trickling.url, extra="outbound-timeout-ms = 5000")
    result = await call(url=f"{trickling.url}/slow", timeout=700)
    assert "timed out after 700 ms (the request's own `timeout-ms`" in result["err"]


async def test_the_event_deadline_bounds_the_outbound_request(app_factory: Any,
                                                              trickling: Upstream) -> None:
    app = await app_factory(f'allowed-outbound-hosts = ["{trickling.url}"]\n'
                            "timeout-ms = 1500\noutbound-timeout-ms = 60000")
    event = Event(id="evt-deadline", source="test", type="test",
                  data=json.dumps({"op": "http", "url": f"{trickling.url}/slow"}).encode())
    with structlog.testing.capture_logs(
            processors=[structlog.contextvars.merge_contextvars]) as logs:
        try:
            await asyncio.wait_for(app.invoke("caps", event), HANG_GUARD_S)
        except TimeoutError:
            pytest.fail("the outbound request outlived the event's deadline")
        except Exception:
            # The guest gets the error value with no time left, so the call itself times
            # out; what matters is that the host call ended at the deadline with a reason.
            pass
    refusals = [e for e in logs if e["event"] == "host call refused or failed"]
    assert refusals, logs
    assert "the event's deadline (`timeout-ms` of [component.caps]) ran out" in \
        refusals[0]["error"]
    assert refusals[0]["event_id"] == "evt-deadline"


async def test_a_reply_declaring_more_than_the_limit_is_refused_before_its_body(
        app_factory: Any) -> None:
    # Headers promise 1 GB, ten bytes come, then nothing: reading on would only wait.
    server = Upstream(reply=b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000\r\n\r\n0123456789",
                      hold=True)
    try:
        call = await _caller(app_factory, server.url,
                             extra="outbound-max-response-bytes = 1024\n"
                                   "outbound-timeout-ms = 8000")
        result = await call(url=f"{server.url}/huge")
        assert "over the limit of 1024 bytes (`outbound-max-response-bytes`" in result["err"]
        assert "it declares 1000000000 bytes" in result["err"]
    finally:
        server.close()


# -- the allow list ------------------------------------------------------------------------


async def test_an_ipv6_literal_in_the_allow_list_reaches_that_host(app_factory: Any) -> None:
    server = Upstream(host="::1")
    try:
        call = await _caller(app_factory, server.url)
        result = await call(url=f"{server.url}/v6")
    finally:
        server.close()
    assert result["ok"]["status"] == 200, result
    assert server.requests[-1].startswith(b"GET /v6 HTTP/1.1\r\n")


@pytest.mark.parametrize(("entry", "said"), [
    ("http://[::1", "an IPv6 address goes in brackets"),
    ("http://[::g]:80", "is not an IPv6 address"),
    ("https://*.example.com:99999", "a port is 1-65535"),
    ("http://127.0.0.1:0", "a port is 1-65535"),
    ("https://bücher.example", "IDNA form"),
])
def test_an_allow_list_entry_that_could_never_match_is_refused_at_load(
        tmp_path: Path, entry: str, said: str) -> None:
    with pytest.raises(ConfigError) as info:
        App.load(_manifest(tmp_path, f'allowed-outbound-hosts = ["{entry}"]'))
    assert "component.caps.allowed-outbound-hosts" in str(info.value)
    assert said in str(info.value)
