"""The HTTP trigger: routes requests to components and replies with their response.

Routes are exact (``/hello``) or wildcard (``/api/...`` matches ``/api`` and everything
under it). Every request becomes one event; the handler's response is the HTTP response.
Oversize bodies get 413, a handler timeout 504, any other handler failure 500 with a short
body (details go to the log, with the component and event id).

A full instance pool (no slot free within ``admission-timeout-ms``) is 503 with
``Retry-After: 1``: a slot frees as soon as any call ends, and the client waits its turn
again in admission, so a short pause is enough without hammering. A response that cannot be
sent is 502, never a dropped connection: one :func:`~gateway.responses.check_response`
refused (status outside 100-599, a bad header name, CR/LF/NUL in a value, more than
``max-response-headers`` headers or ``max-response-bytes`` bytes), or one HTTP cannot carry:
a 1xx status as the final answer, header text outside Latin-1, a ``content-length`` that is
not the body's length, a body on a 204 or 304. The gateway frames every body itself: the
guest's ``transfer-encoding`` is dropped and exactly one ``content-length`` is sent (on a
HEAD reply the guest's own, if it gave one, as the length a GET would have had).

With ``WASMGATE_LOG_REQUESTS=1`` (``wasmgate up --log-requests``) every request is logged
once it is answered: method, path, status, duration in ms and the component (none for
``/healthz``, ``/metrics`` and unrouted paths).

``/healthz`` answers 200 while the gateway runs; ``/metrics`` serves the Prometheus metrics
(unless a route claims that path).

Slow clients are bounded so they cannot hold the gateway: the request line and headers must
arrive within ``header-timeout-ms`` of the connection opening or the request's first byte
(see :mod:`triggers.http_protocol`), the body within the route's ``body-timeout-ms`` after
the headers, and an idle keep-alive connection is closed after ``keep-alive-timeout-ms``.
A late request gets 408 and the connection is closed. A client that stops reading its
response (its socket full) for ``send-timeout-ms`` has its connection aborted, and the
response bytes queued for it are dropped.

A route with a ``webhook`` table verifies the provider's signature (401 if it fails),
remembers delivery ids, and with an ``enqueue`` table publishes the request to a broker and
answers 202 instead of running a component: :mod:`gateway.webhooks`, docs/webhooks.md.

All ``[[trigger.http]]`` tables on one listen address share one uvicorn server, so the
connection-level limits (header, keep-alive and send timeouts) are per address: tables that set
them must agree.

A route whose component is a standard ``wasi:http`` one (gateway/wasi_http.py) is dispatched
before its body is read: the component reads the body as it arrives, through a bounded
channel, so a large upload is never held whole; the body limits and their 413 / 408 stay.
Its response is streamed back too (gateway/response_stream.py): the status and headers go
out as soon as the guest sets them, then each chunk as the guest writes it. A body cut off
after that (over ``max-response-bytes``, a trap or timeout, past ``timeout-ms``, or not the
length its ``content-length`` said) closes the connection mid-body: the status is already
sent. Such a response keeps the guest's ``content-length`` (or is sent chunked without one).
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Annotated, Any, ClassVar

import msgspec
import structlog
import uvicorn

from bindings.types import Event, new_event_id, now_micros
from gateway import metrics
from gateway.dispatch import Outcome
from gateway.errors import ConfigError, InvalidResponse
from gateway.response_stream import (
    STREAMED_RESPONSE,
    ResponseSlot,
)
from gateway.wasi_http import STREAMED_BODY, StreamedBody
from gateway.webhooks.config import EnqueueConfig, WebhookConfig
from gateway.webhooks.gate import WebhookGate, build_gate
from gateway.workers import REUSE_PORT_ENV, worker_index
from triggers.base import Dispatch, TriggerContext, decode_config, register
from triggers.http_protocol import protocol_class
from triggers.http_response import (
    FAILURE_BODIES,
    RETRY_AFTER_S,
    http_head,
    refuse_unsendable,
    send_reply,
    send_streamed,
)

log = structlog.get_logger("wasmgate.http")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class HttpConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, rename="kebab"):
    route: str
    component: str | None = None  # None only with `enqueue`
    methods: list[str] = msgspec.field(default_factory=lambda: ["GET", "POST", "PUT", "DELETE",
                                                                 "PATCH", "HEAD"])
    max_body_bytes: int = 1 << 20
    # 30 s lets a 1 MB body arrive at ~35 KB/s; an upload route may want longer.
    body_timeout_ms: Annotated[int, msgspec.Meta(gt=0)] = 30_000
    # Per listen address (None: not set by this table; see _CONNECTION_DEFAULTS).
    header_timeout_ms: Annotated[int, msgspec.Meta(gt=0)] | None = None
    keep_alive_timeout_ms: Annotated[int, msgspec.Meta(gt=0)] | None = None
    send_timeout_ms: Annotated[int, msgspec.Meta(gt=0)] | None = None
    # Webhook ingestion (gateway/webhooks, docs/webhooks.md): signature, idempotency, and
    # accept-and-enqueue instead of a component.
    webhook: WebhookConfig | None = None
    enqueue: EnqueueConfig | None = None


# Generous for any real client on a slow link, short enough that a slowloris client holds a
# socket for seconds, not forever. Keep-alive is uvicorn's own default.
# A client that takes no response bytes for send-timeout-ms is gone or reading slowly on
# purpose: 30 s outlasts any real stall of a live connection.
_CONNECTION_DEFAULTS = {"header-timeout-ms": 10_000, "keep-alive-timeout-ms": 5_000,
                        "send-timeout-ms": 30_000}


class _Route:
    __slots__ = ("body_timeout", "component", "config", "dispatch", "gate", "prefix",
                 "streams_body", "wildcard")

    def __init__(self, config: HttpConfig, dispatch: Dispatch, gate: WebhookGate | None = None,
                 streams_body: Callable[[str], bool] | None = None) -> None:
        self.config = config
        self.component = config.component or ""  # "": an enqueueing route runs none
        self.gate = gate
        self.dispatch = dispatch
        self.streams_body = streams_body
        self.body_timeout = config.body_timeout_ms / 1000
        self.wildcard = config.route.endswith("/...")
        self.prefix = config.route[:-4] if self.wildcard else config.route

    def matches(self, path: str) -> bool:
        if self.wildcard:
            return path == self.prefix or path.startswith(self.prefix + "/")
        return path == self.prefix


def uvicorn_config(
    app: Any, listen: str, *,
    header_timeout: float = _CONNECTION_DEFAULTS["header-timeout-ms"] / 1000,
    keep_alive_timeout: float = _CONNECTION_DEFAULTS["keep-alive-timeout-ms"] / 1000,
    send_timeout: float = _CONNECTION_DEFAULTS["send-timeout-ms"] / 1000,
) -> uvicorn.Config:
    """Return the uvicorn config every gateway listen address runs with (timeouts in s)."""
    host, _, port = listen.rpartition(":")
    # ws="none": no route speaks WebSocket. With a WebSocket library installed, uvicorn
    # handed `Upgrade: websocket` requests to its WebSocket protocol, outside the header
    # and send deadlines of protocol_class, and the gateway, which sends no handshake,
    # answered 500. Now the Upgrade header is ignored (RFC 9110 7.8 allows it) and the
    # request goes to its route like any other; a WebSocket client sees a status other
    # than 101 and gives up, as RFC 6455 4.1 says it must.
    return uvicorn.Config(app, host=host or "127.0.0.1", port=int(port), log_config=None,
                          access_log=False, lifespan="off", ws="none",
                          http=protocol_class(header_timeout=header_timeout,
                                              keep_alive_timeout=keep_alive_timeout,
                                              send_timeout=send_timeout))


# "1": log one line per request (`wasmgate up --log-requests`); an environment variable so
# that worker processes inherit it.
LOG_REQUESTS_ENV = "WASMGATE_LOG_REQUESTS"

# Which process answered: with `--workers N` several share the port.
_HEALTH = msgspec.json.encode({"status": "ok", "pid": os.getpid(), "worker": worker_index()})


def _reuse_port_socket(listen: str) -> socket.socket:
    """A listening socket that other worker processes may bind too (SO_REUSEPORT): the
    kernel spreads incoming connections across them."""
    host, _, port = listen.rpartition(":")
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host or "127.0.0.1", int(port)))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


class HttpServer:
    """One ASGI app + uvicorn server per listen address, shared by its HTTP triggers."""

    _servers: ClassVar[dict[str, HttpServer]] = {}

    def __init__(self, listen: str) -> None:
        self.listen = listen
        self.routes: list[_Route] = []
        # Every route declared on this address, in manifest order: the server starts with
        # the first trigger's start, before the others have added theirs to `routes`.
        self.route_names: list[str] = []
        # connection-level setting -> (value, the trigger field that set it)
        self._connection_limits: dict[str, tuple[int, str]] = {}
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._log_requests = os.environ.get(LOG_REQUESTS_ENV) == "1"

    @classmethod
    def on(cls, listen: str) -> HttpServer:
        if listen not in cls._servers:
            cls._servers[listen] = cls(listen)
        return cls._servers[listen]

    def set_connection_limits(self, config: HttpConfig, context: TriggerContext) -> None:
        """Record the table's connection timeouts; raise if another table disagrees."""
        for name, value in (("header-timeout-ms", config.header_timeout_ms),
                            ("keep-alive-timeout-ms", config.keep_alive_timeout_ms),
                            ("send-timeout-ms", config.send_timeout_ms)):
            if value is None:
                continue
            first, where = self._connection_limits.setdefault(name, (value, context.field))
            if first != value:
                raise ConfigError(
                    f"{name} = {value} disagrees with {name} = {first} in {where}: both "
                    f"routes are served on {self.listen}, which has one value; set it once",
                    path=context.manifest_path, field=f"{context.field}.{name}")

    def _connection_limit(self, name: str) -> float:
        value, _ = self._connection_limits.get(name, (_CONNECTION_DEFAULTS[name], ""))
        return value / 1000

    async def start(self) -> None:
        if self._task is not None:
            return
        config = uvicorn_config(
            self, self.listen, header_timeout=self._connection_limit("header-timeout-ms"),
            keep_alive_timeout=self._connection_limit("keep-alive-timeout-ms"),
            send_timeout=self._connection_limit("send-timeout-ms"))
        self._server = uvicorn.Server(config)
        sockets = [_reuse_port_socket(self.listen)] if os.environ.get(REUSE_PORT_ENV) else None
        # `_serve`, not `serve`: the gateway owns SIGINT/SIGTERM (stop every trigger, not
        # just HTTP), and uvicorn's `serve` would take the signal handlers over.
        self._task = asyncio.create_task(self._server._serve(sockets))
        while not self._server.started:
            if self._task.done():
                self._task.result()  # surfaces "address already in use" and the like
                raise ConfigError(f"HTTP server on {self.listen} did not start")
            await asyncio.sleep(0.01)
        log.info("http listening", address=f"http://{self.listen}", routes=self.route_names)

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            # uvicorn stops accepting, then waits for in-flight requests to finish.
            self._server.should_exit = True
            await self._task
        self._servers.pop(self.listen, None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if not self._log_requests:
            await self._handle(scope, receive, send)
            return
        started = time.perf_counter()
        status: int | None = None  # None: the client left before an answer

        async def send_and_record(message: MutableMapping[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self._handle(scope, receive, send_and_record)
        finally:
            path: str = scope["path"]
            route = next((r for r in self.routes if r.matches(path)), None)
            log.info("http request", method=scope["method"], path=path, status=status,
                     duration_ms=round((time.perf_counter() - started) * 1000, 2),
                     component=(route.component or None) if route is not None else None)

    async def _handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        if path == "/healthz":
            await send_reply(send, 200, [("content-type", "application/json")], _HEALTH)
            return
        if path == "/metrics" and not any(r.matches(path) for r in self.routes):
            await send_reply(send, 200, [("content-type", "text/plain; version=0.0.4")],
                         metrics.render().encode())
            return
        route = next((r for r in self.routes if r.matches(path)), None)
        if route is None:
            await send_reply(send, 404, [], b"no route\n")
            return
        if scope["method"] not in route.config.methods:
            await send_reply(send, 405, [("allow", ", ".join(route.config.methods))], b"")
            return
        # A webhook route verifies the whole body before anything runs: never streamed.
        if (route.gate is None and route.streams_body is not None
                and route.streams_body(route.component)):
            await self._handle_streaming(route, scope, receive, send)
            return
        try:
            async with asyncio.timeout(route.body_timeout):
                body = await _read_body(receive, route.config.max_body_bytes)
        except TimeoutError:
            # Closing, not keeping alive: the rest of the body may still be on its way.
            await send_reply(send, 408, [("connection", "close")], b"request body took too long\n")
            return
        except _BodyTooLarge:
            # Closing too: kept alive, the connection would go on reading (and discarding)
            # an unread body of any size at any pace, outside every deadline.
            await send_reply(send, 413, [("connection", "close")], b"request body too large\n")
            return
        if body is None:
            # The client left mid-body: nobody to answer, and a partial body is no event.
            _count_abandoned(route)
            return
        if route.gate is not None:
            headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                       for k, v in scope["headers"]}
            reply = await route.gate.serve(headers, body,
                                           lambda: self._run(route, scope, body, send))
            if reply is not None:
                await send_reply(send, *reply)
            return
        await self._run(route, scope, body, send)

    async def _run(self, route: _Route, scope: Scope, body: bytes, send: Send) -> int:
        """Run the route's handler on the request and send its answer; return the status."""
        event = _event_for(scope, body)
        outcome = await route.dispatch(route.component, event)
        return await self._answer(route, scope, event, outcome, send)

    async def _handle_streaming(self, route: _Route, scope: Scope, receive: Receive,
                                send: Send) -> None:
        """Dispatch before the body is read: the component reads it as it arrives
        (gateway/wasi_http.py), and a body cut short is answered as when read whole."""
        source = StreamedBody(receive, route.config.max_body_bytes, route.body_timeout)
        event = _event_for(scope, b"")
        slot = ResponseSlot()
        token = STREAMED_BODY.set(source)
        response_token = STREAMED_RESPONSE.set(slot)
        try:
            outcome = await route.dispatch(route.component, event)
        finally:
            STREAMED_RESPONSE.reset(response_token)
            STREAMED_BODY.reset(token)
        streamed = slot.body
        if streamed is not None and (source.problem is not None or outcome.response is None):
            streamed.close()  # answered below without it
            streamed = None
        if source.problem == "disconnect":
            _count_abandoned(route)
            return
        if source.problem == "timeout":
            await send_reply(send, 408, [("connection", "close")], b"request body took too long\n")
            return
        if source.problem == "too-large":
            await send_reply(send, 413, [("connection", "close")], b"request body too large\n")
            return
        if streamed is not None and outcome.response is not None:
            await send_streamed(route.component, scope["method"], event, outcome.response,
                                body=streamed, send=send)
            return
        await self._answer(route, scope, event, outcome, send)

    async def _answer(self, route: _Route, scope: Scope, event: Event, outcome: Outcome,
                      send: Send) -> int:
        """Send the outcome of the route's handler as the HTTP answer; return the status."""
        if outcome.response is not None:  # the handler answered, whatever the status
            try:
                head = http_head(route.component, outcome.response, scope["method"])
            except InvalidResponse as exc:
                return await refuse_unsendable(route.component, event, exc, send)
            await send({"type": "http.response.start", "status": outcome.response.status,
                        "headers": head})
            await send({"type": "http.response.body", "body": outcome.response.body})
            return outcome.response.status
        log.error("handler failed", component=route.component, event_id=event.id,
                  error=outcome.error, kind=outcome.error_kind)
        headers = [("retry-after", RETRY_AFTER_S)] if outcome.status == 503 else []
        await send_reply(send, outcome.status, headers,
                     FAILURE_BODIES.get(outcome.status, b"handler failed\n"))
        return outcome.status


def _count_abandoned(route: _Route) -> None:
    metrics.counter("wasmgate_http_abandoned_requests_total",
                    "Requests whose client left before sending the whole body; nobody is "
                    "answered.", component=route.component)


class _BodyTooLarge(Exception):
    pass


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """Return the whole body, or None if the client disconnected before sending it all."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _event_for(scope: Scope, body: bytes) -> Event:
    headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
    content_type = next((v for k, v in headers if k == "content-type"), None)
    return Event(
        id=new_event_id(), source="wasmgate/http", type="wasmgate.http.request",
        subject=scope["path"], time=now_micros(), content_type=content_type, headers=headers,
        metadata=[("method", scope["method"]), ("path", scope["path"]),
                  ("query", scope["query_string"].decode("latin-1"))],
        data=body,
    )


class HttpTrigger:
    kind: ClassVar[str] = "http"

    def __init__(self, config: HttpConfig, context: TriggerContext) -> None:
        if not config.route.startswith("/"):
            raise ConfigError(f"route {config.route!r} must start with `/`",
                              path=context.manifest_path, field=f"{context.field}.route")
        field = context.field
        if config.component is None and config.enqueue is None:
            raise ConfigError(
                "missing required field `component`: the name of a [component.<name>] "
                "table (or an [trigger.http.enqueue] table to publish requests instead)",
                path=context.manifest_path, field=f"{field}.component")
        if config.component is not None and config.enqueue is not None:
            raise ConfigError(
                f"route {config.route!r} has both `component` and `enqueue`; a route either "
                "runs a component or publishes to a broker: remove one",
                path=context.manifest_path, field=f"{field}.enqueue")
        self.config = config
        self.component = config.component or ""
        self._gate = build_gate(config.route, config.webhook, config.enqueue, context)
        self._streams_body = context.streams_body
        self._server = HttpServer.on(context.listen)
        self._server.set_connection_limits(config, context)
        self._server.route_names.append(config.route)

    async def start(self, dispatch: Dispatch) -> None:
        self._server.routes.append(_Route(self.config, dispatch, self._gate,
                                          self._streams_body))
        # Longest prefix first so `/api/users/...` wins over `/api/...`.
        self._server.routes.sort(key=lambda r: (not r.wildcard, len(r.prefix)), reverse=True)
        await self._server.start()

    async def stop(self) -> None:
        await self._server.stop()


def build_http_trigger(config: dict[str, Any], *, context: TriggerContext) -> HttpTrigger:
    return HttpTrigger(decode_config(config, HttpConfig, context), context)


register("http", build_http_trigger)


__all__ = ["HttpConfig", "HttpServer", "HttpTrigger", "build_http_trigger", "uvicorn_config"]
