"""A private ``nats-server -js`` on a free port, for tests that kill and restart a broker
without touching the shared one on 4222."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.broker_process import BrokerProcess


def nats_server_binary() -> str:
    found = shutil.which("nats-server") or "/usr/sbin/nats-server"
    if not Path(found).exists():
        raise RuntimeError("nats-server not found; install Debian's nats-server package")
    return found


class NatsServer(BrokerProcess):
    """One private broker process; its JetStream store survives a kill and restart."""

    name = "nats-server"

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [nats_server_binary(), "-js", "-a", "127.0.0.1", "-p", str(self.port),
                "-sd", str(self.directory)]
