"""Redis pub/sub behaviour beyond the contract suite: it says at start that it is at most
once, and a broker down at start is retried and logged once. Real redis-server."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from gateway.app import App
from tests.contract.brokers.redis_pubsub import RedisPubSubHarness
from tests.contract.harness import Gateway, message, wait_until
from tests.redis_server import RedisServer

pytestmark = pytest.mark.wasm


async def test_says_at_most_once_and_subscribes_when_the_broker_comes_up(
        tmp_path: Path) -> None:
    server = RedisServer(persistent=False)
    harness = RedisPubSubHarness(server.url, server)
    gateway = Gateway(harness, tmp_path)
    gateway.write()
    app = App.load(gateway.manifest)
    try:
        with capture_logs() as logs:
            await app.start()
            try:
                await asyncio.sleep(2.5)  # several reconnect attempts (reconnect-max 1 s)
                await server.start()
                await harness.wait_ready(app)
                await harness.publish(message("late"))
                await wait_until(lambda: gateway.count("done", "late") == 1, what="late")
            finally:
                await app.stop()
        assert any("at most once" in e["event"] for e in logs)
        assert len([e for e in logs if e["event"].startswith("broker unavailable")]) == 1
        assert len([e for e in logs if e["event"] == "broker connected"]) == 1
    finally:
        await harness.teardown()
        gateway.close()
        server.close()
