"""NATS adapter behaviour the shared contract suite does not cover: request/reply, queue
groups, a broker that is down at start, in-progress heartbeats, a dead-letter stream that
is missing, and a broker restart while a handler runs. Real brokers on loopback: the
shared one on 4222, or a private nats-server for faults."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client
from nats.js.api import AckPolicy, ConsumerConfig

from bindings.host.kv import SqliteKeyValue
from gateway.app import App
from tests.contract.harness import message, unique, wait_until
from tests.contract.nats_server import NatsServer
from tests.fixtures.build import build_handler

pytestmark = pytest.mark.wasm
SHARED = "nats://127.0.0.1:4222"


def write_app(directory: Path, url: str, kind: str, body: str, *, timeout_ms: int = 5000
              ) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    manifest = directory / "wasmgate.toml"
    manifest.write_text(f"""
[application]
name = "nats-test"

[key-value.default]
path = "{directory / 'kv.sqlite'}"

[brokers.b]
kind = "nats"
url = "{url}"
connect-timeout-ms = 1000
reconnect-min-ms = 100
reconnect-max-ms = 300

[component.contract]
source = "{build_handler('contract')}"
timeout-ms = {timeout_ms}
key-value-stores = ["default"]

[[trigger.{kind}]]
component = "contract"
broker = "b"
{body}
""")
    return manifest


@asynccontextmanager
async def running(manifest: Path, *, wait_ready: bool = True) -> AsyncIterator[App]:
    app = App.load(manifest)
    await app.start()
    try:
        if wait_ready:
            for trigger in app.triggers:
                await asyncio.wait_for(trigger.ready.wait(), 30)  # type: ignore[attr-defined]
        yield app
    finally:
        await app.stop()


def count(directory: Path, name: str) -> int:
    kv = SqliteKeyValue(directory / "kv.sqlite", name="probe")
    try:
        value = kv.get(name)
        return int(value) if value else 0
    finally:
        kv.close()


@pytest.fixture
async def client() -> AsyncIterator[Client]:
    nc = await nats.connect(SHARED)
    yield nc
    await nc.close()


# -- NATS core ---------------------------------------------------------------------------

async def test_a_request_gets_the_handler_response_or_an_error_status(
        tmp_path: Path, client: Client) -> None:
    base = f"req.{unique('r')}"
    manifest = write_app(tmp_path, SHARED, "nats",
                         f'subject = "{base}"\nmax-attempts = 2\ninitial-backoff-ms = 20\n',
                         timeout_ms=300)
    async with running(manifest):
        ok = await client.request(base, message("r1"), timeout=10)
        assert ok.data == b"ok:r1"
        assert ok.headers is not None
        assert ok.headers["wasmgate-status"] == "200"
        assert ok.headers["x-contract-id"] == "r1"
        assert "Nats-Service-Error-Code" not in ok.headers

        poison = await client.request(base, message("r2", "status", n=422), timeout=10)
        assert poison.headers is not None
        assert poison.headers["Nats-Service-Error-Code"] == "422"
        assert poison.data == b"status"

        failed = await client.request(base, message("r3", "err"), timeout=10)
        assert failed.headers is not None
        assert failed.headers["Nats-Service-Error-Code"] == "500"
        assert "failed on purpose" in failed.headers["Nats-Service-Error"]

        slow = await client.request(base, message("r4", "loop"), timeout=10)
        assert slow.headers is not None
        assert slow.headers["Nats-Service-Error-Code"] == "504"
    # The failing request was retried (max-attempts = 2) before its one reply.
    assert count(tmp_path, "runs:r3") == 2


async def test_a_queue_group_shares_messages_between_gateways(
        tmp_path: Path, client: Client) -> None:
    base = f"queue.{unique('q')}"
    body = f'subject = "{base}"\nqueue = "workers"\nconcurrency = 2\n'
    dirs = [tmp_path / "one", tmp_path / "two"]
    ids = [f"q{i}" for i in range(20)]
    async with running(write_app(dirs[0], SHARED, "nats", body)) as one, \
            running(write_app(dirs[1], SHARED, "nats", body)) as two:
        for mid in ids:
            await client.publish(base, message(mid, "slow", ms=20))
        await client.flush()
        await wait_until(lambda: sum(count(d, f"done:{m}") for d in dirs for m in ids) == 20,
                         what="every message once")
        handled = [t.handled for t in (*one.triggers, *two.triggers)]  # type: ignore[attr-defined]
    assert sum(handled) == 20
    assert all(n > 0 for n in handled), handled
    assert all(sum(count(d, f"runs:{m}") for d in dirs) == 1 for m in ids)


async def test_graceful_stop_sends_the_reply_of_a_request_in_flight(
        tmp_path: Path, client: Client) -> None:
    base = f"req.{unique('s')}"
    manifest = write_app(tmp_path, SHARED, "nats", f'subject = "{base}"\n')
    async with running(manifest):
        reply = asyncio.create_task(client.request(base, message("s1", "slow", ms=800),
                                                   timeout=10))
        await wait_until(lambda: count(tmp_path, "runs:s1") == 1, what="the handler to start")
    # app.stop() returned: the reply must already be on its way.
    assert (await reply).data == b"ok:s1"


# -- JetStream ---------------------------------------------------------------------------

@pytest.fixture
async def private() -> AsyncIterator[NatsServer]:
    server = NatsServer()
    await server.start()
    yield server
    server.close()


async def test_in_progress_heartbeats_keep_slow_and_queued_messages_from_redelivery(
        tmp_path: Path, private: NatsServer) -> None:
    ident = unique("hb")
    manifest = write_app(tmp_path, private.url, "nats-jetstream",
                         f'stream = "{ident}"\nconsumer = "gw"\ncreate = true\n'
                         f'subjects = ["{ident}.>"]\nack-wait-ms = 600\nconcurrency = 1\n')
    nc = await nats.connect(private.url)
    js = nc.jetstream()
    try:
        async with running(manifest):
            # Each runs 1.5 ack-waits; the second also waits 2 ack-waits for its turn.
            for mid in ("s1", "s2"):
                await js.publish(f"{ident}.k", message(mid, "slow", ms=900))
            await wait_until(lambda: count(tmp_path, "done:s2") == 1, what="both messages")
            await asyncio.sleep(1.5)  # past ack-wait: a missed heartbeat would show now
            info = await js.consumer_info(ident, "gw")
        assert (count(tmp_path, "runs:s1"), count(tmp_path, "runs:s2")) == (1, 1)
        assert info.num_ack_pending == 0 and info.num_redelivered == 0
    finally:
        await nc.close()


async def test_a_dead_letter_without_a_stream_is_kept_until_one_stores_it(
        tmp_path: Path, private: NatsServer) -> None:
    ident = unique("dlq")
    nc = await nats.connect(private.url)
    js = nc.jetstream()
    await js.add_stream(name=ident, subjects=[f"{ident}.>"])
    await js.add_consumer(ident, ConsumerConfig(durable_name="gw", ack_policy=AckPolicy.EXPLICIT))
    manifest = write_app(tmp_path, private.url, "nats-jetstream",
                         f'stream = "{ident}"\nconsumer = "gw"\n'
                         f'dead-letter = "dead.{ident}"\nmax-backoff-ms = 200\n')
    try:
        async with running(manifest):
            await js.publish(f"{ident}.x", message("p1", "status", n=422))
            await wait_until(lambda: count(tmp_path, "runs:p1") >= 2,
                             what="the poison message kept and tried again")
            await js.add_stream(name=f"{ident}-dlq", subjects=[f"dead.{ident}"])

            async def stored() -> int:
                return (await js.stream_info(f"{ident}-dlq")).state.messages

            loop = asyncio.get_running_loop()
            deadline = loop.time() + 20
            while await stored() < 1:
                assert loop.time() < deadline, "the dead letter never reached its stream"
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.5)
            info = await js.consumer_info(ident, "gw")
        assert await stored() == 1
        assert info.num_ack_pending == 0 and info.num_pending == 0
    finally:
        await nc.close()


async def test_a_broker_restart_while_a_handler_runs_loses_nothing(
        tmp_path: Path, private: NatsServer) -> None:
    ident = unique("restart")
    manifest = write_app(tmp_path, private.url, "nats-jetstream",
                         f'stream = "{ident}"\nconsumer = "gw"\ncreate = true\n'
                         f'subjects = ["{ident}.>"]\nack-wait-ms = 1000\n')
    nc = await nats.connect(private.url, max_reconnect_attempts=-1)
    js = nc.jetstream()
    try:
        async with running(manifest):
            await js.publish(f"{ident}.x", message("r1", "slow", ms=1200))
            await wait_until(lambda: count(tmp_path, "runs:r1") == 1, what="the handler")
            await private.restart()
            await wait_until(lambda: count(tmp_path, "done:r1") >= 1, what="the handler")

            async def settled() -> bool:
                try:
                    info = await js.consumer_info(ident, "gw")
                except Exception:
                    return False  # JetStream still recovering
                return info.num_ack_pending == 0 and info.num_pending == 0

            loop = asyncio.get_running_loop()
            deadline = loop.time() + 30
            while not await settled():
                assert loop.time() < deadline, "the message was never acked"
                await asyncio.sleep(0.2)
    finally:
        await nc.close()
