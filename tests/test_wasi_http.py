"""Standard ``wasi:http/proxy`` components behind wasmgate's triggers (issue #10).

The component is ``tests/fixtures/handlers-wasi-http/probe``, built by componentize-py
against the standard world with nothing of wasmgate in it. Real uvicorn, real Redis.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import subprocess
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from bindings.types import Event
from gateway import metrics
from gateway.app import App
from gateway.wasi_http import STREAMED_BODY, StreamedBody, cloudevent_headers, request_event
from tests.contract.harness import wait_until
from tests.fixtures.build import build_handler, build_js_handler, build_wasi_http_handler

pytestmark = pytest.mark.wasm


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _write(tmp_path: Path, component_extra: str = "", triggers: str = "",
           brokers: str = "") -> Path:
    wasm = build_wasi_http_handler("probe")
    manifest = tmp_path / "wasmgate.toml"
    manifest.write_text(f"""
[application]
name = "wasi-http"
{brokers}
[component.probe]
source = "{wasm}"
{component_extra}

[[trigger.http]]
route = "/..."
component = "probe"
max-body-bytes = {64 << 20}
{triggers}
""")
    return manifest


@asynccontextmanager
async def _serving(manifest: Path) -> AsyncIterator[tuple[App, str]]:
    """The app of ``manifest`` started on a free port: the app and its base URL."""
    listen = f"127.0.0.1:{_free_port()}"
    app = App.load(manifest, listen=listen)
    await app.start()
    try:
        yield app, f"http://{listen}"
    finally:
        await app.stop()


@pytest.fixture
async def upstream() -> AsyncIterator[str]:
    """A local HTTP server the component may be allowed to call."""

    class Hello(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"hello from upstream"
            self.send_response(200)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hello)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
async def gateway(tmp_path: Path, upstream: str) -> AsyncIterator[str]:
    manifest = _write(tmp_path, f'allowed-outbound-hosts = ["{upstream}"]\n'
                                "max-response-bytes = 1048576\ntimeout-ms = 20000")
    async with _serving(manifest) as (_, base):
        yield base


async def test_the_request_arrives_as_it_came_and_the_response_goes_back(gateway: str) -> None:
    async with httpx.AsyncClient() as client:
        r = await client.put(f"{gateway}/some/path?a=1&b=two", content=b"payload",
                             headers={"x-custom": "yes"})
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    echo = r.json()
    assert echo["method"] == "PUT"
    assert echo["path"] == "/some/path?a=1&b=two"
    assert ["x-custom", "yes"] in echo["headers"]
    assert (echo["length"], echo["body"]) == (7, "payload")


async def test_header_bytes_above_ascii_reach_the_guest_as_sent(gateway: str) -> None:
    # obs-text (RFC 9110 5.5): bytes 0x80-0xFF are legal in a field value; the guest must get
    # them, not a 500 because a Latin-1 value was re-encoded as UTF-8 on the way.
    async with httpx.AsyncClient() as client:
        r = await client.get(f"{gateway}/h", headers=[(b"x-name", b"caf\xe9")])
    assert r.status_code == 200
    assert ["x-name", "caf\xe9"] in r.json()["headers"]


async def test_an_encoded_path_reaches_the_guest_encoded(gateway: str) -> None:
    async with httpx.AsyncClient() as client:
        r = await client.get(f"{gateway}/a%20b/%C3%A9?q=%20x")
    assert r.status_code == 200
    assert r.json()["path"] == "/a%20b/%C3%A9?q=%20x"


async def test_the_guest_status_is_the_http_status(gateway: str) -> None:
    async with httpx.AsyncClient() as client:
        r = await client.post(f"{gateway}/x", content=b"status:418")
    assert r.status_code == 418


def _peak_rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc/self/status")


async def test_a_50_mb_body_streams_through_without_the_gateway_holding_it(
        gateway: str) -> None:
    chunk = hashlib.sha256(b"seed").digest() * 2048  # 64 KiB
    count = 50 * 16  # 50 MiB
    expected = hashlib.sha256(chunk * count).hexdigest()

    async def body() -> AsyncIterator[bytes]:
        for _ in range(count):
            yield chunk

    # Warm the instance and the connection path, then reset the peak-RSS mark (Linux:
    # clear_refs 5), so the peak below is this request's.
    async with httpx.AsyncClient(timeout=120) as client:
        await client.post(f"{gateway}/hash", content=b"warm")
        Path("/proc/self/clear_refs").write_text("5")
        before = _peak_rss_bytes()
        r = await client.post(f"{gateway}/hash", content=body())
    grown = _peak_rss_bytes() - before
    assert r.status_code == 200, r.text
    assert r.json() == {"sha256": expected, "length": len(chunk) * count}
    # Gateway, guest and client share this process: all of them together held far less
    # than the 50 MiB body at any moment.
    assert grown < 16 << 20, f"peak RSS grew by {grown >> 20} MiB"


async def test_a_streamed_body_over_max_body_bytes_is_413(tmp_path: Path) -> None:
    manifest = _write(tmp_path).read_text().replace(f"max-body-bytes = {64 << 20}",
                                                    "max-body-bytes = 100000")
    (tmp_path / "wasmgate.toml").write_text(manifest)
    async with (_serving(tmp_path / "wasmgate.toml") as (_, base),
                httpx.AsyncClient(timeout=30) as client):
        r = await client.post(f"{base}/hash", content=b"x" * 200_000)
        ok = await client.post(f"{base}/hash", content=b"x" * 50_000)
    assert r.status_code == 413
    assert ok.json()["length"] == 50_000


def _cut_responses() -> float:
    for line in metrics.render().splitlines():
        if line.startswith('wasmgate_http_cut_responses_total{component="probe"}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_a_response_body_over_max_response_bytes_is_cut_mid_body(gateway: str) -> None:
    before = _cut_responses()
    async with httpx.AsyncClient(timeout=30) as client:
        small = await client.get(f"{gateway}/big?n=300000")
        async with client.stream("GET", f"{gateway}/big?n=2000000") as big:
            # The head went out before the body grew too large: the status is the guest's,
            # and the body ends with the connection, short of its end.
            assert big.status_code == 200
            received = 0
            with pytest.raises(httpx.RemoteProtocolError):
                async for chunk in big.aiter_raw():
                    received += len(chunk)
    assert (small.status_code, len(small.content)) == (200, 300000)
    assert received <= 1048576
    assert _cut_responses() == before + 1


@pytest.fixture
async def gate() -> AsyncIterator[tuple[str, list[threading.Event], list[int]]]:
    """A server the component fetches between its response chunks: request ``?i=N`` is
    held until ``releases[N]`` is set; ``asked`` records which arrived."""
    releases = [threading.Event() for _ in range(3)]
    asked: list[int] = []

    class Gate(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            i = int(self.path.rsplit("=", 1)[1])
            asked.append(i)
            releases[i].wait(30)
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Gate)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", releases, asked
    for release in releases:
        release.set()
    server.shutdown()
    server.server_close()


async def test_the_response_is_streamed_while_the_guest_still_writes_it(
        tmp_path: Path, gate: tuple[str, list[threading.Event], list[int]]) -> None:
    url, releases, asked = gate
    manifest = _write(tmp_path, f'allowed-outbound-hosts = ["{url}"]\ntimeout-ms = 20000')
    async with (_serving(manifest) as (_, base), httpx.AsyncClient(timeout=30) as client,
                client.stream("GET", f"{base}/chunks",
                              params={"url": f"{url}/gate", "n": "3"}) as r):
        assert r.status_code == 200
        assert "content-length" not in r.headers  # chunked: the length is not known
        chunks = r.aiter_raw()
        # The guest is blocked on the gate's first request, and the client already
        # has what it wrote before it.
        assert await asyncio.wait_for(anext(chunks), 20) == b"chunk0\n"
        await wait_until(lambda: asked == [1], timeout=20, what="the guest's 1st fetch")
        releases[1].set()
        assert await asyncio.wait_for(anext(chunks), 20) == b"chunk1\n"
        await wait_until(lambda: asked == [1, 2], timeout=20, what="its 2nd fetch")
        releases[2].set()
        assert await asyncio.wait_for(anext(chunks), 20) == b"chunk2\n"
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(anext(chunks), 20)


async def test_a_guest_failing_after_its_head_was_sent_has_its_body_cut(
        tmp_path: Path, gate: tuple[str, list[threading.Event], list[int]]) -> None:
    url, _, asked = gate
    # The gate never answers: the guest's fetch runs out of the event's deadline, the
    # guest raises (uncaught: a trap) after writing its first chunk.
    manifest = _write(tmp_path, f'allowed-outbound-hosts = ["{url}"]\ntimeout-ms = 3000')
    before = _cut_responses()
    async with (_serving(manifest) as (_, base), httpx.AsyncClient(timeout=30) as client,
                client.stream("GET", f"{base}/chunks",
                              params={"url": f"{url}/gate", "n": "2"}) as r):
        assert r.status_code == 200
        chunks = r.aiter_raw()
        assert await asyncio.wait_for(anext(chunks), 20) == b"chunk0\n"
        with pytest.raises(httpx.RemoteProtocolError):
            await asyncio.wait_for(anext(chunks), 20)
    assert asked == [1]
    assert _cut_responses() == before + 1


async def test_outgoing_requests_reach_an_allowed_host(gateway: str, upstream: str) -> None:
    async with httpx.AsyncClient(timeout=30) as client:
        r = await client.get(f"{gateway}/fetch", params={"url": f"{upstream}/hi"})
    assert r.status_code == 200, r.text
    assert r.json() == {"status": 200, "body": "hello from upstream"}


async def test_outgoing_requests_to_other_hosts_are_refused_with_an_error_code(
        gateway: str) -> None:
    refused = f"http://127.0.0.1:{_free_port()}/"
    async with httpx.AsyncClient(timeout=30) as client:
        r = await client.get(f"{gateway}/fetch", params={"url": refused})
    assert r.status_code == 502
    assert "HttpRequestDenied" in r.text


def test_a_broker_event_becomes_a_cloudevents_binary_post() -> None:
    event = Event(id="e-1", source="wasmgate/redis-streams/s", type="wasmgate.message",
                  subject="s é%", time=1_700_000_000_123_456,
                  content_type="application/json", key=b"k1",
                  headers=[("trace", "t"), ("content-length", "9"), ("bad name", "x"),
                           ("accented", "é")],
                  metadata=[("offset", "17-0"), ("attempt", "2"), ("delivery_count", "2")],
                  data=b"{}")
    shaped = request_event(event, "/events")
    assert dict(shaped.metadata)["method"] == "POST"
    assert dict(shaped.metadata)["path-with-query"] == "/events"
    headers = dict(shaped.headers)
    assert headers["ce-id"] == "e-1"
    assert headers["ce-specversion"] == "1.0"
    assert headers["ce-time"] == "2023-11-14T22:13:20.123456Z"
    assert headers["content-type"] == "application/json"
    assert headers["ce-partitionkey"] == "k1"
    assert (headers["ce-offset"], headers["ce-attempt"]) == ("17-0", "2")
    assert headers["ce-deliverycount"] == "2"
    assert headers["trace"] == "t"
    assert "content-length" not in headers
    assert "bad name" not in headers and "accented" not in headers
    assert headers["ce-subject"] == "s%20%C3%A9%25"
    assert shaped.data == b"{}"
    assert cloudevent_headers(event) == shaped.headers


@pytest.fixture
async def redis_stream() -> AsyncIterator[tuple[str, str]]:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url("redis://127.0.0.1:6379/0")
    stream = f"wg-wasi-http-{socket.gethostname()}-{_free_port()}"
    yield stream, stream + ".dead"
    await client.delete(stream, stream + ".dead")
    await client.aclose()


async def test_a_broker_event_is_retried_on_500_and_dead_lettered_at_once_on_422(
        tmp_path: Path, redis_stream: tuple[str, str]) -> None:
    import redis.asyncio as aioredis

    stream, dead = redis_stream
    manifest = _write(tmp_path, 'http-path = "/events"', brokers="""
[brokers.r]
kind = "redis"
url = "redis://127.0.0.1:6379/0"
""", triggers=f"""
[[trigger.redis-streams]]
component = "probe"
broker = "r"
stream = "{stream}"
dead-letter = "{dead}"
start-id = "0"
block-ms = 200
max-attempts = 3
initial-backoff-ms = 50
max-backoff-ms = 100
""")
    client = aioredis.Redis.from_url("redis://127.0.0.1:6379/0")
    app = App.load(manifest, listen=f"127.0.0.1:{_free_port()}")
    runs: list[tuple[str, str, int]] = []
    seen: dict[str, object] = {}
    invoke = app.dispatcher._invoke

    async def recording(component: str, event: Event) -> object:
        response = await invoke(component, event)
        if event.source != "wasmgate/http":
            runs.append((event.data.decode(), dict(event.metadata).get("attempt", ""),
                         response.status))
            if event.data == b"fine":
                seen.update(json.loads(response.body), id=event.id)
        return response

    app.dispatcher._invoke = recording  # type: ignore[assignment]
    await app.start()
    try:
        await client.xadd(stream, {"data": b"status:500"})
        await client.xadd(stream, {"data": b"status:422"})
        await client.xadd(stream, {"data": b"fine"})

        async def dead_letters() -> list[dict[bytes, bytes]]:
            return [fields for _id, fields in await client.xrange(dead)]

        letters: list[dict[bytes, bytes]] = []

        async def two_dead() -> bool:
            letters[:] = await dead_letters()
            return len(letters) == 2

        deadline = asyncio.get_running_loop().time() + 30
        while not await two_dead():
            assert asyncio.get_running_loop().time() < deadline, (runs, letters)
            await asyncio.sleep(0.1)
        await wait_until(lambda: any(data == "fine" for data, _, _ in runs), what="ok event")
    finally:
        await app.stop()
        await client.aclose()
    by_data = {fields[b"data"]: fields for fields in letters}
    assert set(by_data) == {b"status:500", b"status:422"}
    assert [r for r in runs if r[0] == "status:500"] == [
        ("status:500", "1", 500), ("status:500", "2", 500), ("status:500", "3", 500)]
    assert [r for r in runs if r[0] == "status:422"] == [("status:422", "1", 422)]
    assert [r for r in runs if r[0] == "fine"] == [("fine", "1", 200)]
    # What the guest saw: a CloudEvents binary-mode POST to the component's http-path.
    assert (seen["method"], seen["path"]) == ("POST", "/events")
    headers = dict(seen["headers"])  # type: ignore[call-overload]
    assert headers["ce-id"] == seen["id"]
    assert headers["ce-specversion"] == "1.0"
    assert headers["ce-attempt"] == "1"
    assert "ce-type" in headers and "ce-source" in headers



@pytest.mark.parametrize("isolation", ["pooled", "fresh"])
async def test_a_componentize_js_wasi_http_handler_serves_in_both_isolations(
        tmp_path: Path, isolation: str) -> None:
    wasm = build_js_handler("probe", world="wasi-http")
    (tmp_path / "wasmgate.toml").write_text(f"""
[application]
name = "js-wasi-http"

[component.js]
source = "{wasm}"
isolation = "{isolation}"

[[trigger.http]]
route = "/..."
component = "js"
""")
    async with _serving(tmp_path / "wasmgate.toml") as (app, base):
        assert app.pools["js"].streams_request_body
        async with httpx.AsyncClient(timeout=30) as client:
            answers = [await client.post(f"{base}/x?y={i}", content=b"abc" * 1000)
                       for i in range(3)]
    assert [(r.status_code, r.json()) for r in answers] == [
        (200, {"path": f"/x?y={i}", "method": "post", "length": 3000, "lang": "js"})
        for i in range(3)]


async def test_wasi_config_store_reads_the_components_variables(tmp_path: Path) -> None:
    wasm = build_wasi_http_handler("config", world="wasmgate:wasi-http-deps/proxy-with-config")
    (tmp_path / "wasmgate.toml").write_text(f"""
[application]
name = "wasi-config"

[variables]
greeting = {{ default = "hello" }}
other = {{ default = "not granted" }}

[component.cfg]
source = "{wasm}"
variables = {{ greeting = "hi there" }}

[[trigger.http]]
route = "/..."
component = "cfg"
""")
    async with (_serving(tmp_path / "wasmgate.toml") as (_, base),
                httpx.AsyncClient(timeout=30) as client):
        r = await client.get(f"{base}/")
    assert r.status_code == 200, r.text
    answer = r.json()
    assert (answer["greeting"], answer["missing"]) == ("hi there", None)
    assert ["greeting", "hi there"] in answer["all"]


async def test_wasi_keyvalue_uses_the_granted_stores_only(tmp_path: Path) -> None:
    wasm = build_wasi_http_handler(
        "keyvalue", world="wasmgate:wasi-http-deps/proxy-with-capabilities")
    (tmp_path / "wasmgate.toml").write_text(f"""
[application]
name = "wasi-keyvalue"

[key-value.notes]
path = "{tmp_path / 'notes.sqlite'}"

[key-value.private]
path = "{tmp_path / 'private.sqlite'}"

[component.kv]
source = "{wasm}"
key-value-stores = ["notes"]

[[trigger.http]]
route = "/..."
component = "kv"
""")
    async with _serving(tmp_path / "wasmgate.toml") as (app, base):
        async with httpx.AsyncClient(timeout=30) as client:
            first = await client.get(f"{base}/notes")
            second = await client.get(f"{base}/notes")
            refused = await client.get(f"{base}/private")
        stored = app.capabilities.store("notes").get("last")
    assert first.status_code == 200, first.text
    assert first.json()["count"] == 1
    assert second.json() == {"count": 2, "last": "call 2", "exists": True,
                             "many": [["a", "1"], ["b", "2"], None],
                             "keys": ["a", "b", "count", "last"]}
    # The same store the wasmgate:handler/kv import and the app see.
    assert stored == b"call 2"
    assert (refused.status_code, refused.json()) == (403, {"error": "Error_AccessDenied"})


async def test_a_handler_world_component_given_a_streamed_body_gets_it_whole(
        tmp_path: Path) -> None:
    # What happens when `wasmgate watch` swaps a route's wasi:http component for a
    # wasmgate:handler one between the trigger's look and the call: the body is read whole.
    wasm = build_handler("echo")
    (tmp_path / "wasmgate.toml").write_text(f"""
[application]
name = "swap"

[component.echo]
source = "{wasm}"
""")
    app = App.load(tmp_path / "wasmgate.toml")
    messages = [{"type": "http.request", "body": b"hel", "more_body": True},
                {"type": "http.request", "body": b"lo", "more_body": False}]

    async def receive() -> dict[str, object]:
        return messages.pop(0)

    source = StreamedBody(receive, limit=1024, timeout_s=5)
    event = Event(id="e", source="wasmgate/http", type="wasmgate.http.request",
                  subject="/echo/x", metadata=[("method", "POST"), ("path", "/echo/x")])
    token = STREAMED_BODY.set(source)
    try:
        response = await app.invoke("echo", event)
    finally:
        STREAMED_BODY.reset(token)
        await app.stop()
    assert (response.status, response.body) == (200, b"echo:hello")
    assert source.taken and source.problem is None


def test_the_same_file_answers_the_same_under_wasmtime_serve(tmp_path: Path) -> None:
    """The portability claim, checked against the reference host when its CLI is here."""
    from bench.bench_wasi_http import wasmtime_cli

    cli = wasmtime_cli()
    if cli is None:
        pytest.skip("no wasmtime CLI 48.0.8 (WASMTIME or ~/.cache/wasmgate/tools/bin/wasmtime)")
    wasm = build_wasi_http_handler("probe")
    listen = f"127.0.0.1:{_free_port()}"
    server = subprocess.Popen([cli, "serve", "--addr", listen, "-S", "cli", str(wasm)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120  # wasmtime compiles the component first
        while True:
            try:
                r = httpx.put(f"http://{listen}/some/path?a=1", content=b"payload",
                              headers={"x-custom": "yes"}, timeout=30)
                break
            except httpx.TransportError:
                assert server.poll() is None and time.monotonic() < deadline, "no server"
                time.sleep(0.2)
    finally:
        server.terminate()
        server.wait()
    assert r.status_code == 200
    echo = r.json()
    assert (echo["method"], echo["path"], echo["length"]) == ("PUT", "/some/path?a=1", 7)
    assert ["x-custom", "yes"] in echo["headers"]


async def test_a_cron_tick_is_posted_to_its_triggers_http_path(tmp_path: Path) -> None:
    """`http-path` on the trigger table wins over the component's: each trigger of one
    wasi:http component can post to its own route."""
    manifest = _write(tmp_path, 'http-path = "/component-default"', triggers="""
[[trigger.cron]]
component = "probe"
schedule = "* * * * * *"
data = "tick"
http-path = "/jobs/tick"
""")
    app = App.load(manifest, listen=f"127.0.0.1:{_free_port()}")
    seen: list[dict[str, object]] = []
    invoke = app.dispatcher._invoke

    async def recording(component: str, event: Event) -> object:
        response = await invoke(component, event)
        if event.source != "wasmgate/http":
            seen.append(json.loads(response.body))
        return response

    app.dispatcher._invoke = recording  # type: ignore[assignment]
    await app.start()
    try:
        await wait_until(lambda: bool(seen), what="a cron tick")
    finally:
        await app.stop()
    echo = seen[0]
    assert (echo["method"], echo["path"]) == ("POST", "/jobs/tick")
    headers = dict(echo["headers"])  # type: ignore[call-overload]
    assert headers["ce-type"] == "wasmgate.cron.tick"
    assert "ce-httppath" not in headers  # where it was sent, not an attribute of the event
    assert echo["body"] == "tick"


async def test_a_client_that_stops_reading_holds_the_slot_no_longer_than_timeout_ms(
        tmp_path: Path) -> None:
    """A streamed response to a client that never reads fills the socket, then the guest's
    output stream: the call must still end at ``timeout-ms`` and give its one slot back,
    with the connection cut, and the next request served."""
    manifest = _write(tmp_path, "max-instances = 1\ntimeout-ms = 1500\n"
                                f"max-response-bytes = {64 << 20}\nadmission-timeout-ms = 8000")
    stalled = socket.socket()
    async with _serving(manifest) as (_, base):
        host, port = base.removeprefix("http://").rsplit(":", 1)
        # A small receive buffer so the gateway's writes back up at once.
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.connect((host, int(port)))
        stalled.sendall(b"GET /big?n=40000000 HTTP/1.1\r\nhost: g\r\n\r\n")
        before = _cut_responses()
        loop = asyncio.get_running_loop()
        started = loop.time()
        async with httpx.AsyncClient(timeout=30) as client:
            await asyncio.sleep(0.5)  # the stalled request holds the only slot by now
            answer = await client.get(f"{base}/after")
        waited = loop.time() - started
        stalled.close()
    assert answer.status_code == 200, answer.text
    assert answer.json()["path"] == "/after"
    # Bounded by timeout-ms (1.5 s) plus the slot's return, not by the stalled client.
    assert waited < 8, f"the next request waited {waited:.1f}s"
    assert _cut_responses() == before + 1
