"""What the two NATS adapters (``nats`` and ``nats-jetstream``) share: one client connection
built from a ``[brokers.<name>]`` table, its state changes logged once each, and the small
helpers for NATS headers and subjects.

nats-py reconnects by itself (``max_reconnect_attempts = -1``: forever, also for the first
connection) and restores core subscriptions after a reconnect, so the adapters do not run
their own reconnect loop; they only learn about state changes through the callbacks here.
"""

from __future__ import annotations

import asyncio
import contextlib

import nats
import structlog
from nats.aio.client import Client

from gateway.brokers.nats import connect_options
from gateway.manifest import BrokerSpec
from gateway.redaction import redact_url
from triggers.closing import close_quietly
from triggers.delivery import ConnectionWatch, describe

log = structlog.get_logger("wasmgate.nats")

# nats-py waits a fixed interval between reconnect attempts (it has no exponential
# backoff); this is the interval when the broker table's min/max leave room for it.
_RECONNECT_WAIT_S = 1.0


class NatsConnection:
    """One nats-py client for one trigger, connecting in the background until it succeeds."""

    def __init__(self, trigger: str, broker: str, spec: BrokerSpec, *, manifest_path: str,
                 field: str) -> None:
        self.spec = spec
        self.address = redact_url(spec.url)
        self.watch = ConnectionWatch(trigger, broker, spec)
        self.client = Client()
        self._options = connect_options(broker, spec, path=manifest_path)
        self._connecting: asyncio.Task[None] | None = None
        self._closing = False

    async def connect(self) -> Client:
        """The connected client; waits (forever, retrying) until the broker answers."""
        if self._connecting is None:
            self._connecting = asyncio.create_task(self._connect(), name=f"nats-connect:"
                                                   f"{self.watch.trigger}")
        await asyncio.shield(self._connecting)
        return self.client

    async def _connect(self) -> None:
        spec = self.spec
        wait_s = min(spec.reconnect_max_ms / 1000, max(spec.reconnect_min_ms / 1000,
                                                         _RECONNECT_WAIT_S))
        await self.client.connect(
            name=f"wasmgate:{self.watch.trigger}",
            reconnect_time_wait=wait_s,  # type: ignore[arg-type]  # nats-py accepts floats
            max_reconnect_attempts=-1,
            error_cb=self._on_error,
            disconnected_cb=self._on_disconnected,
            reconnected_cb=self._on_reconnected,
            **self._options,
        )
        self.watch.up()

    async def _on_error(self, error: Exception) -> None:
        if isinstance(error, OSError | TimeoutError | nats.errors.NoServersError
                      | nats.errors.StaleConnectionError | nats.errors.UnexpectedEOF):
            self.watch.lost(error)
        elif isinstance(error, nats.errors.SlowConsumerError):
            # Core NATS drops what a subscription cannot buffer: say so, loudly.
            log.error("slow consumer: the broker or client dropped messages",
                      trigger=self.watch.trigger, subject=error.subject,
                      pending_limit_reached=True)
        else:
            log.warning("nats client error", trigger=self.watch.trigger, error=describe(error))

    async def _on_disconnected(self) -> None:
        if self.watch.state == "up" and not self._closing:
            self.watch.lost(ConnectionError(f"disconnected from {self.address}"))

    async def _on_reconnected(self) -> None:
        self.watch.up()

    async def close(self) -> None:
        """Flush what is buffered (acks, replies) when connected, then close."""
        self._closing = True  # our own close is not an outage worth a warning
        if self._connecting is not None and not self._connecting.done():
            self._connecting.cancel()
            await asyncio.gather(self._connecting, return_exceptions=True)
        if self.client.is_connected:
            try:
                await self.client.flush(timeout=5)
            except Exception as exc:  # a close must not fail on a broker going away
                log.warning("could not flush before closing", trigger=self.watch.trigger,
                            error=describe(exc))
        if not self.client.is_closed:
            await close_quietly(self.client.close(), what="nats connection")


async def confirm_subscriptions(client: Client, *, timeout_s: float) -> bool:
    """Return once the server holds every subscription ``client`` has sent so far (True),
    or False when that could not be seen within ``timeout_s``.

    ``Client.flush()`` cannot promise this: nats-py (2.16) writes its PING straight to the
    socket while a SUB may still sit in the client's pending buffer, so the PONG can come
    back before the server has the SUB, and a message published meanwhile on another
    connection never reaches us (seen as the first message after start going missing in
    about 1 of 160 runs on a loaded machine). A message we publish to ourselves queues
    behind the SUB in that same buffer, and the server handles one connection's commands
    in order: once it comes back, every earlier subscription is in place.
    """
    probe = await client.subscribe(client.new_inbox(), max_msgs=1)
    await client.publish(probe.subject, b"")
    try:
        await probe.next_msg(timeout=timeout_s)
    except nats.errors.TimeoutError:
        with contextlib.suppress(nats.errors.Error):  # closed meanwhile: nothing to undo
            await probe.unsubscribe()
        return False
    return True


def header_pairs(headers: dict[str, str] | None) -> list[tuple[str, str]]:
    """nats-py's header dict as the event's list of pairs."""
    return list(headers.items()) if headers else []


def header_dict(pairs: list[tuple[str, str]]) -> dict[str, str]:
    """Pairs as NATS headers (a repeated name keeps its last value: nats-py headers are a
    dict)."""
    return dict(pairs)


def content_type(headers: dict[str, str] | None) -> str | None:
    if not headers:
        return None
    for name, value in headers.items():
        if name.lower() == "content-type":
            return value
    return None


def subject_matches(pattern: str, subject: str) -> bool:
    """Whether a NATS subject ``pattern`` (``*`` = one token, ``>`` = the rest) matches
    ``subject``; used to refuse a dead-letter subject that would flow back into the input."""
    want = pattern.split(".")
    have = subject.split(".")
    for i, token in enumerate(want):
        if token == ">":
            return len(have) > i
        if i >= len(have) or (token != "*" and token != have[i]):
            return False
    return len(want) == len(have)


__all__ = ["NatsConnection", "confirm_subscriptions", "content_type", "header_dict",
           "header_pairs", "subject_matches"]
