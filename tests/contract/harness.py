"""The contract every broker adapter is tested against, written once.

A :class:`BrokerHarness` knows how to reach one broker for one test: a fresh
topic/subject/queue/stream, the TOML for ``[brokers.b]`` and ``[[trigger.<kind>]]``, how to
publish, how to read the dead-letter destination, and how to cut the gateway's connection.
Each broker module in ``tests/contract/brokers/`` defines ``HARNESS`` (a class) and the
suite in ``test_contract.py`` runs against each.

The component under test is ``tests/fixtures/handlers/contract``: the payload says what it
does and it records every run in key-value, which :class:`Gateway` reads back.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

from bindings.host.kv import SqliteKeyValue
from bindings.types import Event, Response
from gateway.app import App
from tests.broker_process import BrokerProcess
from tests.fixtures.build import build_handler

REPO = Path(__file__).resolve().parents[2]


@dataclass
class DeadLetter:
    """A message found at the dead-letter destination, normalised across brokers."""

    data: bytes
    headers: dict[str, str] = field(default_factory=dict)


class BrokerHarness(Protocol):
    """One broker, one fresh destination, for one test."""

    name: ClassVar[str]            # e.g. "redis-streams"; the pytest id
    trigger_kind: ClassVar[str]    # the [[trigger.<kind>]] it drives
    redelivers: ClassVar[bool]     # at-least-once: unacked messages come back
    dead_letters: ClassVar[bool]   # has a dead-letter destination
    # After a restart, how long an unacked message may take to come back (ack wait,
    # visibility timeout, session timeout); also how long to watch for wrong redeliveries.
    redelivery_window_s: ClassVar[float]
    # The private broker process of a private() harness (None on the shared broker).
    server: BrokerProcess | None

    async def setup(self) -> None:
        """Create the fresh destination (and the dead-letter one)."""

    async def teardown(self) -> None:
        """Delete what setup created; close the test's own clients."""

    def broker_toml(self) -> str:
        """The body of ``[brokers.b]``."""

    def trigger_toml(self, **options: Any) -> str:
        """The body of ``[[trigger.<kind>]]`` (component = "contract", broker = "b", plus
        ``options`` rendered as TOML: concurrency, ordering, max-attempts, ...)."""

    async def publish(self, payload: bytes, *, key: bytes | None = None,
                      headers: dict[str, str] | None = None) -> None:
        """Publish one message to the destination the trigger consumes."""

    async def read_dead_letters(self) -> list[DeadLetter]:
        """Every message now at the dead-letter destination."""

    async def break_dead_letters(self) -> None:
        """Make the dead-letter destination refuse writes while the source still works
        (the dead-letter exchange, stream or topic deleted, or the key of another type)."""

    async def mend_dead_letters(self) -> None:
        """After :meth:`break_dead_letters`: the destination takes writes again."""

    async def interrupt(self) -> None:
        """Sever the gateway's broker connection mid-stream (kill and restart a private
        broker, or close connections server side) and return once the broker is back.
        Called on a harness from :meth:`private`."""

    async def take_down(self) -> None:
        """Make the broker unreachable for a gateway configured from now on (private())."""

    async def bring_up(self) -> None:
        """After :meth:`take_down`: the broker answers again."""

    @classmethod
    def private(cls) -> AbstractAsyncContextManager[BrokerHarness]:
        """A harness (already set up) bound to a broker that :meth:`interrupt` may break
        without disturbing the shared service: a private process on a free port, or the
        shared RabbitMQ with its connections closed server side."""

    async def wait_ready(self, app: App) -> None:
        """Return once the app's trigger is consuming (group joined, subscribed)."""


def toml_value(value: Any) -> str:
    """A Python value as a TOML value (enough for trigger options)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot render {value!r} as TOML")


def toml_options(options: dict[str, Any]) -> str:
    return "".join(f"{k} = {toml_value(v)}\n" for k, v in options.items())


class HarnessBase:
    """The parts of :class:`BrokerHarness` that most brokers share.

    A subclass names its broker (``broker_kind``, ``url``, ``reconnect``) and its
    destination (:meth:`trigger_options`); :meth:`private` and :meth:`interrupt` serve
    harnesses built as ``cls(url, server)`` around a private :class:`BrokerProcess`.
    """

    name: ClassVar[str]
    trigger_kind: ClassVar[str]
    redelivers: ClassVar[bool]
    dead_letters: ClassVar[bool]
    redelivery_window_s: ClassVar[float]
    broker_kind: ClassVar[str]  # [brokers.b] kind
    # Short reconnect backoff, so fault tests see the gateway back within a second.
    reconnect: ClassVar[dict[str, int]] = {"reconnect-min-ms": 100, "reconnect-max-ms": 1000}

    def __init__(self, url: str, server: BrokerProcess | None = None) -> None:
        self.url = url
        self.server = server

    async def setup(self) -> None:
        """Nothing to create (a subclass creates its destination here)."""

    async def teardown(self) -> None:
        """Nothing to delete."""

    def broker_toml(self) -> str:
        return toml_options({"kind": self.broker_kind, "url": self.url, **self.reconnect})

    def trigger_options(self) -> dict[str, Any]:
        """What names this test's destination in ``[[trigger.<kind>]]``."""
        raise NotImplementedError

    def trigger_toml(self, **options: Any) -> str:
        return toml_options({"component": "contract", "broker": "b",
                             **self.trigger_options(), **options})

    async def wait_ready(self, app: App) -> None:
        await wait_triggers_ready(app, self.trigger_kind)

    @classmethod
    def private_server(cls) -> BrokerProcess:
        raise NotImplementedError(f"{cls.name}: no private broker process")

    @classmethod
    @asynccontextmanager
    async def private(cls) -> AsyncIterator[Any]:
        server = cls.private_server()
        await server.start()
        harness = cls(server.url, server)
        try:
            await harness.setup()
            yield harness
            await harness.teardown()
        finally:
            server.close()

    async def take_down(self) -> None:
        """Make the broker unreachable for a gateway configured from now on (a private()
        harness); :meth:`bring_up` makes it answer again."""
        assert self.server is not None, "take_down() needs a private() harness"
        self.server.kill()

    async def bring_up(self) -> None:
        assert self.server is not None, "bring_up() needs a private() harness"
        await self.server.start()
        await self.reconnected()

    async def interrupt(self) -> None:
        assert self.server is not None, "interrupt() needs a private() harness"
        await self.server.restart()
        await self.reconnected()

    async def reconnected(self) -> None:
        """After :meth:`interrupt` restarted the broker: the harness's own client is back."""


async def wait_triggers_ready(app: App, kind: str, timeout: float = 30.0) -> None:
    """Until every trigger of ``kind`` has joined its group / confirmed its subscriptions."""
    for trigger in app.triggers:
        if trigger.kind == kind:
            ready: asyncio.Event = trigger.ready  # type: ignore[attr-defined]
            await asyncio.wait_for(ready.wait(), timeout)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def message(mid: str, op: str = "ok", **extra: Any) -> bytes:
    return json.dumps({"id": mid, "op": op, **extra}).encode()


async def wait_until(predicate: Callable[[], bool], *, timeout: float = 30.0,
                     what: str = "condition", state: Callable[[], str] | None = None) -> None:
    """Poll ``predicate`` until it holds; fail with ``what`` (and ``state()``, what was seen
    instead) after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            seen = f"; seen: {state()}" if state is not None else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {what}{seen}")
        await asyncio.sleep(0.05)


class Gateway:
    """Writes the manifest for one harness and runs the app in process or as a process."""

    def __init__(self, harness: BrokerHarness, directory: Path) -> None:
        self.harness = harness
        self.directory = directory
        self.kv_path = directory / "kv.sqlite"
        self.manifest = directory / "wasmgate.toml"
        self._probe: SqliteKeyValue | None = None
        self.max_in_flight = 0
        self._in_flight = 0

    def write(self, *, timeout_ms: int = 5000, max_instances: int = 8,
              **trigger_options: Any) -> None:
        wasm = build_handler("contract")
        self.manifest.write_text(f"""
[application]
name = "contract-{self.harness.name}"

[key-value.default]
path = "{self.kv_path}"

[brokers.b]
{self.harness.broker_toml()}

[component.contract]
source = "{wasm}"
timeout-ms = {timeout_ms}
max-instances = {max_instances}
key-value-stores = ["default"]

[[trigger.{self.harness.trigger_kind}]]
{self.harness.trigger_toml(**trigger_options)}
""")

    @asynccontextmanager
    async def running(self, *, wait_ready: bool = True) -> AsyncIterator[App]:
        """The app, started in this process and counting its concurrent handler calls;
        with ``wait_ready=False`` it does not wait for the trigger (the broker may be
        unreachable)."""
        app = App.load(self.manifest)
        invoke = app.dispatcher._invoke

        async def counting(component: str, event: Event) -> Response:
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
            try:
                return await invoke(component, event)
            finally:
                self._in_flight -= 1

        app.dispatcher._invoke = counting
        await app.start()
        try:
            if wait_ready:
                await self.harness.wait_ready(app)
            yield app
        finally:
            await app.stop()

    def spawn(self) -> subprocess.Popen[bytes]:
        """``wasmgate up`` as a separate process (for hard-stop tests)."""
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        # The child gets its own copy of the log's descriptor; ours is closed at once (an
        # unclosed file is a ResourceWarning, an error under filterwarnings = error).
        with open(self.directory / "gateway.log", "wb") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "gateway.cli", "up", str(self.manifest)],
                cwd=self.directory, env=env, stdout=subprocess.DEVNULL, stderr=log,
            )

    @staticmethod
    def kill(process: subprocess.Popen[bytes]) -> None:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)

    # -- reading what the handler recorded ----------------------------------------------

    @property
    def kv(self) -> SqliteKeyValue:
        if self._probe is None:
            self._probe = SqliteKeyValue(self.kv_path, name="probe")
        return self._probe

    def count(self, kind: str, mid: str) -> int:
        value = self.kv.get(f"{kind}:{mid}")
        return int(value) if value else 0

    def started(self, mid: str) -> bool:
        return self.kv.exists(f"started:{mid}")

    @property
    def in_flight(self) -> int:
        """Handler calls running now (the dispatcher's view)."""
        return self._in_flight

    def order(self, key: str) -> list[str]:
        n = self.count("seq", key)
        return [(self.kv.get(f"order:{key}:{i}") or b"?").decode() for i in range(1, n + 1)]

    def close(self) -> None:
        if self._probe is not None:
            self._probe.close()


Poll = Callable[[], Awaitable[list[DeadLetter]]]


async def wait_for_dead_letters(read: Poll, count: int, *, timeout: float = 30.0
                                ) -> list[DeadLetter]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        found = await read()
        if len(found) >= count:
            return found
        if loop.time() > deadline:
            raise AssertionError(f"expected {count} dead letters, found {len(found)}")
        await asyncio.sleep(0.1)
