"""examples/webhook end to end: a GitHub-style delivery, signed with the README's own
`openssl dgst` command, is verified, enqueued on Redis Streams (202), consumed by the
Python handler through the redis-streams trigger; a redelivery is answered 200 unqueued."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import tomllib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from bindings.host.kv_redis import RedisKeyValue
from gateway.app import App
from tests.fixtures.build import build_handler

pytestmark = pytest.mark.wasm

EXAMPLE = Path(__file__).parents[1] / "examples" / "webhook"
REDIS_URL = "redis://127.0.0.1:6379/0"
BODY = b'{"ref": "refs/heads/main", "zen": "Design for failure."}'


def _openssl_signature(body: bytes, secret: str) -> str:
    """The README's command: printf '%s' "$BODY" | openssl dgst -sha256 -hmac "$SECRET"."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    out = subprocess.run(["openssl", "dgst", "-sha256", "-hmac", secret], input=body,
                         capture_output=True, check=True).stdout.decode()
    return "sha256=" + out.split()[-1]  # "SHA2-256(stdin)= <hex>" -> "<hex>"


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    root = tmp_path / "webhook"
    shutil.copytree(EXAMPLE, root, ignore=shutil.ignore_patterns("build", ".wasmgate"))
    (root / "build").mkdir()
    shutil.copy2(build_handler("webhook-consumer", EXAMPLE / "handlers" / "consumer"),
                 root / "build" / "consumer.wasm")
    stream = f"test-webhook-example-{uuid.uuid4().hex}"
    monkeypatch.setenv("REDIS_URL", REDIS_URL)
    monkeypatch.setenv("WEBHOOK_STREAM", stream)
    yield root
    client = redis.Redis.from_url(REDIS_URL)
    client.delete(stream, f"{stream}-dead")
    client.close()


async def test_a_signed_delivery_is_enqueued_consumed_and_deduplicated(project: Path) -> None:
    secret = tomllib.loads((project / "secrets.toml").read_text())["github-webhook-secret"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        listen = f"127.0.0.1:{s.getsockname()[1]}"
    app = App.load(project / "wasmgate.toml", listen=listen)
    await app.start()
    client: Any = redis.Redis.from_url(REDIS_URL)
    delivery = str(uuid.uuid4())
    headers = {"content-type": "application/json", "x-github-event": "push",
               "x-github-delivery": delivery,
               "x-hub-signature-256": _openssl_signature(BODY, secret)}
    try:
        async with httpx.AsyncClient(base_url=f"http://{listen}") as http:
            forged = await http.post("/github", content=BODY,
                                     headers={**headers, "x-hub-signature-256": "sha256=00"})
            assert forged.status_code == 401
            accepted = await http.post("/github", content=BODY, headers=headers)
            assert accepted.status_code == 202, accepted.text
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 30
            while (await http.get("/stats")).json() != {"events": {"push": 1}}:
                assert loop.time() < deadline, "the consumer never counted the delivery"
                await asyncio.sleep(0.05)
            again = await http.post("/github", content=BODY, headers=headers)
            assert (again.status_code, again.text) == (200, "already processed\n")
        assert client.xlen(os.environ["WEBHOOK_STREAM"]) == 1  # the redelivery was not queued
    finally:
        await app.stop()
        client.close()
        # Through the store, so its size accounting stays right for the next run.
        deliveries = RedisKeyValue(REDIS_URL, name="deliveries",
                                   prefix="wasmgate:webhook:deliveries:")
        deliveries.delete(f"webhook:/github:{delivery}")
        deliveries.close()
