"""Webhook routes end to end: the real HTTP trigger, a real component (the `held` test
handler) and the real key-value backends (SQLite, Redis) and Redis Streams broker.

Signatures here are computed the way GitHub documents (HMAC-SHA256 hex of the raw body,
`sha256=` prefix); the scheme itself is pinned to GitHub's published vector in
tests/test_webhook_signatures.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from bindings.host.kv import SqliteKeyValue
from gateway.app import App
from tests.fixtures.build import build_handler

pytestmark = pytest.mark.wasm

REDIS_URL = "redis://127.0.0.1:6379/0"
SECRET = "a webhook secret, 32 bytes long!"
OLD_SECRET = "the secret we are rotating away"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _signed(body: bytes, delivery: str, secret: str = SECRET) -> dict[str, str]:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {"x-hub-signature-256": f"sha256={digest}", "x-github-delivery": delivery,
            "x-github-event": "push", "content-type": "application/json"}


async def _start(tmp_path: Path, body: str) -> tuple[App, str]:
    (tmp_path / "secrets.toml").write_text(f'gh-secret = "{SECRET}"\n'
                                           f'gh-old = "{OLD_SECRET}"\n')
    (tmp_path / "wasmgate.toml").write_text(f"""
[application]
name = "hooks"
secrets-file = "secrets.toml"

[variables]
gh-secret = {{ secret = true }}
gh-old = {{ secret = true }}
{body}
""")
    listen = f"127.0.0.1:{_free_port()}"
    app = App.load(tmp_path / "wasmgate.toml", listen=listen)
    await app.start()
    return app, f"http://{listen}"


def _store(backend: str, prefix: str) -> str:
    if backend == "redis":
        return f'[key-value.hooks]\nbackend = "redis"\nurl = "{REDIS_URL}"\nprefix = "{prefix}"'
    return '[key-value.hooks]\nbackend = "sqlite"'


async def _metric(client: httpx.AsyncClient, base: str, series: str) -> float:
    """One series' value in /metrics (0 if absent); metrics are per process, so tests
    compare before and after."""
    for line in (await client.get(f"{base}/metrics")).text.splitlines():
        name, _, value = line.rpartition(" ")
        if name == series:
            return float(value)
    return 0.0


_MISMATCH = ('wasmgate_webhook_verification_failures_total{reason="signature-mismatch",'
             'route="/hook/..."}')
_MISSING = ('wasmgate_webhook_verification_failures_total{reason="missing-header",'
            'route="/hook/..."}')
_DEDUPLICATED = 'wasmgate_webhook_deduplicated_total{route="/hook/..."}'


@dataclasses.dataclass
class Gateway:
    base: str
    runs: SqliteKeyValue  # the handler's own `default` store: its run count, its release

    def run_count(self) -> int:
        value = self.runs.get("runs")
        return 0 if value is None else int(value)


@pytest.fixture(params=["sqlite", "redis"])
async def gateway(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Gateway]:
    prefix = f"test-webhooks:{uuid.uuid4().hex}:"
    app, base = await _start(tmp_path, f"""
{_store(request.param, prefix)}

[component.held]
source = "{build_handler("held")}"
key-value-stores = ["default"]
timeout-ms = 30000

[[trigger.http]]
route = "/hook/..."
component = "held"

[trigger.http.webhook]
scheme = "github"
secrets = ["gh-secret", "gh-old"]

[trigger.http.webhook.idempotency]
store = "hooks"
""")
    runs = SqliteKeyValue(tmp_path / ".wasmgate" / "default.sqlite")
    yield Gateway(base, runs)
    runs.set("release", b"1")  # a failed test must not leave a call holding
    await app.stop()
    runs.close()
    if request.param == "redis":
        client = redis.Redis.from_url(REDIS_URL)
        for key in client.scan_iter(match=f"{prefix}*"):
            client.delete(key)
        client.close()


async def test_unsigned_or_tampered_deliveries_are_401_and_never_run(
        gateway: Gateway, capsys: pytest.CaptureFixture[str]) -> None:
    body = b'{"ref": "refs/heads/main"}'
    base = gateway.base
    async with httpx.AsyncClient() as client:
        mismatches = await _metric(client, base, _MISMATCH)
        missing = await _metric(client, base, _MISSING)
        forged = _signed(body, uuid.uuid4().hex, secret="not the secret")
        r = await client.post(f"{base}/hook/x", content=body, headers=forged)
        assert (r.status_code, r.content) == (401, b"webhook signature refused: "
                                                   b"signature-mismatch\n")
        tampered = _signed(body, uuid.uuid4().hex)
        r = await client.post(f"{base}/hook/x", content=body + b" ", headers=tampered)
        assert r.status_code == 401
        r = await client.post(f"{base}/hook/x", content=body,
                              headers={"x-github-delivery": uuid.uuid4().hex})
        assert (r.status_code, r.content) == (401, b"webhook signature refused: "
                                                   b"missing-header\n")
        assert gateway.run_count() == 0
        # The old secret still verifies while it is listed (rotation).
        r = await client.post(f"{base}/hook/x", content=body,
                              headers=_signed(body, uuid.uuid4().hex, secret=OLD_SECRET))
        assert (r.status_code, r.content) == (200, b"1")
        assert await _metric(client, base, _MISMATCH) == mismatches + 2
        assert await _metric(client, base, _MISSING) == missing + 1
    # Refusals are logged with the route and reason, never the body, signature or secret.
    logged = capsys.readouterr().out
    assert "webhook signature refused" in logged
    assert "refs/heads/main" not in logged
    assert SECRET not in logged
    assert forged["x-hub-signature-256"] not in logged


async def _until(condition: Callable[[], bool], what: str) -> None:
    deadline = asyncio.get_running_loop().time() + 10
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


async def test_concurrent_duplicates_run_once_and_retries_are_answered_unrun(
        gateway: Gateway) -> None:
    delivery = uuid.uuid4().hex
    body = b'{"action": "opened"}'
    base = gateway.base
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=50)) as client:
        deduplicated = await _metric(client, base, _DEDUPLICATED)
        first = asyncio.create_task(client.post(f"{base}/hook/hold", content=body,
                                                headers=_signed(body, delivery)))
        await _until(lambda: gateway.run_count() == 1, "the first delivery to start")
        duplicates = [asyncio.create_task(client.post(f"{base}/hook/hold", content=body,
                                                      headers=_signed(body, delivery)))
                      for _ in range(10)]
        # All answered while the first still holds: it is in progress, not run again.
        answers = await asyncio.gather(*duplicates)
        assert {(r.status_code, r.content) for r in answers} == {
            (409, b"delivery in progress\n")}
        assert all(r.headers["retry-after"] == "5" for r in answers)
        assert not first.done()
        gateway.runs.set("release", b"1")
        done = await first
        assert (done.status_code, done.content) == (200, b"1")
        retry = await client.post(f"{base}/hook/hold", content=body,
                                  headers=_signed(body, delivery))
        assert (retry.status_code, retry.content) == (200, b"already processed\n")
        assert gateway.run_count() == 1
        assert await _metric(client, base, _DEDUPLICATED) == deduplicated + 1


async def test_a_failed_delivery_is_released_so_the_providers_retry_runs(
        gateway: Gateway) -> None:
    delivery = uuid.uuid4().hex
    body = b"{}"
    base = gateway.base
    async with httpx.AsyncClient() as client:
        for _ in range(2):  # the handler fails: each retry runs it again
            r = await client.post(f"{base}/hook/fail", content=body,
                                  headers=_signed(body, delivery))
            assert r.status_code == 500
        assert gateway.run_count() == 2
        r = await client.post(f"{base}/hook/ok", content=body, headers=_signed(body, delivery))
        assert (r.status_code, r.content) == (200, b"3")
        r = await client.post(f"{base}/hook/ok", content=body, headers=_signed(body, delivery))
        assert (r.status_code, r.content) == (200, b"already processed\n")
        assert gateway.run_count() == 3
        no_id = {k: v for k, v in _signed(body, "x").items() if k != "x-github-delivery"}
        missing = await client.post(f"{base}/hook/ok", content=body, headers=no_id)
        assert (missing.status_code, missing.content) == (
            400, b"missing delivery id (header `x-github-delivery`)\n")
        assert gateway.run_count() == 3


def _enqueue_app(stream: str, broker_url: str) -> str:
    return f"""
[key-value.hooks]
backend = "sqlite"

[brokers.events]
kind = "redis"
url = "{broker_url}"
connect-timeout-ms = 1000

[[trigger.http]]
route = "/ingest"

[trigger.http.webhook]
scheme = "github"
secrets = ["gh-secret"]

[trigger.http.webhook.idempotency]
store = "hooks"

[trigger.http.enqueue]
broker = "events"
destination = "stream:{stream}"
headers = ["content-type", "x-github-event", "X-GitHub-Delivery"]
"""


async def test_enqueue_publishes_the_verified_request_and_answers_202(
        tmp_path: Path) -> None:
    stream = f"test-webhooks-{uuid.uuid4().hex}"
    app, base = await _start(tmp_path, _enqueue_app(stream, REDIS_URL))
    client: Any = redis.Redis.from_url(REDIS_URL)  # redis-py's sync/async union types
    try:
        delivery = uuid.uuid4().hex
        body = b'{"zen": "Keep it logically awesome."}'
        async with httpx.AsyncClient() as http:
            r = await http.post(f"{base}/ingest", content=body,
                                headers=_signed(body, delivery))
            assert r.status_code == 202, r.content
            # Confirmed before the answer: the entry is there as soon as the 202 is.
            entries = client.xrange(stream)
            assert len(entries) == 1
            entry_id, fields = entries[0]
            assert r.json() == {"accepted": True, "delivery": delivery,
                                "receipt": entry_id.decode()}
            assert fields == {b"data": body, b"key": delivery.encode(),
                              b"content-type": b"application/json",
                              b"x-github-event": b"push",
                              b"x-github-delivery": delivery.encode()}
            again = await http.post(f"{base}/ingest", content=body,
                                    headers=_signed(body, delivery))
            assert (again.status_code, again.content) == (200, b"already processed\n")
            forged = await http.post(f"{base}/ingest", content=body,
                                     headers=_signed(body, uuid.uuid4().hex, "wrong"))
            assert forged.status_code == 401
            assert client.xlen(stream) == 1
    finally:
        await app.stop()
        client.delete(stream)
        client.close()


async def test_enqueue_with_the_broker_down_is_503_and_the_retry_goes_through(
        tmp_path: Path) -> None:
    # Nothing listens on this port: the broker is down.
    down = f"redis://127.0.0.1:{_free_port()}/0"
    app, base = await _start(tmp_path, _enqueue_app("never", down))
    series = 'wasmgate_webhook_enqueue_failures_total{route="/ingest"}'
    try:
        delivery = uuid.uuid4().hex
        body = b"{}"
        async with httpx.AsyncClient() as http:
            failures = await _metric(http, base, series)
            r = await http.post(f"{base}/ingest", content=body, headers=_signed(body, delivery))
            assert (r.status_code, r.headers["retry-after"]) == (503, "5")
            assert r.content == b"not enqueued, retry later\n"
            # Released, not remembered: the retry is tried again (and fails again here).
            r = await http.post(f"{base}/ingest", content=body, headers=_signed(body, delivery))
            assert r.status_code == 503
            assert await _metric(http, base, series) == failures + 2
    finally:
        await app.stop()


async def test_enqueue_to_kafka_carries_body_headers_and_the_delivery_id_as_key(
        tmp_path: Path) -> None:
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    from tests.kafka_broker import shared_broker

    bootstrap = f"127.0.0.1:{shared_broker().port}"
    topic = f"webhooks-{uuid.uuid4().hex}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 1, 1)])
    finally:
        await admin.close()
    app, base = await _start(tmp_path, f"""
[brokers.events]
kind = "kafka"
url = "kafka://{bootstrap}"

[[trigger.http]]
route = "/ingest"

[trigger.http.webhook]
scheme = "github"
secrets = ["gh-secret"]

[trigger.http.enqueue]
broker = "events"
destination = "{topic}"
headers = ["x-github-event"]
""")
    try:
        delivery = uuid.uuid4().hex
        body = b'{"action": "created"}'
        async with httpx.AsyncClient() as http:
            r = await http.post(f"{base}/ingest", content=body, headers=_signed(body, delivery))
            assert r.status_code == 202, r.content
            assert r.json()["receipt"] == f"{topic}/0/0"
    finally:
        await app.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        # Confirmed (acks=all) before the 202: the record is there; fetch until it shows.
        records: list[Any] = []
        deadline = asyncio.get_running_loop().time() + 10
        while not records and asyncio.get_running_loop().time() < deadline:
            records += (await consumer.getmany(tp, timeout_ms=1000)).get(tp, [])
    finally:
        await consumer.stop()
    assert [(r.value, r.key, list(r.headers)) for r in records] == [
        (body, delivery.encode(), [("x-github-event", b"push")])]


async def test_header_bytes_that_are_no_timestamp_or_base64_are_401_not_500(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Any byte can arrive in a header (the server decodes them as latin-1): superscript
    # digits, 5000 digits, non-ASCII base64. Each raised in the verifier: a 500 and a
    # traceback in the log.
    monkeypatch.setenv("WASMGATE_VAR_SW", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    app, base = await _start(tmp_path, f"""
sw = {{ secret = true }}

[brokers.events]
kind = "redis"
url = "{REDIS_URL}"

[[trigger.http]]
route = "/ingest"

[trigger.http.webhook]
scheme = "standard-webhooks"
secrets = ["sw"]

[trigger.http.enqueue]
broker = "events"
destination = "stream:never-{uuid.uuid4().hex}"
""")
    try:
        async with httpx.AsyncClient() as http:
            for timestamp, signature in ((b"\xb9\xb2\xb3", b"v1,AAAA"), (b"9" * 5000, b"v1,AAAA"),
                                         (b"1700000000", b"v1,\xe9\xe9=")):
                r = await http.post(f"{base}/ingest", content=b"{}", headers=[
                    (b"webhook-id", b"msg_1"), (b"webhook-timestamp", timestamp),
                    (b"webhook-signature", signature)])
                assert (r.status_code, r.content) == (
                    401, b"webhook signature refused: malformed-header\n")
    finally:
        await app.stop()
    assert "Traceback" not in capsys.readouterr().out


async def test_enqueue_carries_header_and_delivery_id_bytes_as_sent(tmp_path: Path) -> None:
    # The server hands header values over decoded as latin-1; re-encoding that text as
    # UTF-8 turned a provider's UTF-8 "café" into "cafÃ©" on the queue.
    stream = f"test-webhooks-{uuid.uuid4().hex}"
    app, base = await _start(tmp_path, _enqueue_app(stream, REDIS_URL))
    client: Any = redis.Redis.from_url(REDIS_URL)
    try:
        body = b"{}"
        delivery = f"d-{uuid.uuid4().hex}-\u00e9".encode()
        headers = [(k.encode(), v.encode()) for k, v in _signed(body, "x").items()
                   if k not in ("x-github-event", "x-github-delivery")]
        headers += [(b"x-github-event", "caf\u00e9".encode()), (b"x-github-delivery", delivery)]
        async with httpx.AsyncClient() as http:
            r = await http.post(f"{base}/ingest", content=body, headers=headers)
            assert r.status_code == 202, r.content
        [(_, fields)] = client.xrange(stream)
        assert fields[b"x-github-event"] == "caf\u00e9".encode()
        assert fields[b"x-github-delivery"] == delivery
        assert fields[b"key"] == delivery
    finally:
        await app.stop()
        client.delete(stream)
        client.close()


@pytest.mark.parametrize(("broker", "destination"), [
    ('kind = "amqp"\nurl = "amqp://guest:guest@127.0.0.1:5672/"',
     "/no-such-queue-{tag}"),                              # unroutable: basic.return
    ('kind = "amqp"\nurl = "amqp://guest:guest@127.0.0.1:5672/"',
     "no-such-exchange-{tag}/key"),                        # channel error: NOT_FOUND
    ('kind = "nats"\nurl = "nats://127.0.0.1:4222"', "js:no.stream.{tag}"),  # no stream
])
async def test_enqueue_a_broker_refuses_is_503_and_released(
        tmp_path: Path, broker: str, destination: str) -> None:
    tag = uuid.uuid4().hex[:8]
    app, base = await _start(tmp_path, f"""
[key-value.hooks]
backend = "sqlite"

[brokers.events]
{broker}

[[trigger.http]]
route = "/ingest"

[trigger.http.webhook]
scheme = "github"
secrets = ["gh-secret"]

[trigger.http.webhook.idempotency]
store = "hooks"

[trigger.http.enqueue]
broker = "events"
destination = "{destination.format(tag=tag)}"
timeout-ms = 3000
""")
    try:
        delivery = uuid.uuid4().hex
        async with httpx.AsyncClient() as http:
            for _ in range(2):  # released each time: the retry is tried, not 409 or 200
                r = await http.post(f"{base}/ingest", content=b"{}",
                                    headers=_signed(b"{}", delivery))
                assert (r.status_code, r.content) == (503, b"not enqueued, retry later\n")
    finally:
        await app.stop()
