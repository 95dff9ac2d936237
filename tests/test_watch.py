"""`wasmgate watch`: an edited component is rebuilt and swapped into the running gateway
while requests keep flowing over real HTTP, none dropped; a failed rebuild keeps the old
version serving. Builds are cheap shell commands (tests/cheap_builds.py): each version
answers `<prefix.txt>:<body>`, so every reply says which version handled it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from structlog.testing import capture_logs

from gateway.app import App
from gateway.build import build_all
from gateway.watch import ComponentWatcher
from tests.broker_process import free_port
from tests.cheap_builds import builds, write_app


@dataclass
class Running:
    root: Path
    app: App
    watcher: ComponentWatcher
    url: str
    stop: asyncio.Event = field(default_factory=asyncio.Event)


@pytest.fixture
async def running(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Running]:
    monkeypatch.setenv("WASMGATE_CACHE_DIR", str(tmp_path / "cache"))
    manifest = write_app(tmp_path, ["alpha", "beta"], http=True)
    await asyncio.to_thread(build_all, manifest)
    listen = f"127.0.0.1:{free_port()}"
    app = App.load(manifest, listen=listen)
    await app.start()
    watcher = ComponentWatcher(app, interval=0.05, settle=0.1)
    state = Running(tmp_path, app, watcher, f"http://{listen}/alpha")
    task = asyncio.create_task(watcher.run(state.stop))
    try:
        yield state
    finally:
        state.stop.set()
        await task
        await app.stop()


class Traffic:
    """A few clients posting to a route back to back until stopped; every reply is kept
    per client, in order."""

    def __init__(self, url: str, clients: int = 4) -> None:
        self.url = url
        self.replies: list[list[tuple[int, str]]] = [[] for _ in range(clients)]
        self._done = asyncio.Event()
        self._tasks = [asyncio.create_task(self._client(i)) for i in range(clients)]

    async def _client(self, i: int) -> None:
        async with httpx.AsyncClient(timeout=30) as client:
            while not self._done.is_set():
                reply = await client.post(self.url, content=f"c{i}")
                self.replies[i].append((reply.status_code, reply.text))

    def seen(self, prefix: str) -> bool:
        return any(text.startswith(prefix) for replies in self.replies for _, text in replies)

    async def wait_for(self, prefix: str, timeout: float = 30) -> None:
        async with asyncio.timeout(timeout):
            while not self.seen(prefix):
                await asyncio.sleep(0.02)

    async def finish(self) -> list[list[tuple[int, str]]]:
        self._done.set()
        await asyncio.gather(*self._tasks)
        return self.replies


def _versions(replies: list[tuple[int, str]]) -> list[str]:
    return [text.split(":", 1)[0] for _, text in replies]


async def test_an_edit_is_swapped_in_while_requests_flow_and_none_is_dropped(
        running: Running) -> None:
    traffic = Traffic(running.url)
    await traffic.wait_for("v001:")
    (running.root / "handlers" / "alpha" / "prefix.txt").write_text("v002")
    await traffic.wait_for("v002:")
    await asyncio.sleep(0.2)  # and more requests after the swap
    replies = await traffic.finish()

    assert running.watcher.swapped == ["alpha"]
    assert builds(running.root).count("alpha") == 2 and builds(running.root).count("beta") == 1
    for i, client in enumerate(replies):
        assert all(status == 200 for status, _ in client), client
        assert all(text.endswith(f":c{i}") for _, text in client)  # every one answered
        versions = _versions(client)
        # Old replies by the old code, later ones by the new: never back to the old.
        assert versions == sorted(versions), versions
        assert versions[0] == "v001"
    assert any(_versions(c)[-1] == "v002" for c in replies)


async def test_a_failed_rebuild_keeps_the_old_version_serving(running: Running) -> None:
    prefix = running.root / "handlers" / "alpha" / "prefix.txt"
    traffic = Traffic(running.url, clients=2)
    await traffic.wait_for("v001:")
    with capture_logs() as logs:
        prefix.write_text("FAIL")
        async with asyncio.timeout(30):
            while not running.watcher.failed:
                await asyncio.sleep(0.02)
    await asyncio.sleep(0.2)
    assert running.watcher.failed == ["alpha"]
    assert running.watcher.swapped == []
    failure = next(e for e in logs if e["event"].startswith("rebuild failed"))
    assert failure["component"] == "alpha"
    assert "build of component `alpha`" in failure["error"]

    prefix.write_text("v003")  # fixed: the next save swaps it in
    await traffic.wait_for("v003:")
    replies = await traffic.finish()
    assert running.watcher.swapped == ["alpha"]
    for client in replies:
        assert all(status == 200 for status, _ in client), client
        assert set(_versions(client)) <= {"v001", "v003"}


async def test_touching_a_file_without_changing_it_rebuilds_nothing(running: Running) -> None:
    prefix = running.root / "handlers" / "beta" / "prefix.txt"
    with capture_logs() as logs:
        prefix.write_text(prefix.read_text())  # a new mtime, the same content
        async with asyncio.timeout(10):
            while not any(e["event"].startswith("inputs unchanged") for e in logs):
                await asyncio.sleep(0.02)
    assert builds(running.root).count("beta") == 1
    assert running.watcher.swapped == []
