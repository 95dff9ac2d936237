"""Host capabilities through a real component (tests/fixtures/handlers/caps): kv on SQLite and
Redis, sql on SQLite and PostgreSQL, outbound HTTP, publish to real brokers, config and
secrets. Each grant is also checked from the other side: without it, the guest gets a clear
error value, the call is logged with the component and event id, and the gateway serves on.
"""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import structlog

from bindings.types import Event, new_event_id
from gateway.app import App
from tests.fixtures.build import build_handler
from triggers.nats_connection import confirm_subscriptions

pytestmark = pytest.mark.wasm

REDIS_URL = "redis://127.0.0.1:6379/0"
POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
NATS_URL = "nats://127.0.0.1:4222"
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"

Call = Callable[..., Any]


def _manifest(tmp_path: Path, component_extra: str, extra: str = "") -> Path:
    wasm = build_handler("caps")
    path = tmp_path / "wasmgate.toml"
    path.write_text(f"""
[application]
name = "caps-{uuid.uuid4().hex[:8]}"

[variables]
token = {{ secret = true }}
greeting = {{ default = "hello" }}

[brokers.nats]
kind = "nats"
url = "{NATS_URL}"

[brokers.redis]
kind = "redis"
url = "{REDIS_URL}"

[brokers.rabbit]
kind = "amqp"
url = "{AMQP_URL}"

[sql.local]
backend = "sqlite"

[sql.pg]
backend = "postgres"
url = "{POSTGRES_URL}"

[key-value.cache]
backend = "redis"
url = "{REDIS_URL}"

[component.caps]
source = "{wasm}"
{component_extra}
{extra}
""")
    return path


@pytest.fixture
async def app_factory(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    apps: list[App] = []

    async def make(component_extra: str = "", extra: str = "") -> Call:
        app = App.load(_manifest(tmp_path, component_extra, extra))
        apps.append(app)

        async def call(**msg: Any) -> Any:
            event = Event(id=new_event_id(), source="test", type="test",
                          data=json.dumps(msg).encode())
            response = await app.invoke("caps", event)
            assert response.status == 200
            return json.loads(response.body)
        return call

    yield make
    for app in apps:
        await app.stop()


# -- kv ----------------------------------------------------------------------------------


async def test_kv_grant_is_enforced_and_get_returns_an_error_value(app_factory: Any) -> None:
    call = await app_factory('key-value-stores = ["default"]')
    assert await call(op="kv-set", store="default", key="k", value="v") == {"ok": True}
    assert await call(op="kv-get", store="default", key="k") == {"ok": "v"}
    refused = await call(op="kv-get", store="cache", key="k")
    # An error value the guest can handle, not a trap: the gateway's kv.get lowering fix.
    assert "no grant for key-value store `cache`" in refused["err"]
    assert "key-value-stores" in refused["err"]


async def test_kv_value_over_the_size_limit_is_an_error_value(app_factory: Any) -> None:
    call = await app_factory('key-value-stores = ["default"]')
    result = await call(op="kv-set", store="default", key="big", value="x" * (1 << 20 | 1))
    assert "over the limit" in result["err"]


async def test_kv_on_redis_through_the_component(app_factory: Any) -> None:
    call = await app_factory('key-value-stores = ["cache"]')
    key = f"hits-{uuid.uuid4().hex[:6]}"
    assert await call(op="kv-incr", store="cache", key=key, by=2) == {"ok": 2}
    assert await call(op="kv-incr", store="cache", key=key, by=3) == {"ok": 5}
    assert await call(op="kv-get", store="cache", key=key) == {"ok": "5"}
    await call(op="kv-set", store="cache", key="word", value="abc")
    not_int = await call(op="kv-incr", store="cache", key="word")
    assert "not an ASCII decimal integer" in not_int["err"]


# -- sql ---------------------------------------------------------------------------------


async def test_sql_on_sqlite_returns_typed_rows(app_factory: Any) -> None:
    call = await app_factory('sql-databases = ["local"]')
    await call(op="sql-exec", db="local", sql="CREATE TABLE t (i INTEGER, r REAL, s TEXT)")
    inserted = await call(op="sql-exec", db="local", sql="INSERT INTO t VALUES (?, ?, ?), "
                          "(?, ?, ?)", params=[1, 2.5, "a", 2, None, "b'; DROP TABLE t; --"])
    assert inserted == {"ok": 2}
    rows = await call(op="sql-query", db="local", sql="SELECT i, r, s FROM t ORDER BY i")
    assert rows == {"ok": {"columns": ["i", "r", "s"],
                           "rows": [[1, 2.5, "a"], [2, None, "b'; DROP TABLE t; --"]]}}


async def test_sql_errors_and_missing_grants_are_error_values(app_factory: Any) -> None:
    call = await app_factory('sql-databases = ["local"]')
    syntax = await call(op="sql-query", db="local", sql="SELEKT 1")
    assert "database `local`" in syntax["err"] and "syntax error" in syntax["err"]
    refused = await call(op="sql-query", db="pg", sql="SELECT 1")
    assert "no grant for sql database `pg`" in refused["err"]
    # The component keeps working after both.
    assert (await call(op="sql-query", db="local", sql="SELECT 41 + 1 AS n"))["ok"]["rows"] \
        == [[42]]


async def test_sql_on_postgres_with_dollar_placeholders(app_factory: Any) -> None:
    call = await app_factory('sql-databases = ["pg"]')
    table = f"caps_{uuid.uuid4().hex[:8]}"
    await call(op="sql-exec", db="pg", sql=f"CREATE TABLE {table} (id int, price numeric, "
               "ok boolean, note text, at timestamptz DEFAULT '2026-01-02T03:04:05Z')")
    try:
        # The WIT has no boolean: a flag goes in as an integer and the statement converts it.
        inserted = await call(op="sql-exec", db="pg", sql=f"INSERT INTO {table} "
                              "(id, price, ok, note) VALUES ($1, $2, $3 <> 0, $4)",
                              params=[7, 1.25, 1, "50% off"])
        assert inserted == {"ok": 1}
        rows = await call(op="sql-query", db="pg",
                          sql=f"SELECT id, price, ok, note, at FROM {table} WHERE id = $1",
                          params=[7])
        assert rows["ok"]["columns"] == ["id", "price", "ok", "note", "at"]
        [[rid, price, ok, note, at]] = rows["ok"]["rows"]
        assert (rid, price, ok, note) == (7, 1.25, 1, "50% off")
        assert at.startswith("2026-01-02")
        bad = await call(op="sql-query", db="pg", sql=f"SELECT nope FROM {table}")
        assert "database `pg`" in bad["err"] and "nope" in bad["err"]
    finally:
        await call(op="sql-exec", db="pg", sql=f"DROP TABLE {table}")


# -- outbound http -----------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/big":
            body = b"x" * 4096
        elif self.path == "/slow":
            threading.Event().wait(2)
            body = b"late"
        else:
            body = b"pong"
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def web() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


async def test_outbound_http_only_to_allowed_hosts_with_limits(app_factory: Any,
                                                               web: str) -> None:
    call = await app_factory(f'allowed-outbound-hosts = ["{web}"]\n'
                             "outbound-timeout-ms = 500\noutbound-max-response-bytes = 1024")
    assert await call(op="http", url=f"{web}/ping") == {"ok": {"status": 200, "body": "pong"}}
    other = await call(op="http", url="http://127.0.0.1:1/ping")
    assert "may not call http://127.0.0.1:1" in other["err"]
    assert "allowed-outbound-hosts" in other["err"]
    big = await call(op="http", url=f"{web}/big")
    assert "over the limit of 1024 bytes" in big["err"]
    slow = await call(op="http", url=f"{web}/slow")
    assert "timed out after 500 ms" in slow["err"]


async def test_outbound_http_denied_by_default(app_factory: Any, web: str) -> None:
    call = await app_factory()
    denied = await call(op="http", url=f"{web}/ping")
    assert "may not make outbound requests" in denied["err"]


# -- publish -----------------------------------------------------------------------------


async def test_publish_to_nats_core_and_jetstream(app_factory: Any) -> None:
    import nats

    subject = f"caps.{uuid.uuid4().hex[:8]}"
    call = await app_factory(f'publish = ["nats:{subject}", "nats:js:{subject}.js"]')
    nc = await nats.connect(NATS_URL)
    js = nc.jetstream()
    stream = f"CAPS_{uuid.uuid4().hex[:8]}"
    await js.add_stream(name=stream, subjects=[f"{subject}.js"])
    try:
        sub = await nc.subscribe(subject)
        assert await confirm_subscriptions(nc, timeout_s=10)
        receipt = await call(op="publish", broker="nats", destination=subject, body="hi",
                             headers=[["x-h", "1"]])
        assert receipt == {"ok": "confirmed"}
        msg = await sub.next_msg(timeout=5)
        assert msg.data == b"hi" and msg.headers == {"x-h": "1"}
        acked = await call(op="publish", broker="nats", destination=f"js:{subject}.js",
                           body="durable")
        assert acked == {"ok": f"{stream}:1"}
    finally:
        await js.delete_stream(stream)
        await nc.close()


async def test_publish_to_a_redis_stream_and_channel(app_factory: Any) -> None:
    import redis.asyncio as aredis

    stream = f"caps-{uuid.uuid4().hex[:8]}"
    call = await app_factory(f'publish = ["redis:stream:{stream}", "redis:news"]')
    r = aredis.Redis.from_url(REDIS_URL)
    try:
        receipt = await call(op="publish", broker="redis", destination=f"stream:{stream}",
                             key="k1", body="payload", headers=[["x-h", "1"]])
        [(entry_id, fields)] = await r.xrange(stream)
        assert receipt == {"ok": entry_id.decode()}
        assert fields == {b"data": b"payload", b"key": b"k1", b"x-h": b"1"}
        assert await call(op="publish", broker="redis", destination="news", body="x") == \
            {"ok": "0 receivers"}
    finally:
        await r.delete(stream)
        await r.aclose()


async def test_publish_to_amqp_with_confirms_and_unroutable_is_an_error(app_factory: Any
                                                                         ) -> None:
    import aio_pika

    queue_name = f"caps-{uuid.uuid4().hex[:8]}"
    call = await app_factory(f'publish = ["rabbit:/{queue_name}", "rabbit:/nowhere-*"]')
    connection = await aio_pika.connect_robust(AMQP_URL)
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(queue_name, auto_delete=True)
        assert await call(op="publish", broker="rabbit", destination=f"/{queue_name}",
                          body="job", headers=[["x-h", "1"]]) == {"ok": "confirmed"}
        message = await queue.get(timeout=5)
        assert message.body == b"job" and message.headers["x-h"] == "1"
        await message.ack()
        lost = await call(op="publish", broker="rabbit", destination="/nowhere-123", body="x")
        assert "failed" in lost["err"]
    finally:
        await connection.close()


async def test_publish_refused_without_a_grant_or_to_an_undeclared_broker(app_factory: Any
                                                                          ) -> None:
    call = await app_factory('publish = ["nats:orders.*"]')
    outside = await call(op="publish", broker="nats", destination="payments.new", body="x")
    assert "may not publish to 'payments.new' on broker `nats`" in outside["err"]
    undeclared = await call(op="publish", broker="kafka", destination="orders.new", body="x")
    assert "no broker named `kafka`" in undeclared["err"]
    nothing = await (await app_factory())(op="publish", broker="nats", destination="a",
                                          body="x")
    assert "has no `publish` grants" in nothing["err"]


# -- config, secrets and logs ------------------------------------------------------------


async def test_secrets_reach_the_guest_but_never_the_log(tmp_path: Path) -> None:
    (tmp_path / "secrets.toml").write_text('token = "s3cr3t-value"\n')
    path = _manifest(tmp_path, "")
    path.write_text(path.read_text().replace('name = "caps-',
                                             'secrets-file = "secrets.toml"\nname = "caps-'))
    app = App.load(path)
    try:
        async def run(**msg: Any) -> Any:
            event = Event(id="evt-42", source="t", type="t", data=json.dumps(msg).encode())
            return json.loads((await app.invoke("caps", event)).body)

        assert await run(op="config", name="token") == {"ok": "s3cr3t-value"}
        with structlog.testing.capture_logs(
                processors=[structlog.contextvars.merge_contextvars]) as logs:
            await run(op="log", message="token is s3cr3t-value")
            await run(op="kv-get", store="nope", key="k")
        lines = [entry for entry in logs if entry.get("component") == "caps"]
        assert any(e["event"] == "token is ***" for e in lines)
        assert all("s3cr3t-value" not in json.dumps(e, default=str) for e in logs)
        refusal = next(e for e in lines if e["event"] == "host call refused or failed")
        assert refusal["event_id"] == "evt-42"
    finally:
        await app.stop()


async def test_a_secrets_file_with_an_undeclared_name_is_a_clear_error(tmp_path: Path) -> None:
    from gateway.errors import ConfigError

    (tmp_path / "secrets.toml").write_text('tokn = "x"\n')
    path = _manifest(tmp_path, "")
    path.write_text(path.read_text().replace('name = "caps-',
                                             'secrets-file = "secrets.toml"\nname = "caps-'))
    with pytest.raises(ConfigError) as info:
        App.load(path)
    assert "secrets.toml" in str(info.value) and "'tokn' is not a declared variable" in str(
        info.value)


async def test_publish_to_kafka_waits_for_the_ack(tmp_path: Path) -> None:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from tests.kafka_broker import shared_broker

    kafka = shared_broker()
    topic = f"caps-{uuid.uuid4().hex[:8]}"
    path = _manifest(tmp_path, f'publish = ["events:{topic}"]',
                     f'\n[brokers.events]\nkind = "kafka"\nurl = "kafka://127.0.0.1:{kafka.port}"\n')
    app = App.load(path)
    try:
        event = Event(id=new_event_id(), source="t", type="t", data=json.dumps({
            "op": "publish", "broker": "events", "destination": topic, "key": "c-1",
            "body": "order", "headers": [["x-h", "1"]]}).encode())
        receipt = json.loads((await app.invoke("caps", event)).body)["ok"]
        name, partition, offset = receipt.split("/")
        assert name == topic
        consumer = AIOKafkaConsumer(bootstrap_servers=f"127.0.0.1:{kafka.port}")
        await consumer.start()
        try:
            where = TopicPartition(topic, int(partition))
            consumer.assign([where])
            consumer.seek(where, int(offset))
            record = await asyncio.wait_for(consumer.getone(), 10)
        finally:
            await consumer.stop()
        assert (record.key, record.value, record.headers) == (b"c-1", b"order",
                                                              (("x-h", b"1"),))
    finally:
        await app.stop()
