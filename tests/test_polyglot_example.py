"""examples/polyglot: its Python api and JavaScript worker build with `wasmgate build` and
answer `wasmgate invoke` with the sample events; the api's order lands on the Redis stream.

The `[[trigger.redis-streams]]` table is dropped from the test's copy of the manifest while
that trigger kind is unknown (its adapter is developed on another branch): `invoke` loads
every trigger table, and only the handlers are under test here.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import json
import os
import shutil
import sys
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from bindings import SDK_DIR, WIT_DIR
from bindings.js import TOOLCHAIN_DIR, toolchain_problem
from gateway.cli import main
from gateway.errors import ConfigError
from tests.fixtures.build import BUILD
from triggers.base import factory_for

pytestmark = pytest.mark.wasm

EXAMPLE = Path(__file__).parents[1] / "examples" / "polyglot"
REDIS_URL = "redis://127.0.0.1:6379/0"


def _built_example(monkeypatch: pytest.MonkeyPatch) -> Path:
    """Return a directory holding build/api.wasm and build/worker.wasm, built once per digest
    of the handlers, the WIT and the JS toolchain lock."""
    digest = hashlib.sha256()
    inputs = sorted([*(EXAMPLE / "handlers").rglob("app.*"), EXAMPLE / "wasmgate.toml",
                     *SDK_DIR.glob("*.py"),
                     *WIT_DIR.glob("*.wit"), TOOLCHAIN_DIR / "package-lock.json"])
    for path in inputs:
        digest.update(str(path.relative_to(EXAMPLE.parents[1])).encode() + path.read_bytes())
    cached = BUILD / f"polyglot-{digest.hexdigest()[:16]}"
    BUILD.mkdir(parents=True, exist_ok=True)
    # Two pytest-xdist workers may both want it: one builds (in the example's own build
    # directory, which they would otherwise share), the other waits and reuses it.
    with open(BUILD / "polyglot.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (cached / "worker.wasm").exists():
            _build_into(cached, monkeypatch)
    return cached


def _build_into(cached: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    problem = toolchain_problem()
    if problem is not None:
        if os.environ.get("CI"):
            pytest.fail(f"JavaScript toolchain missing in CI: {problem}")
        pytest.skip(f"the JavaScript worker cannot be built here: {problem}")
    # Built in place with the example's own build commands (`wasmgate componentize` and
    # `python -m bindings.js`, from this venv). Outputs land in examples/polyglot/build/
    # (git-ignored).
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}"
                               f"{os.environ['PATH']}")
    assert main(["build", str(EXAMPLE / "wasmgate.toml")]) == 0
    tmp = cached.with_name(f"{cached.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name in ("api.wasm", "worker.wasm"):
        shutil.copy2(EXAMPLE / "build" / name, tmp / name)
    tmp.replace(cached)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    built = _built_example(monkeypatch)
    root = tmp_path / "polyglot"
    shutil.copytree(EXAMPLE, root, ignore=shutil.ignore_patterns("build", ".wasmgate"))
    shutil.copytree(built, root / "build")
    manifest = root / "wasmgate.toml"
    try:
        factory_for("redis-streams", manifest_path=str(manifest))
    except ConfigError:
        text = manifest.read_text()
        manifest.write_text(text[:text.index("[[trigger.redis-streams]]")])
    monkeypatch.setenv("REDIS_URL", REDIS_URL)
    return root


def _invoke(project: Path, component: str, event: Mapping[str, object],
            capsys: pytest.CaptureFixture[str]) -> tuple[str, str]:
    path = project / f"{uuid.uuid4().hex[:8]}.json"
    path.write_text(json.dumps(event))
    capsys.readouterr()
    code = main(["invoke", component, "--event", str(path),
                 "--manifest", str(project / "wasmgate.toml")])
    out = capsys.readouterr().out
    assert code == 0, out
    head, _, body = out.partition("\n\n")
    return head.splitlines()[0], body.rstrip("\n")


def test_sample_events_run_through_both_languages(project: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    entry = json.loads((project / "events" / "entry.json").read_text())
    status, body = _invoke(project, "worker", entry, capsys)
    assert (status, body) == ("status: 200", "processed 1")
    # A redelivered entry (same order id) is not counted twice.
    assert _invoke(project, "worker", entry, capsys) == ("status: 200", "duplicate")
    # The Python side reads the count the JavaScript side wrote in the shared store.
    stats = {"specversion": "1.0", "type": "t", "source": "test", "subject": "/orders/stats",
             "metadata": {"method": "GET"}}
    status, body = _invoke(project, "api", stats, capsys)
    assert (status, json.loads(body)) == ("status: 200", {"processed": 1})


def test_order_is_queued_on_the_redis_stream(project: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    import redis

    order = json.loads((project / "events" / "order.json").read_text())
    order["id"] = f"order-{uuid.uuid4().hex}"
    status, body = _invoke(project, "api", order, capsys)
    assert status == "status: 201"
    receipt = json.loads(body)
    assert receipt["id"] == order["id"]
    client = redis.Redis.from_url(REDIS_URL)
    try:
        entries: Any = client.xrange("orders", min=receipt["queued"], max=receipt["queued"])
        assert len(entries) == 1
        fields = entries[0][1]
        # The layout the redis-streams trigger reads: data, key, then headers.
        assert fields[b"key"] == order["id"].encode()
        assert fields[b"content-type"] == b"application/json"
        assert json.loads(fields[b"data"]) == {"item": "tea", "qty": 2, "id": order["id"]}
        client.xdel("orders", receipt["queued"])
    finally:
        client.close()


async def test_http_in_python_to_queue_in_javascript_end_to_end(
        project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole example running: POST /orders (Python) -> Redis stream -> the JavaScript
    worker through the redis-streams trigger -> the count the Python side reports."""
    import socket

    import httpx
    import redis

    from gateway.app import App

    # A database of its own, emptied first: the example's stream name is fixed.
    url = "redis://127.0.0.1:6379/9"
    monkeypatch.setenv("REDIS_URL", url)
    client = redis.Redis.from_url(url)
    client.flushdb()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        listen = f"127.0.0.1:{s.getsockname()[1]}"
    app = App.load(project / "wasmgate.toml", listen=listen)
    await app.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://{listen}") as http:
            created = await http.post("/orders", json={"item": "tea", "qty": 2})
            assert created.status_code == 201, created.text
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 30
            while (await http.get("/orders/stats")).json()["processed"] != 1:
                assert loop.time() < deadline, "the JavaScript worker never counted the order"
                await asyncio.sleep(0.1)
        await app.stop()
        # Stopped gracefully, so settled: acked, nothing left pending in the worker's group.
        pending: Any = client.xpending("orders", "order-workers")
        assert pending["pending"] == 0
    finally:
        await app.stop()
        client.flushdb()
        client.close()
