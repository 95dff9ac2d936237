"""Accept and enqueue: a verified request becomes one broker message, confirmed by the
broker before the provider gets its 202.

The message is the raw body, the route's selected request headers and the delivery id as
its key, sent with the app's shared producers (:class:`bindings.host.publish.BrokerClients`,
which wait for the broker's confirmation on every kind). A queue trigger then processes it
with its delivery guarantees; the provider never waits on a slow handler.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from bindings.host.publish import BrokerClients, OutboundMessage, PublishError
from gateway.errors import WasmgateError


class EnqueueFailed(WasmgateError):
    """The broker did not confirm the message (down, refused, or too slow)."""


def _sent_bytes(value: str) -> bytes:
    """A header value's bytes as the provider sent them: the HTTP server decoded them as
    latin-1 (any byte), and the producers would encode the text as UTF-8, so a UTF-8
    "café" became "cafÃ©" on the queue."""
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:  # not from the HTTP server: already text
        return value.encode()


class Enqueuer:
    """Publishes one route's verified requests to its destination."""

    def __init__(self, clients: BrokerClients, *, broker: str, destination: str,
                 headers: list[str], timeout_ms: int) -> None:
        self.clients = clients
        self.broker = broker
        self.destination = destination
        self.headers = [h.lower() for h in headers]
        self.timeout_s = timeout_ms / 1000

    async def publish(self, headers: Mapping[str, str], body: bytes,
                      delivery_id: str | None) -> str:
        """Send the message; return the broker's receipt (a stream id, an offset)."""
        message = OutboundMessage(
            broker=self.broker, destination=self.destination,
            key=None if delivery_id is None else _sent_bytes(delivery_id),
            headers=[(name, _sent_bytes(headers[name]).decode("utf-8", "replace"))
                     for name in self.headers if name in headers],
            body=body)
        try:
            async with asyncio.timeout(self.timeout_s):
                return await self.clients.publish(message)
        except TimeoutError:
            raise EnqueueFailed(
                f"broker `{self.broker}` did not confirm within {self.timeout_s * 1000:.0f} "
                f"ms (`timeout-ms` of [trigger.http.enqueue])") from None
        except PublishError as exc:
            raise EnqueueFailed(str(exc)) from None


__all__ = ["EnqueueFailed", "Enqueuer"]
