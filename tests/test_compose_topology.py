"""The compose demo's topology with local processes instead of containers.

compose/docker-compose.yml runs two gateway replicas of compose/shop against Kafka, NATS,
RabbitMQ, Redis and PostgreSQL. No Docker engine runs here, so this test starts the same
two replicas as `wasmgate up` processes against the loopback services (Kafka is a private
tansu), sends orders to the webhook and follows them through every broker:

  POST /webhooks/orders -> Kafka -> orders (Postgres) -> JetStream -> notify (kv)
                                                      -> RabbitMQ  -> invoice (Postgres)
                                                      -> Redis stream -> audit (kv)
  cron (claimed once per tick across the replicas) -> report (Postgres -> kv)
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures.build import build_handler
from tests.kafka_broker import Tansu, free_port

pytestmark = pytest.mark.wasm

REPO = Path(__file__).resolve().parents[1]
SHOP = REPO / "compose" / "shop"
POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
# The replicas connect as the least-privilege role compose/postgres/init.sql creates, as in
# compose; the fixture uses the superuser only to create that role and to clean up.
APP_POSTGRES_URL = "postgresql://shop_app@127.0.0.1:5432/test"


@pytest.fixture
def shop(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    """The shop app in a temporary directory, its handler built, its brokers emptied."""
    import psycopg
    import redis

    root = tmp_path / "shop"
    shutil.copytree(SHOP, root, ignore=shutil.ignore_patterns("build", ".wasmgate"))
    (root / "build").mkdir()
    wasm = build_handler("shop", src=SHOP / "handlers" / "shop")
    shutil.copy2(wasm, root / "build" / "shop.wasm")
    # tansu makes every group join wait the whole rebalance timeout (see tests/kafka_broker.py).
    manifest = root / "wasmgate.toml"
    manifest.write_text(manifest.read_text().replace(
        'group = "shop-orders"', 'group = "shop-orders"\nsession-timeout-ms = 3000\n'
        "heartbeat-interval-ms = 500\nfetch-max-wait-ms = 100"))
    kafka = Tansu()
    kafka.start()
    redis_db = 11
    env = {**os.environ, "PYTHONPATH": str(REPO),
           "KAFKA_URL": f"kafka://127.0.0.1:{kafka.port}",
           "REDIS_URL": f"redis://127.0.0.1:6379/{redis_db}", "POSTGRES_URL": APP_POSTGRES_URL}
    client = redis.Redis.from_url(env["REDIS_URL"])
    client.flushdb()
    with psycopg.connect(POSTGRES_URL, autocommit=True) as pg:
        pg.execute("DROP TABLE IF EXISTS orders, invoices")
        pg.execute((REPO / "compose" / "postgres" / "init.sql").read_text().encode())
    asyncio.run(_create_topics(kafka.port))
    try:
        yield root, env
    finally:
        kafka.stop()
        client.flushdb()
        client.close()
        asyncio.run(_drop_broker_state())
        with psycopg.connect(POSTGRES_URL, autocommit=True) as pg:
            pg.execute("DROP TABLE IF EXISTS orders, invoices")


async def _create_topics(port: int) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=f"127.0.0.1:{port}")
    await admin.start()
    try:
        await admin.create_topics([NewTopic("orders", 3, 1), NewTopic("orders-dead", 1, 1)])
    finally:
        await admin.close()


async def _drop_broker_state() -> None:
    import aio_pika
    import nats

    nc = await nats.connect("nats://127.0.0.1:4222")
    js = nc.jetstream()
    for stream in ("SHOP", "SHOP-dead-letter"):
        try:
            await js.delete_stream(stream)
        except Exception:
            continue
    await nc.close()
    connection = await aio_pika.connect("amqp://guest:guest@127.0.0.1:5672/")
    channel = await connection.channel()
    for queue in ("shop.invoices", "shop.invoices.dead"):
        await channel.queue_delete(queue)
    for exchange in ("shop", "shop.dead"):
        await channel.exchange_delete(exchange)
    await connection.close()


def _replica(root: Path, env: dict[str, str], port: int, name: str) -> subprocess.Popen[bytes]:
    # The child keeps its own copy of the log's descriptor; ours is closed at once.
    with open(root / f"{name}.log", "wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "up", str(root / "wasmgate.toml"),
             "--listen", f"127.0.0.1:{port}"],
            cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=log)


def _wait_until(check: Any, what: str, replicas: list[subprocess.Popen[bytes]],
                timeout: float = 90) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        for replica in replicas:
            assert replica.poll() is None, f"a replica exited while waiting for {what}"
        try:
            value = check()
            if value:
                return value
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


def test_orders_flow_through_every_broker_with_two_replicas(
        shop: tuple[Path, dict[str, str]]) -> None:
    import psycopg

    root, env = shop
    ports = [free_port(), free_port()]
    replicas = [_replica(root, env, port, f"replica{i}") for i, port in enumerate(ports)]
    gateway = f"http://127.0.0.1:{ports[0]}"
    try:
        _wait_until(lambda: httpx.get(f"{gateway}/healthz").status_code == 200, "replica 0",
                    replicas)
        _wait_until(lambda: httpx.get(f"http://127.0.0.1:{ports[1]}/healthz")
                    .status_code == 200, "replica 1", replicas)
        ids = [f"o-{uuid.uuid4().hex[:6]}" for _ in range(3)]
        for i, order_id in enumerate(ids):
            reply = httpx.post(f"{gateway}/webhooks/orders",
                               json={"id": order_id, "customer": f"c-{i % 2}", "total": 10.0})
            assert reply.status_code == 202, reply.text
            assert reply.json()["receipt"].startswith("orders/")
        # Bad input is refused at the edge, and nothing is published.
        assert httpx.post(f"{gateway}/webhooks/orders", content=b"{").status_code == 400

        def delivered() -> bool:
            stats = httpx.get(f"{gateway}/stats").json()
            return bool(stats["notified"] == 3 and stats["audited"] == 3)
        _wait_until(delivered, "JetStream and Redis Streams consumers", replicas)

        with psycopg.connect(POSTGRES_URL, autocommit=True) as pg:
            def invoiced() -> bool:
                rows = pg.execute("SELECT order_id FROM invoices").fetchall()
                return sorted(r[0] for r in rows) == sorted(ids)
            _wait_until(invoiced, "the RabbitMQ consumer's invoices", replicas)
            orders = pg.execute("SELECT count(*) FROM orders").fetchone()
            assert orders == (3,)

        def reported() -> bool:
            report = httpx.get(f"{gateway}/stats").json()["report"]
            return bool(report and report["orders"] == 3)
        _wait_until(reported, "the cron report (every 10 s)", replicas, timeout=40)

        for replica in replicas:
            replica.send_signal(signal.SIGTERM)
        assert [replica.wait(timeout=60) for replica in replicas] == [0, 0]
    finally:
        for replica in replicas:
            if replica.poll() is None:
                replica.kill()
                replica.wait(timeout=30)
