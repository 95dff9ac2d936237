"""What the HTTP trigger sends: a handler's response as HTTP/1.1 can carry it (buffered or
streamed), the gateway's own short answers, and the 502 for a response HTTP cannot carry.

The gateway frames every body itself: the guest's ``transfer-encoding`` is dropped and
exactly one ``content-length`` is sent (on a HEAD reply the guest's own, if it gave one, as
the length a GET would have had). See :mod:`triggers.http` for when each answer is given.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import structlog

from bindings.types import Event, Response
from gateway import metrics
from gateway.errors import InvalidResponse
from gateway.response_stream import ResponseCut, StreamedResponse, count_cut
from gateway.responses import excerpt

log = structlog.get_logger("wasmgate.http")

Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

FAILURE_BODIES = {
    502: b"handler response cannot be sent\n",
    503: b"component busy, retry later\n",
    504: b"handler timed out\n",
}
# Seconds, for a 503 (full pool): see triggers.http's docstring.
RETRY_AFTER_S = "1"
# Responses that carry no body, and so no content-length of ours (RFC 9110 §8.6).
NO_BODY_STATUSES = (204, 304)


def http_head(component: str, response: Response, method: str) -> list[tuple[bytes, bytes]]:
    """Return the response's headers as uvicorn should send them; raise InvalidResponse if
    HTTP/1.1 cannot carry the response (what :mod:`gateway.responses` checks is given)."""
    status, body = response.status, response.body
    if status in NO_BODY_STATUSES and body:
        # Sent, the body would be read as the start of the next response on the connection.
        raise InvalidResponse(f"component `{component}` returned status {status} with a "
                              f"{len(body)}-byte body; a {status} response has no body")
    head, given = _head_and_length(component, response)
    length = str(len(body)).encode()
    if given is not None:
        if method == "HEAD":  # the length a GET would have had; the body is not sent
            length = given
        elif int(given) != len(body):
            raise InvalidResponse(
                f"component `{component}` returned content-length {given.decode()} with a "
                f"{len(body)}-byte body; leave content-length out and the gateway sets it")
    if status not in NO_BODY_STATUSES:
        head.append((b"content-length", length))
    return head


def stream_head(component: str, response: Response
                 ) -> tuple[list[tuple[bytes, bytes]], int | None]:
    """The headers of a streamed response as uvicorn should send them, and the body's
    length if the guest gave one (else uvicorn sends it chunked); raise InvalidResponse
    if HTTP/1.1 cannot carry it."""
    head, given = _head_and_length(component, response)
    if given is None or response.status in NO_BODY_STATUSES:
        return head, None
    head.append((b"content-length", given))
    return head, int(given)


def _head_and_length(component: str, response: Response
                     ) -> tuple[list[tuple[bytes, bytes]], bytes | None]:
    """The response's headers as bytes, without the framing ones (the gateway frames the
    body itself), and the one content-length it gave, if any; raise InvalidResponse for an
    interim status, a header HTTP cannot carry or a content-length that is no one number."""
    if response.status < 200:
        # uvicorn would write it as the final answer; a client takes a 1xx as interim (and a
        # 101 as a protocol switch) and goes on waiting or talking something else.
        raise InvalidResponse(f"component `{component}` returned status {response.status}: "
                              "a 1xx status is interim in HTTP and cannot be the response")
    head: list[tuple[bytes, bytes]] = []
    lengths: set[bytes] = set()
    for name, value in response.headers:
        try:
            raw_name, raw_value = name.lower().encode("latin-1"), value.encode("latin-1")
        except UnicodeEncodeError:
            raise InvalidResponse(
                f"component `{component}` returned header {excerpt(name)} with text outside "
                "Latin-1; HTTP header values are bytes: percent-encode it or use RFC 8187 "
                "(`filename*=UTF-8''...`)") from None
        if raw_name == b"content-length":
            lengths.add(raw_value.strip())
        elif raw_name != b"transfer-encoding":
            head.append((raw_name, raw_value))
    if not lengths:
        return head, None
    given = lengths.pop()
    # 19 digits hold any real length; more would make uvicorn's int() refuse it.
    if lengths or not given.isdigit() or len(given) > 19:
        shown = excerpt(b", ".join(sorted({given, *lengths})).decode("latin-1"))
        raise InvalidResponse(f"component `{component}` returned content-length {shown}; "
                              "it must be one number")
    return head, given


async def refuse_unsendable(component: str, event: Event, exc: InvalidResponse,
                             send: Send) -> int:
    """Answer 502 for a response HTTP cannot carry; return that status. The dispatcher
    counted the event as answered; this counts what HTTP refused."""
    metrics.counter("wasmgate_http_unsendable_responses_total",
                    "Handler responses HTTP cannot carry, answered 502 instead.",
                    component=component)
    log.error("handler response cannot be sent", component=component, event_id=event.id,
              error=str(exc))
    await send_reply(send, 502, [], FAILURE_BODIES[502])
    return 502


async def send_reply(send: Send, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
    """Send one of the gateway's own answers (health, metrics, 4xx, a failure's body)."""
    raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]
    # Without a length uvicorn frames the body as chunked: extra bytes and parsing per reply.
    if not any(k.lower() == b"content-length" for k, _ in raw):
        raw.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


async def send_streamed(component: str, method: str, event: Event, response: Response, *,
                        body: StreamedResponse, send: Send) -> None:
    """Send a streamed response: its head now, its body chunk by chunk as the guest
    writes it; a body cut short closes the connection (the status is already sent)."""
    try:
        head, length = stream_head(component, response)
    except InvalidResponse as exc:
        body.close()
        await refuse_unsendable(component, event, exc, send)
        return
    await send({"type": "http.response.start", "status": response.status,
                "headers": head})
    sent = 0
    # A HEAD reply's body is never written (uvicorn drops it); read it all the same, so
    # the guest finishes its call normally.
    carries_body = response.status not in NO_BODY_STATUSES
    try:
        async with contextlib.aclosing(body.chunks()) as chunks:
            async for chunk in chunks:
                sent += len(chunk)
                if not carries_body:
                    raise ResponseCut(f"a {response.status} response has no body, and "
                                      "the guest wrote one")
                if length is not None and sent > length and method != "HEAD":
                    raise ResponseCut(f"the body is longer than its content-length "
                                      f"{length}")
                try:
                    # uvicorn's send waits while the client does not read (no write
                    # timeout of its own): a stalled client must not hold us past the
                    # deadline.
                    async with asyncio.timeout_at(body.deadline):
                        await send({"type": "http.response.body", "body": chunk,
                                    "more_body": True})
                except TimeoutError:
                    raise ResponseCut("the client did not read the response within the "
                                      "event's timeout-ms") from None
        if length is not None and sent != length and method != "HEAD":
            raise ResponseCut(f"the body ({sent} bytes) is shorter than its "
                              f"content-length {length}")
    except ResponseCut as exc:
        # Returning without the body's end makes uvicorn close the connection: the
        # client sees an incomplete response, not a complete wrong one.
        count_cut(component)
        log.error("streamed response cut off mid-body", component=component,
                  event_id=event.id, sent_bytes=sent, error=str(exc))
        return
    await send({"type": "http.response.body", "body": b""})


__all__ = ["FAILURE_BODIES", "NO_BODY_STATUSES", "RETRY_AFTER_S", "http_head",
           "refuse_unsendable", "send_reply", "send_streamed", "stream_head"]
