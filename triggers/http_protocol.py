"""The HTTP/1.1 connection protocol: uvicorn's httptools protocol plus a header deadline
and a send deadline.

uvicorn (0.54) bounds only the idle time *between* requests (keep-alive), and any byte
cancels that timer. A connection that opens and sends nothing, or trickles its request line
and headers (slowloris), is held forever, and the ASGI app cannot help: it is called only
once the headers are complete. This protocol arms a deadline when a connection opens and
when a request's first byte arrives, and disarms it when the headers are complete. On expiry
it answers 408 and closes (or just closes if no request had begun, as for an idle socket a
browser opened ahead of time).

The body is bounded separately, per route, by the ASGI app (``body-timeout-ms``).

uvicorn has no write timeout either: a client that stops reading (slow read) keeps its
connection, the request's task and every byte of the response queued for it, for as long
as it likes; many such clients hold memory without bound. When the transport's buffer is
full (``pause_writing``) and the client takes nothing for ``send-timeout-ms``, the
connection is aborted, which drops the queued bytes and ends the request's pending send.
"""

from __future__ import annotations

import asyncio
from typing import Any

import structlog
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gateway import metrics

log = structlog.get_logger("wasmgate.http")

_TIMEOUT_BODY = b"request headers took too long\n"
_REQUEST_TIMEOUT = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain\r\n"
                    b"content-length: %d\r\nconnection: close\r\n\r\n%s"
                    % (len(_TIMEOUT_BODY), _TIMEOUT_BODY))


def protocol_class(*, header_timeout: float, keep_alive_timeout: float,
                   send_timeout: float) -> type[HttpToolsProtocol]:
    """Return a uvicorn protocol class with these deadlines, in seconds."""

    class GatewayHttpProtocol(_HeaderDeadlineProtocol):
        pass

    GatewayHttpProtocol.header_timeout = header_timeout
    GatewayHttpProtocol.keep_alive_timeout = keep_alive_timeout
    GatewayHttpProtocol.send_timeout = send_timeout
    return GatewayHttpProtocol


class _HeaderDeadlineProtocol(HttpToolsProtocol):
    header_timeout: float = 10.0
    keep_alive_timeout: float = 5.0
    send_timeout: float = 30.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # uvicorn.Config types its keep-alive timeout as whole seconds; the protocol only
        # hands it to call_later, so a float in our own attribute gives millisecond control.
        self.timeout_keep_alive = self.keep_alive_timeout  # type: ignore[assignment]
        self._header_deadline: asyncio.TimerHandle | None = None
        self._send_deadline: asyncio.TimerHandle | None = None
        self._request_begun = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_CoalescingTransport(transport, self.loop))
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._resume_sending()
        super().connection_lost(exc)

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._send_deadline is None:
            self._send_deadline = self.loop.call_later(self.send_timeout, self._send_stalled)

    def resume_writing(self) -> None:
        self._resume_sending()
        super().resume_writing()

    def _resume_sending(self) -> None:
        if self._send_deadline is not None:
            self._send_deadline.cancel()
            self._send_deadline = None

    def _send_stalled(self) -> None:
        self._send_deadline = None
        if self.transport.is_closing() and self.transport.get_write_buffer_size() == 0:
            return
        metrics.counter("wasmgate_http_stalled_clients_total",
                        "Connections aborted because the client took no response bytes "
                        "for send-timeout-ms.")
        log.warning("client stopped reading the response; connection dropped",
                    client=_peer(self.client), queued_bytes=self.transport.get_write_buffer_size(),
                    send_timeout_ms=int(self.send_timeout * 1000))
        # abort, not close: close would keep the queued bytes until the client reads them.
        self.transport.abort()

    def _unsupported_upgrade_warning(self) -> None:
        # The gateway runs uvicorn without WebSockets (ws="none", triggers/http.py): an
        # `Upgrade` header is ignored, as RFC 9110 7.8 allows, and the request is served as
        # plain HTTP. uvicorn would log two warnings per such request (one telling to
        # install a WebSocket library), which any client could make it write.
        pass

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._request_begun = True
        self._arm()  # a no-op right after connect: the deadline counts from the accept

    def on_headers_complete(self) -> None:
        self._disarm()
        self._request_begun = False
        super().on_headers_complete()

    def _arm(self) -> None:
        if self._header_deadline is None:
            self._header_deadline = self.loop.call_later(self.header_timeout, self._expire)

    def _disarm(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _expire(self) -> None:
        self._header_deadline = None
        if self.transport.is_closing():
            return
        # A response still being written (a pipelined request ahead of this one) must not
        # be interleaved with ours: then the connection is just closed.
        answering = self.cycle is not None and not self.cycle.response_complete
        if self._request_begun and not answering:
            self.transport.write(_REQUEST_TIMEOUT)
        self.transport.close()


def _peer(client: tuple[str, int] | None) -> str | None:
    return f"{client[0]}:{client[1]}" if client else None


class _CoalescingTransport(asyncio.Transport):
    """Sends the writes made in one event-loop step as one ``send``.

    uvicorn writes a response's head and body separately, so every small response costs two
    syscalls, and wakes the client twice (once for a head it cannot use yet). Holding the
    writes until the end of the loop step adds no waiting: the head and body of a response
    are written in the same step.
    """

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._pending:
            self._loop.call_soon(self._flush)
        self._pending.append(bytes(data))

    def _flush(self) -> None:
        if self._pending:
            data = b"".join(self._pending)
            self._pending.clear()
            if not self._transport.is_closing():
                self._transport.write(data)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def abort(self) -> None:
        self._pending.clear()
        self._transport.abort()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._flush()
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(map(len, self._pending))

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._transport.set_write_buffer_limits(high, low)

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()

    def write_eof(self) -> None:
        self._flush()
        self._transport.write_eof()


__all__ = ["protocol_class"]
