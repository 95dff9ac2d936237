"""A ``wasi:http`` component's response body, streamed to the HTTP client as it is written.

The HTTP trigger binds a :class:`ResponseSlot` to :data:`STREAMED_RESPONSE` around one
dispatch. When the route's component is a ``wasi:http`` one, the executor asks the native
pool for the response's head as soon as the guest calls ``response-outparam.set``
(native/src/wasi_http.rs): the call returns then with the status and headers, and the body
goes into the slot as a :class:`StreamedResponse` while the guest keeps running and writing.

Between the guest and the client is a bounded channel of a few chunks: a client that reads
slowly makes the guest's writes wait. The whole body is bounded by the event's
``timeout-ms``, counted from the call's start: past it the stream is closed, the guest's
next write fails, and the client sees the connection closed mid-body; a client that stops
reading altogether is cut the same way (the HTTP trigger bounds each send by the
deadline). So is a body over ``max-response-bytes``, and one whose guest traps or times
out after its head was sent: the status is on the wire already, so cutting the connection
is the only way to tell the client the body is incomplete. Each cut is logged and counted
(``wasmgate_http_cut_responses_total``).

The admission slot of the call stays held until the guest's call has ended, body included.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import AsyncGenerator, Callable

from gateway import _native, metrics


class ResponseCut(Exception):
    """The streamed body ended before the guest finished it (``str()`` says why)."""


class StreamedResponse:
    """The body of a response whose head was already returned; read it once with
    :meth:`chunks`. ``ended`` resolves with the call's outcome, once the guest is done."""

    def __init__(self, stream: _native.ResponseStream, deadline: float,
                 ended: asyncio.Future[_native.CallResult],
                 settle: Callable[[_native.CallResult], str | None]) -> None:
        self._stream = stream
        self._deadline = deadline
        self._ended = ended
        self._settle = settle

    async def chunks(self) -> AsyncGenerator[bytes]:
        """The body's chunks as the guest writes them; raises :class:`ResponseCut` when it
        was cut off (size, trap, timeout, the deadline) instead of ending."""
        loop = asyncio.get_running_loop()
        ready = asyncio.Event()
        fd = self._stream.fileno()
        watching = False

        def woken() -> None:
            self._stream.clear()
            ready.set()

        try:
            while True:
                try:
                    chunk = self._stream.try_next()
                except _native.ResponseCut as exc:
                    raise ResponseCut(await self._reason(str(exc))) from None
                if chunk is None:
                    # Nothing yet: wait for the stream's eventfd. `woken` clears it
                    # before the next look, so a chunk arriving in between wakes us.
                    # Watched only from the first wait: a small body is often whole
                    # by the time the head is read, and then costs no epoll calls.
                    if not watching:
                        loop.add_reader(fd, woken)
                        watching = True
                    ready.clear()
                    # The deadline bounds this wait only: a timeout around the whole loop
                    # would also fire while the reader is suspended at `yield`, cancelling
                    # whatever the reader awaits meanwhile (its send to the client).
                    try:
                        async with asyncio.timeout_at(self._deadline):
                            await ready.wait()
                    except TimeoutError:
                        raise ResponseCut("the response body was not finished within the "
                                          "event's timeout-ms") from None
                    continue
                if not chunk:
                    return
                yield chunk
        finally:
            if watching:
                loop.remove_reader(fd)
            # Reading stops here (end, cut, client gone): a guest still writing now gets
            # an error instead of waiting on a channel nobody empties.
            self._stream.close()

    async def _reason(self, fallback: str) -> str:
        """Why the body was cut: the call's own failure if it ends soon, else ``fallback``."""
        try:
            async with asyncio.timeout(1.0):
                result = await asyncio.shield(self._ended)
        except TimeoutError:
            return fallback
        return self._settle(result) or fallback

    @property
    def deadline(self) -> float:
        """The event's deadline (loop time): the body must reach the client by then."""
        return self._deadline

    def close(self) -> None:
        """Stop reading (idempotent): the guest's next write fails."""
        self._stream.close()


class ResponseSlot:
    """Where the executor leaves a streamed body for the HTTP trigger (one dispatch)."""

    __slots__ = ("body",)

    def __init__(self) -> None:
        self.body: StreamedResponse | None = None


# Bound by the HTTP trigger around one dispatch; the executor fills it (same task).
STREAMED_RESPONSE: contextvars.ContextVar[ResponseSlot | None] = contextvars.ContextVar(
    "wasmgate_streamed_response", default=None)


def count_cut(component: str) -> None:
    metrics.counter("wasmgate_http_cut_responses_total",
                    "Streamed responses cut off mid-body after their head was sent (over "
                    "max-response-bytes, a trap or timeout, or past timeout-ms).",
                    component=component)


__all__ = ["STREAMED_RESPONSE", "ResponseCut", "ResponseSlot", "StreamedResponse",
           "count_cut"]
