"""``wasmgate up --workers N``: scale one host up with worker processes.

One process runs its triggers, dispatch and settling on one asyncio loop (the guests run
on the native pool's threads, GIL released), and that loop is what tops out first: more
throughput on one host means more processes. Each worker is a full
``wasmgate up`` of the same manifest; the brokers share the work out (consumer groups,
queue groups, durable consumers, competing consumers) and the HTTP port is shared with
SO_REUSEPORT, so the kernel spreads connections. Cron runs in worker 0 only, unless the
trigger has a ``claim-store`` (then the workers claim each tick like replicas do).

The supervisor compiles every component once before spawning (the workers then load the
cache in milliseconds instead of compiling N times at once), restarts a worker that dies
with backoff, and on SIGINT/SIGTERM asks every worker to stop gracefully; a second signal
kills them at once (what they had not acked is redelivered by the brokers).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from types import FrameType

import structlog

log = structlog.get_logger("wasmgate.workers")

WORKER_INDEX_ENV = "WASMGATE_WORKER_INDEX"
REUSE_PORT_ENV = "WASMGATE_REUSE_PORT"
_RESTART_MAX_S = 30.0
_CONFIG_ERROR = 2  # `wasmgate up` exits 2 on a WasmgateError: restarting will not help


def worker_index() -> int:
    """This process's worker number (0 when not started by the supervisor)."""
    value = os.environ.get(WORKER_INDEX_ENV, "0")
    return int(value) if value.isdigit() else 0


def run_workers(manifest: str, listen: str, count: int) -> int:
    from gateway.app import App  # here: the HTTP trigger imports this module's constants

    # Validate and compile once, here: a bad manifest fails once, not N times, and the
    # workers find every component in the compile cache.
    app = App.load(manifest, listen=listen)
    app.engine.close()
    supervisor = _Supervisor(manifest, listen, count)
    return supervisor.run()


class _Supervisor:
    def __init__(self, manifest: str, listen: str, count: int) -> None:
        self.manifest = manifest
        self.listen = listen
        self.count = count
        self.children: dict[int, subprocess.Popen[bytes]] = {}
        self.restarts: dict[int, int] = {}
        self.signals = 0

    def spawn(self, index: int) -> None:
        env = {**os.environ, WORKER_INDEX_ENV: str(index), REUSE_PORT_ENV: "1"}
        # A session of its own: a Ctrl-C on the terminal reaches the supervisor only, which
        # then stops every worker once (a worker seeing two signals would exit at once).
        self.children[index] = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "up", self.manifest, "--listen", self.listen],
            env=env, start_new_session=True)
        log.info("worker started", worker=index, pid=self.children[index].pid)

    def on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self.signals += 1
        sig = signal.SIGTERM if self.signals == 1 else signal.SIGKILL
        if self.signals == 1:
            log.info("stopping workers: they finish in-flight events", workers=self.count)
        for child in self.children.values():
            if child.poll() is None:
                child.send_signal(sig)

    def run(self) -> int:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self.on_signal)
        for index in range(self.count):
            self.spawn(index)
        while True:
            time.sleep(0.2)
            if self.signals:
                if all(child.poll() is not None for child in self.children.values()):
                    return 130 if self.signals > 1 else 0
                continue
            for index, child in list(self.children.items()):
                code = child.poll()
                if code is None:
                    continue
                if code == _CONFIG_ERROR:
                    log.error("worker exited on a configuration error; stopping", worker=index)
                    self.on_signal(signal.SIGTERM, None)
                    break
                self.restarts[index] = self.restarts.get(index, 0) + 1
                delay = min(_RESTART_MAX_S, 0.5 * 2 ** (self.restarts[index] - 1))
                log.error("worker died; restarting", worker=index, exit_code=code,
                          restarts=self.restarts[index], delay_s=delay)
                time.sleep(delay)
                if not self.signals:
                    self.spawn(index)


__all__ = ["REUSE_PORT_ENV", "WORKER_INDEX_ENV", "run_workers", "worker_index"]
