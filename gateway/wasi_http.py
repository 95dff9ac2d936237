"""Events as HTTP requests for components of the standard ``wasi:http/proxy`` world.

An HTTP trigger's event becomes the request as it came (method, path, query, headers,
body). Any other event (a broker message, a cron tick) becomes a ``POST`` in CloudEvents
1.0 binary content mode, as Knative and Dapr deliver events to HTTP services: the
attributes as ``ce-*`` headers, the data as the body, and the delivery metadata
(partition, offset, attempt, ...) as ``ce-`` extension headers. The component's answer
settles the event with the status vocabulary every trigger already uses.

The native executor reads the shaped event's metadata ``method``, ``path-with-query`` and
``authority`` (native/src/wasi_http.rs); headers and data pass through as they are.

An HTTP request body is streamed, not read whole first: the HTTP trigger binds a
:class:`StreamedBody` to :data:`STREAMED_BODY` for the call, and the executor feeds its
chunks to the guest through a bounded native channel (:func:`feed`) while the guest runs.
"""

from __future__ import annotations

import asyncio
import base64
import contextvars
import datetime
import re
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any, Literal
from urllib.parse import quote

from bindings.types import Event, Pairs
from gateway import _native

WORLD = "wasi:http/proxy"
HTTP_SOURCE = "wasmgate/http"
DEFAULT_AUTHORITY = "localhost"
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
# Printable ASCII but space, '"' and '%' (CloudEvents HTTP binding §3.1.3.2).
_CE_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in '"%')
# An HTTP header name (RFC 9110 token) and a value HTTP/1.1 carries as it is.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9a-z]+")
_HEADER_VALUE = re.compile(r"[\t\x20-\x7e]*")
# RFC 3986 pchar and "/": what a path keeps unencoded.
_PATH_SAFE = "/:@!$&'()*+,;=-._~"

# CloudEvents attribute names are lowercase letters and digits only (spec §3.1.1).
_NOT_ATTRIBUTE_CHAR = re.compile(r"[^a-z0-9]")
# Headers a broker message may carry that would misframe or misdescribe the request body.
_FRAMING_HEADERS = frozenset({"content-length", "transfer-encoding", "connection", "host",
                              "content-type", "keep-alive", "upgrade", "te", "trailer"})


# Chunks in flight between the socket and the guest: 16 of uvicorn's <= 64 KiB reads.
BODY_CHANNEL_CHUNKS = 16

Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
BodyProblem = Literal["too-large", "timeout", "disconnect"]


class StreamedBody:
    """An HTTP request body still on the socket, read once, chunk by chunk, on demand.

    ``problem`` says why it ended early (over ``limit`` bytes, past ``timeout_s`` since the
    first read, or the client left); the HTTP trigger answers 413 / 408 from it.
    """

    def __init__(self, receive: Receive, limit: int, timeout_s: float) -> None:
        self._receive = receive
        self._limit = limit
        self._timeout_s = timeout_s
        self.problem: BodyProblem | None = None
        self.taken = False

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body's chunks as they arrive; stops early (``problem`` set) on a limit."""
        self.taken = True
        size = 0
        deadline = asyncio.get_running_loop().time() + self._timeout_s
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    message = await self._receive()
            except TimeoutError:
                self.problem = "timeout"
                return
            if message["type"] == "http.disconnect":
                self.problem = "disconnect"
                return
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > self._limit:
                self.problem = "too-large"
                return
            if chunk:
                yield chunk
            if not message.get("more_body", False):
                return

    async def read_all(self) -> bytes:
        """The whole body (what arrived, if ``problem`` is set): for a component that
        cannot stream it."""
        return b"".join([chunk async for chunk in self.chunks()])


# Bound by the HTTP trigger around one dispatch; the executor takes it (same task).
STREAMED_BODY: contextvars.ContextVar[StreamedBody | None] = contextvars.ContextVar(
    "wasmgate_streamed_body", default=None)

_PROBLEM_TEXT = {"too-large": "the request body is over the route's max-body-bytes",
                 "timeout": "the request body took longer than the route's body-timeout-ms",
                 "disconnect": "the client left before sending the whole body"}


async def feed(source: StreamedBody, body: _native.RequestBody) -> None:
    """Copy ``source`` into the guest's channel ``body``, waiting while it is full (so the
    socket is read no faster than the guest reads); end it, or fail it with the reason."""
    loop = asyncio.get_running_loop()
    try:
        async for chunk in source.chunks():
            if body.closed:
                return  # the call ended without reading the rest
            if body.try_send(chunk):
                continue
            # Full: wait off the loop (GIL released) until the guest has read some.
            if not await loop.run_in_executor(None, body.send_blocking, chunk):
                return  # the call ended without reading the rest
    except BaseException:
        body.fail("the gateway stopped reading the request body")
        raise
    if source.problem is None:
        body.finish()
    else:
        body.fail(_PROBLEM_TEXT[source.problem])


# Set by a trigger whose table has `http-path` (triggers.delivery.deliver): the path its
# events are POSTed to, over the component's own `http-path`.
HTTP_PATH_METADATA = "http-path"


def request_event(event: Event, http_path: str) -> Event:
    """``event`` shaped as the HTTP request a ``wasi:http`` component receives; a broker or
    cron event goes to its trigger's ``http-path`` if it set one, else to ``http_path`` (the
    component's)."""
    if event.source == HTTP_SOURCE:
        return _as_received(event)
    path = next((v for k, v in event.metadata if k == HTTP_PATH_METADATA), http_path)
    return _as_cloudevent(event, path)


def _as_received(event: Event) -> Event:
    meta = dict(event.metadata)
    query = meta.get("query", "")
    # The trigger's path is ASGI's, percent-decoded: encode it again, or a space or a
    # non-ASCII character would make the request line invalid.
    path = quote(meta.get("path", "/") or "/", safe=_PATH_SAFE)
    target = f"{path}?{query}" if query else path
    authority = next((v for k, v in event.headers if k.lower() == "host"), DEFAULT_AUTHORITY)
    metadata = [("method", meta.get("method", "GET")), ("path-with-query", target),
                ("authority", authority or DEFAULT_AUTHORITY)]
    return Event(id=event.id, source=event.source, type=event.type, subject=event.subject,
                 time=event.time, content_type=event.content_type, headers=event.headers,
                 metadata=metadata, data=event.data)


def _ce_value(value: str) -> str:
    """``value`` as a ``ce-`` header value: the CloudEvents HTTP binding (§3.1.3.2)
    percent-encodes (UTF-8) everything outside printable ASCII, and space, '"' and '%'."""
    return quote(value, safe=_CE_SAFE)


def cloudevent_headers(event: Event) -> Pairs:
    """The CloudEvents binary-mode headers of ``event``: attributes, then extensions."""
    headers: Pairs = [("ce-specversion", "1.0"), ("ce-id", _ce_value(event.id)),
                      ("ce-source", _ce_value(event.source)),
                      ("ce-type", _ce_value(event.type))]
    if event.subject:
        headers.append(("ce-subject", _ce_value(event.subject)))
    if event.time:
        headers.append(("ce-time", _rfc3339(event.time)))
    if event.content_type:
        headers.append(("content-type", event.content_type))
    if event.key is not None:
        # The CloudEvents partitioning extension's attribute; binary keys stay intact.
        headers.append(("ce-partitionkey", _ce_value(_key_text(event.key))))
    taken = {name for name, _ in headers}
    for key, value in event.metadata:
        if key == HTTP_PATH_METADATA:
            continue  # where the event is sent, not about it
        name = "ce-" + _NOT_ATTRIBUTE_CHAR.sub("", key.lower())
        if name != "ce-" and name not in taken:
            taken.add(name)
            headers.append((name, _ce_value(value)))
    for key, value in event.headers:
        # The message's own headers ride along as plain HTTP headers, unless they would
        # collide with the framing or with a CloudEvents attribute set above, or HTTP
        # cannot carry them (a broker header name with a space, a non-ASCII value): those
        # are left out rather than failing the delivery.
        lower = key.lower()
        if (lower not in _FRAMING_HEADERS and lower not in taken
                and _TOKEN.fullmatch(lower) and _HEADER_VALUE.fullmatch(value)):
            headers.append((lower, value))
    return headers


def _as_cloudevent(event: Event, http_path: str) -> Event:
    metadata = [("method", "POST"), ("path-with-query", http_path),
                ("authority", DEFAULT_AUTHORITY)]
    return Event(id=event.id, source=event.source, type=event.type, subject=event.subject,
                 time=event.time, content_type=event.content_type,
                 headers=cloudevent_headers(event), metadata=metadata, data=event.data)


def _rfc3339(micros: int) -> str:
    moment = _EPOCH + datetime.timedelta(microseconds=micros)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def _key_text(key: bytes) -> str:
    try:
        text = key.decode("utf-8")
    except UnicodeDecodeError:
        return "base64:" + base64.b64encode(key).decode("ascii")
    # A header value cannot carry control characters; such a key goes as base64 too.
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        return "base64:" + base64.b64encode(key).decode("ascii")
    return text


__all__ = ["HTTP_PATH_METADATA", "STREAMED_BODY", "WORLD", "StreamedBody",
           "cloudevent_headers", "feed", "request_event"]
