"""Publish grants match token by token (NATS-style `*` and `>`), and a publish waits for its
broker's confirmation no longer than the event's deadline. The matcher is checked on its
own and through a real component (tests/fixtures/handlers/caps) publishing to NATS.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from bindings.types import Event, new_event_id
from gateway.app import App
from gateway.errors import ConfigError
from gateway.grants import parse_publish_grant
from triggers.nats_connection import confirm_subscriptions

NATS_URL = "nats://127.0.0.1:4222"
HANG_GUARD_S = 12.0  # only there so a regression fails instead of hanging


# -- the matcher --------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "pattern", "destination", "allowed"), [
    # `*` is exactly one non-empty token.
    ("nats", "x.allowed.*", "x.allowed.a", True),
    ("nats", "x.allowed.*", "x.allowed.a.b", False),
    ("nats", "x.allowed.*", "x.allowed.", False),
    ("nats", "x.allowed.*", "x.allowed", False),
    ("nats", "x.*.new", "x.eu.new", True),
    ("nats", "x.*.new", "x.eu.west.new", False),
    # `>` is one or more non-empty tokens at the end.
    ("nats", "x.allowed.>", "x.allowed.a.b", True),
    ("nats", "x.allowed.>", "x.allowed.a", True),
    ("nats", "x.allowed.>", "x.allowed", False),
    ("nats", "x.allowed.>", "x.allowed.", False),
    ("nats", "x.allowed.>", "x.allowed.a..b", False),
    # `*` inside a token stays inside it.
    ("kafka", "orders-*", "orders-eu", True),
    ("kafka", "orders-*", "orders-eu.audit", False),
    ("kafka", "orders.*-v1", "orders.created-v1", True),
    # Literal patterns match exactly one destination, case-sensitively.
    ("kafka", "orders", "orders", True),
    ("kafka", "orders", "Orders", False),
    ("kafka", "orders", "orders.x", False),
    # JetStream is reached only through a `js:` pattern, and core subjects never by one.
    ("nats", ">", "orders.new", True),
    ("nats", ">", "js:orders.new", False),
    ("nats", "js:>", "js:orders.new", True),
    ("nats", "js:orders.*", "orders.new", False),
    # Redis splits at ":"; streams are reached only through a `stream:` pattern.
    ("redis", "orders:*", "orders:eu", True),
    ("redis", "orders:*", "orders:eu:west", False),
    ("redis", "stream:orders:>", "stream:orders:eu:west", True),
    ("redis", "orders:>", "stream:orders:eu", False),
    # AMQP: the exchange is one token, then the routing key's words.
    ("amqp", "shop/orders.*", "shop/orders.eu", True),
    ("amqp", "shop/orders.*", "shop/orders.eu.west", False),
    ("amqp", "shop/>", "shop/orders.eu.west", True),
    ("amqp", "*/orders", "shop/orders", True),
    ("amqp", "shop.*/x", "shop.eu/x", True),  # `.` inside an exchange name is no separator
    ("amqp", ">", "logs/", True),  # a fanout exchange, empty routing key
    # The default exchange routes to any queue by name: only `/...` patterns reach it.
    ("amqp", "*/jobs", "/jobs", False),
    ("amqp", ">", "/jobs", False),
    ("amqp", "/jobs-*", "/jobs-eu", True),
    ("amqp", "/>", "/jobs.eu", True),
])
def test_publish_patterns_match_token_by_token(kind: str, pattern: str, destination: str,
                                               allowed: bool) -> None:
    grant = parse_publish_grant(f"b:{pattern}", kind)
    assert grant.matches("b", destination) is allowed
    assert not grant.matches("other", destination)


@pytest.mark.parametrize(("kind", "pattern", "says"), [
    ("nats", "orders.>.new", "`>` matches the remaining tokens"),
    ("nats", "orders.a>", "`>` matches the remaining tokens"),
    ("nats", "orders.*.", "has an empty token"),
    ("kafka", ".orders.*", "has an empty token"),
    ("nats", "a..*", "has an empty token"),
    ("amqp", "orders.*", "an AMQP pattern reads `<exchange>/<routing-key pattern>`"),
    ("amqp", "orders", "an AMQP pattern reads `<exchange>/<routing-key pattern>`"),
])
def test_a_pattern_that_cannot_mean_what_it_looks_like_is_refused(kind: str, pattern: str,
                                                                   says: str) -> None:
    with pytest.raises(ValueError, match="publish grant") as info:
        parse_publish_grant(f"b:{pattern}", kind)
    assert says in str(info.value)


def test_the_manifest_refuses_a_bad_publish_pattern_naming_the_field(tmp_path: Path) -> None:
    (tmp_path / "handler.wasm").write_bytes(b"\0asm")
    path = tmp_path / "wasmgate.toml"
    path.write_text("""
[application]
name = "grants"

[brokers.events]
kind = "nats"
url = "nats://127.0.0.1:4222"

[component.c]
source = "handler.wasm"
publish = ["events:orders.>.new"]
""")
    from gateway.manifest import load_manifest

    with pytest.raises(ConfigError) as info:
        load_manifest(path)
    message = str(info.value)
    assert "component.c.publish" in message and "orders.>.new" in message
    assert "`>` matches the remaining tokens" in message


# -- through a real component ------------------------------------------------------------


def _app(tmp_path: Path, component_extra: str, extra: str = "") -> App:
    from tests.fixtures.build import build_handler

    path = tmp_path / "wasmgate.toml"
    path.write_text(f"""
[application]
name = "grants-{uuid.uuid4().hex[:8]}"

[brokers.nats]
kind = "nats"
url = "{NATS_URL}"
{extra}
[component.caps]
source = "{build_handler("caps")}"
{component_extra}
""")
    return App.load(path)


async def _publish(app: App, event_id: str | None = None, **msg: Any) -> Any:
    event = Event(id=event_id or new_event_id(), source="test", type="test",
                  data=json.dumps({"op": "publish", "body": "x", **msg}).encode())
    response = await asyncio.wait_for(app.invoke("caps", event), HANG_GUARD_S)
    assert response.status == 200, response.body
    return json.loads(response.body)


@pytest.mark.wasm
async def test_a_one_token_grant_does_not_reach_deeper_subjects(tmp_path: Path) -> None:
    import nats

    base = f"x{uuid.uuid4().hex[:8]}"
    app = _app(tmp_path, f'publish = ["nats:{base}.allowed.*", "nats:{base}.tree.>"]')
    nc = await nats.connect(NATS_URL)
    try:
        sub = await nc.subscribe(f"{base}.>")
        assert await confirm_subscriptions(nc, timeout_s=10)
        assert await _publish(app, broker="nats", destination=f"{base}.allowed.a") == \
            {"ok": "confirmed"}
        assert (await sub.next_msg(timeout=5)).subject == f"{base}.allowed.a"
        for outside in (f"{base}.allowed.a.b", f"{base}.allowed.", f"{base}.allowed"):
            refused = await _publish(app, broker="nats", destination=outside)
            assert f"may not publish to {outside!r} on broker `nats`" in refused["err"]
        assert await _publish(app, broker="nats", destination=f"{base}.tree.a.b") == \
            {"ok": "confirmed"}
        assert (await sub.next_msg(timeout=5)).subject == f"{base}.tree.a.b"
    finally:
        await nc.close()
        await app.stop()


class _SilentServer:
    """Accepts TCP connections and never answers: a broker that never confirms."""

    def __init__(self) -> None:
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(0.2)
        self.port = self._server.getsockname()[1]
        self._stop = threading.Event()
        self._held: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                self._held.append(self._server.accept()[0])
            except TimeoutError:
                continue

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for conn in self._held:
            conn.close()
        self._server.close()


@pytest.fixture
def silent() -> Iterator[_SilentServer]:
    server = _SilentServer()
    yield server
    server.close()


@pytest.mark.wasm
async def test_a_publish_waits_no_longer_than_the_event_deadline(tmp_path: Path,
                                                                 silent: _SilentServer) -> None:
    # The broker's own connect timeout (60 s) and the publish cap (30 s) are both far
    # beyond the event's 1.5 s: only the deadline can end this wait in time.
    app = _app(tmp_path, 'publish = ["mute:news"]\ntimeout-ms = 1500',
               extra=f'\n[brokers.mute]\nkind = "nats"\nurl = "nats://127.0.0.1:{silent.port}"'
                     "\nconnect-timeout-ms = 60000\n")
    event = Event(id="evt-publish", source="test", type="test", data=json.dumps(
        {"op": "publish", "broker": "mute", "destination": "news", "body": "x"}).encode())
    try:
        with structlog.testing.capture_logs(
                processors=[structlog.contextvars.merge_contextvars]) as logs:
            try:
                await asyncio.wait_for(app.invoke("caps", event), HANG_GUARD_S)
            except TimeoutError:
                pytest.fail("the publish outlived the event's deadline")
            except Exception:
                pass  # the guest gets the error with no time left; the call then times out
        refusals = [e for e in logs if e["event"] == "host call refused or failed"]
        assert refusals, logs
        assert "broker `mute` did not confirm the publish to 'news'" in refusals[0]["error"]
        assert "the event's deadline (`timeout-ms`)" in refusals[0]["error"]
        assert refusals[0]["event_id"] == "evt-publish"
    finally:
        await asyncio.wait_for(app.stop(), HANG_GUARD_S)
