"""The ``outbound-http`` import: requests from a handler to allowed hosts only.

Spin's rule: deny by default. A component lists ``allowed-outbound-hosts`` as
``scheme://host[:port]``; scheme, host and port must all match (a missing port means the
scheme's default port, ``*`` matches any port, a host may start with ``*.`` for
subdomains). Redirects are not followed: the guest sees the 3xx and decides, so a redirect
can never carry a request to a host that is not on the list.

What a request may carry (everything else is an :class:`OutboundHttpError` value for the
guest, naming what is wrong; no other exception leaves :meth:`OutboundHttp.send`):

* The URL is parsed once (httpx's parser) and the allow-list check, the connection and the
  ``Host`` header all use that one parse, so no URL trick can be read one way by the check
  and another way by the client. Control characters (tab, CR, LF), a port outside 1-65535,
  a malformed IPv6 literal and credentials in the URL are refused.
* A ``Host`` header is refused unless it names the URL's own host (and port): another
  virtual host on an allowed address is a different destination.
* Hop-by-hop headers (RFC 9110 7.6.1: ``Connection``, ``Keep-Alive``, ``TE``, ``Trailer``,
  ``Transfer-Encoding``, ``Upgrade``, ``Proxy-Authorization``, ``Proxy-Connection`` and any
  header named in ``Connection``) belong to the host's own connection and are dropped, as
  is ``Content-Length`` (the host frames the body it sends). Header names must be HTTP
  tokens; values printable ASCII (no CR, LF or NUL, no non-ASCII: encode it first).
* ``CONNECT`` (a raw tunnel to an allowed address would bypass every rule above) and
  ``TRACE`` (reflects the request back, never needed by a handler) are refused.

The whole request (DNS, connect, TLS, send and every read) is bounded by one deadline:
the smallest of ``outbound-timeout-ms``, the request's own ``timeout-ms`` and what is left
of the event's deadline (:mod:`gateway.deadline`). httpx/httpcore timeouts are per read,
so an upstream trickling a byte a second would never trip them; here every socket
operation waits at most until that deadline (:class:`_DeadlineBackend`). The body is read in
chunks and refused as soon as it passes ``outbound-max-response-bytes``.

Host calls run on the executor's worker thread (the event loop is free), so this uses a
blocking httpcore connection pool, one per component, keep-alive across events.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import ipaddress
import queue
import re
import select
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Iterable, Iterator
from typing import Any, NoReturn

import httpcore
import httpx

from gateway import deadline
from gateway.errors import DeadlineExceeded, WasmgateError
from gateway.grants import DEFAULT_PORTS as _DEFAULT_PORTS
from gateway.grants import parse_allowed_host
from gateway.redaction import redact_url

# RFC 9110 7.6.1, plus Proxy-Connection (never standard, still honoured by some proxies).
HOP_BY_HOP_HEADERS = frozenset({
    "connection", "keep-alive", "te", "trailer", "transfer-encoding", "upgrade",
    "proxy-authorization", "proxy-connection",
})
REFUSED_METHODS = frozenset({"CONNECT", "TRACE"})

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# Printable ASCII, space and tab: what a header value may hold without an encoding.
_HEADER_VALUE = re.compile(r"[\t\x20-\x7e]*")
_CONTROL = re.compile(r"[\x00-\x20\x7f]")
_READ_CHUNK = 64 * 1024


class OutboundHttpError(WasmgateError):
    """A refused or failed outbound request (the message goes back to the guest)."""


@dataclasses.dataclass
class OutboundRequest:
    method: str
    url: str
    headers: list[tuple[str, str]]
    body: bytes
    timeout_ms: int | None = None


@dataclasses.dataclass
class OutboundReply:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


@dataclasses.dataclass(frozen=True)
class _Target:
    """One parsed, checked URL: what the allow list saw is what the connection uses."""

    url: httpx.URL
    scheme: str
    host: str  # lowercase, IDNA-encoded, no brackets around an IPv6 literal
    port: int  # explicit or the scheme's default

    @property
    def origin(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    @property
    def authority(self) -> str:
        """The ``Host`` header value: host, plus the port when it is not the default."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == _DEFAULT_PORTS[self.scheme] else f"{host}:{self.port}"


@dataclasses.dataclass(frozen=True)
class _Budget:
    """The request's total time and which limit set it (named in the timeout error)."""

    seconds: float
    limit: str
    is_event_deadline: bool


class OutboundHttp:
    """One component's outbound HTTP: its allow list, timeout and size limit."""

    def __init__(self, component: str, allowed: list[str], *, timeout_ms: int,
                 max_response_bytes: int) -> None:
        self.component = component
        self.allowed = [parse_allowed_host(a) for a in allowed]
        self.timeout_ms = timeout_ms
        self.max_response_bytes = max_response_bytes
        self._pool: httpcore.ConnectionPool | None = None
        self._opening = threading.Lock()

    def check(self, url: str) -> None:
        """Raise OutboundHttpError unless ``url`` is well formed and on the allow list."""
        self._target(url)

    def send(self, request: OutboundRequest) -> OutboundReply:
        """Send ``request``; every refusal or failure is a WasmgateError naming the cause."""
        shown = redact_url(request.url)
        try:
            return self._send(request, shown)
        except WasmgateError:
            raise
        except Exception as exc:
            # The guarantee the guest relies on: a host call ends in a value, never a raw
            # exception that would trap the guest and leave the client a bare 500.
            raise OutboundHttpError(
                f"request to {shown} failed: {type(exc).__name__}: {exc}") from None

    def _send(self, request: OutboundRequest, shown: str) -> OutboundReply:
        method = _method(request.method)
        target = self._target(request.url)
        headers = _request_headers(request.headers, target)
        budget = self._budget(request.timeout_ms)
        at = time.monotonic() + budget.seconds
        token = _REQUEST_DEADLINE.set(at)
        seconds = budget.seconds
        extensions = {"timeout": {"connect": seconds, "read": seconds, "write": seconds,
                                  "pool": seconds}}
        url = httpcore.URL(scheme=target.url.raw_scheme, host=target.url.raw_host,
                           port=target.port, target=target.url.raw_path)
        try:
            # No body and no Content-Length on a bodiless GET or HEAD, as httpx sends them.
            content = request.body if request.body or method not in (b"GET", b"HEAD") else None
            with self._open().stream(method, url, headers=headers, content=content,
                                     extensions=extensions) as response:
                body = self._read_body(response, shown, at)
                return OutboundReply(status=response.status,
                                     headers=_reply_headers(response.headers), body=body)
        except httpcore.TimeoutException:
            self._timed_out(shown, budget)
        except _BudgetSpent:
            self._timed_out(shown, budget)
        except httpcore.ConnectError as exc:
            raise OutboundHttpError(
                f"request to {shown} failed: cannot connect to {target.origin}: "
                f"{exc or type(exc).__name__}") from None
        except (httpcore.NetworkError, httpcore.ProtocolError) as exc:
            raise OutboundHttpError(
                f"request to {shown} failed: {type(exc).__name__}: {exc}") from None
        finally:
            _REQUEST_DEADLINE.reset(token)

    def _read_body(self, response: httpcore.Response, shown: str, at: float) -> bytes:
        limit = self.max_response_bytes
        over = (f"response from {shown} is over the limit of {limit} bytes "
                f"(`outbound-max-response-bytes` of [component.{self.component}])")
        declared = _content_length(response.headers)
        if declared is not None and declared > limit:
            raise OutboundHttpError(f"{over}: it declares {declared} bytes")
        body = bytearray()
        stream = response.stream
        if not isinstance(stream, Iterable):  # pragma: no cover - sync pool, sync stream
            raise OutboundHttpError(f"response from {shown} has no readable body")
        for chunk in stream:
            body += chunk
            if len(body) > limit:
                raise OutboundHttpError(over)
            if time.monotonic() >= at:
                raise _BudgetSpent
        return bytes(body)

    def _timed_out(self, shown: str, budget: _Budget) -> NoReturn:
        ms = round(budget.seconds * 1000)
        if budget.is_event_deadline:
            raise DeadlineExceeded(
                f"request to {shown} timed out after {ms} ms: {budget.limit} ran out; the "
                "limit covers the whole request (connect, send and every read)")
        raise OutboundHttpError(
            f"request to {shown} timed out after {ms} ms ({budget.limit}; the limit covers "
            "the whole request: connect, send and every read)")

    def _budget(self, request_timeout_ms: int | None) -> _Budget:
        where = f"[component.{self.component}]"
        budget = _Budget(self.timeout_ms / 1000, f"`outbound-timeout-ms` of {where}", False)
        if request_timeout_ms and request_timeout_ms / 1000 < budget.seconds:
            budget = _Budget(request_timeout_ms / 1000, "the request's own `timeout-ms`",
                             False)
        left = deadline.remaining()
        if left is not None and left < budget.seconds:
            budget = _Budget(left, f"the event's deadline (`timeout-ms` of {where})", True)
        if budget.seconds <= 0:
            raise DeadlineExceeded(
                f"outbound request not sent: the event's deadline (`timeout-ms` of {where}) "
                "has passed")
        return budget

    def _target(self, url: str) -> _Target:
        shown = redact_url(url)
        bad = _CONTROL.search(url)
        if bad:
            raise OutboundHttpError(
                f"invalid outbound URL {shown!r}: it contains {_describe(bad.group())} at "
                f"position {bad.start()}; percent-encode it")
        if not url.isascii():
            raise OutboundHttpError(
                f"invalid outbound URL {shown!r}: it contains non-ASCII characters; "
                "percent-encode them (and IDNA-encode a host name)")
        authority = url.partition("://")[2].split("/", 1)[0]
        if authority.count("[") != authority.count("]"):
            raise OutboundHttpError(
                f"invalid outbound URL {shown!r}: an IPv6 host needs both brackets, as in "
                "http://[::1]:8080/")
        try:
            parsed = httpx.URL(url)
        except (httpx.InvalidURL, ValueError) as exc:
            raise OutboundHttpError(f"invalid outbound URL {shown!r}: {exc}") from None
        scheme = parsed.scheme
        if scheme not in _DEFAULT_PORTS or not parsed.raw_host:
            raise OutboundHttpError(
                f"invalid outbound URL {shown!r}: write http://host[:port]/path or "
                "https://host[:port]/path")
        if parsed.userinfo:
            raise OutboundHttpError(
                f"invalid outbound URL {shown!r}: credentials in the URL are not sent; put "
                "them in an `Authorization` header")
        port = _DEFAULT_PORTS[scheme] if parsed.port is None else parsed.port
        if not 1 <= port <= 65535:
            raise OutboundHttpError(
                f"invalid outbound URL {shown!r}: port {port} is outside 1-65535")
        host = parsed.raw_host.decode("ascii").lower()
        target = _Target(url=parsed, scheme=scheme, host=host, port=port)
        if not any(a.matches(scheme, host, port) for a in self.allowed):
            raise OutboundHttpError(
                f"component `{self.component}` may not call {target.origin}; add it to "
                f"`allowed-outbound-hosts` of [component.{self.component}]")
        return target

    def _open(self) -> httpcore.ConnectionPool:
        with self._opening:
            if self._pool is None:
                # No proxies (a proxy would be an unlisted host), no environment: the
                # system CA bundle through certifi, as httpx does with trust_env=False.
                self._pool = httpcore.ConnectionPool(
                    ssl_context=httpx.create_ssl_context(trust_env=False),
                    max_connections=100, max_keepalive_connections=20,
                    keepalive_expiry=5.0, network_backend=_DeadlineBackend())
            return self._pool

    def close(self) -> None:
        with self._opening:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()


# -- request checks ---------------------------------------------------------------------


def _method(method: str) -> bytes:
    upper = method.upper()
    if not _TOKEN.fullmatch(upper):
        raise OutboundHttpError(
            f"invalid outbound request method {method!r}: a method is a token such as "
            "GET, POST or PATCH")
    if upper in REFUSED_METHODS:
        raise OutboundHttpError(
            f"outbound {upper} requests are refused: "
            + ("a CONNECT tunnel would carry anything to the host"
               if upper == "CONNECT" else "TRACE echoes the request and no handler needs it"))
    return upper.encode("ascii")


def _request_headers(headers: list[tuple[str, str]], target: _Target
                     ) -> list[tuple[bytes, bytes]]:
    """The guest's headers as sent: checked, hop-by-hop and framing headers dropped, and
    exactly one ``Host`` (the URL's)."""
    for name, value in headers:
        if not _TOKEN.fullmatch(name):
            raise OutboundHttpError(
                f"invalid outbound header name {name!r}: a header name is a token of ASCII "
                "letters, digits and !#$%&'*+-.^_`|~ (no spaces, colons, CR or LF)")
        if not _HEADER_VALUE.fullmatch(value):
            # The value is not shown: it may be a credential.
            what = ("non-ASCII characters; encode the value first (percent-encoding, "
                    "RFC 8187 or base64)" if not value.isascii()
                    else "a control character (CR, LF, NUL or another); remove it")
            raise OutboundHttpError(f"outbound header `{name}` has a value with {what}")
    named = {n.strip().lower() for name, value in headers if name.lower() == "connection"
             for n in value.split(",")}
    dropped = HOP_BY_HOP_HEADERS | named | {"content-length", "host"}
    sent = [(b"Host", target.authority.encode("ascii"))]
    for name, value in headers:
        key = name.lower()
        if key == "host" and not _same_authority(value, target):
            raise OutboundHttpError(
                f"outbound header `Host: {value.strip()}` does not name the URL's host "
                f"{target.authority}; request that host's URL instead (it must be in "
                "`allowed-outbound-hosts`)")
        if key not in dropped:
            sent.append((name.encode("ascii"), value.encode("ascii")))
    return sent


def _same_authority(value: str, target: _Target) -> bool:
    try:
        given = urllib.parse.urlsplit(f"//{value.strip()}")
        host, port = given.hostname, given.port
    except ValueError:
        return False
    if given.username is not None or given.password is not None or given.path:
        return False
    default = _DEFAULT_PORTS[target.scheme]
    return host == target.host and (port or default) == target.port


def _describe(char: str) -> str:
    names = {"\t": "a tab", "\r": "a CR", "\n": "an LF", " ": "a space", "\x00": "a NUL"}
    return names.get(char, f"the control character {char!r}")


# -- reply ------------------------------------------------------------------------------


def _reply_headers(raw: list[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    # Hop-by-hop headers describe the host's connection to the upstream, not the reply: a
    # guest copying them into its own response would corrupt that response's framing.
    named = {n.strip().lower() for k, v in raw if k.lower() == b"connection"
             for n in v.decode("latin-1").split(",")}
    headers = []
    for key, value in raw:
        name = key.decode("ascii", "replace").lower()
        if name in HOP_BY_HOP_HEADERS or name in named:
            continue
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError:
            text = value.decode("latin-1")
        headers.append((name, text))
    return headers


def _content_length(raw: list[tuple[bytes, bytes]]) -> int | None:
    for key, value in raw:
        if key.lower() == b"content-length" and value.strip().isdigit():
            return int(value)
    return None


# -- one deadline for the whole request ---------------------------------------------------


# time.monotonic() by which the current request must be done; set by OutboundHttp._send on
# the worker thread, read by every socket operation of the pooled connections.
_REQUEST_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "wasmgate_outbound_deadline", default=None)


class _BudgetSpent(Exception):  # an internal signal, never leaves this module
    """The request's deadline passed between two reads."""


def _bounded(timeout: float | None, expired: type[Exception]) -> float | None:
    """``timeout`` cut to what is left of the request's deadline; ``expired`` when none is."""
    at = _REQUEST_DEADLINE.get()
    if at is None:
        return timeout
    left = at - time.monotonic()
    if left <= 0:
        raise expired("the outbound request's deadline has passed")
    return left if timeout is None else min(timeout, left)


@contextlib.contextmanager
def _mapped(timeout: type[Exception], failure: type[Exception]) -> Iterator[None]:
    try:
        yield
    except TimeoutError as exc:  # socket.timeout
        raise timeout(str(exc) or "timed out") from exc
    except OSError as exc:
        raise failure(str(exc)) from exc


class _DeadlineStream(httpcore.NetworkStream):
    """A socket whose every operation waits at most until the request's deadline."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        with _mapped(httpcore.ReadTimeout, httpcore.ReadError):
            self._sock.settimeout(_bounded(timeout, httpcore.ReadTimeout))
            return self._sock.recv(max_bytes)

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        with _mapped(httpcore.WriteTimeout, httpcore.WriteError):
            # One send at a time with a fresh bound: a slow reader cannot stretch the loop.
            while buffer:
                self._sock.settimeout(_bounded(timeout, httpcore.WriteTimeout))
                buffer = buffer[self._sock.send(buffer):]

    def close(self) -> None:
        self._sock.close()

    def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:
        try:
            with _mapped(httpcore.ConnectTimeout, httpcore.ConnectError):
                # CPython bounds the whole handshake by the socket timeout, not each read.
                self._sock.settimeout(_bounded(timeout, httpcore.ConnectTimeout))
                tls = ssl_context.wrap_socket(self._sock, server_hostname=server_hostname)
        except Exception:
            self.close()
            raise
        return _DeadlineStream(tls)

    def get_extra_info(self, info: str) -> Any:
        if info == "ssl_object" and isinstance(self._sock, ssl.SSLSocket):
            return self._sock  # has selected_alpn_protocol(), which is all httpcore asks
        if info == "client_addr":
            return self._sock.getsockname()
        if info == "server_addr":
            return self._sock.getpeername()
        if info == "socket":
            return self._sock
        if info == "is_readable":
            # An idle pooled connection that is readable was closed (or spoke out of turn).
            if self._sock.fileno() < 0:
                return True
            poll = select.poll()
            poll.register(self._sock, select.POLLIN)
            return bool(poll.poll(0))
        return None


class _DeadlineBackend(httpcore.NetworkBackend):
    """httpcore's sync backend with every wait, DNS included, cut to the request's deadline."""

    def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                    local_address: str | None = None,
                    socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        with _mapped(httpcore.ConnectTimeout, httpcore.ConnectError):
            addresses = _resolve(host, port, _bounded(timeout, httpcore.ConnectTimeout))
            error: OSError | None = None
            for family, kind, proto, _, address in addresses:
                sock = socket.socket(family, kind, proto)
                try:
                    sock.settimeout(_bounded(timeout, httpcore.ConnectTimeout))
                    sock.connect(address)
                except BaseException as exc:
                    sock.close()
                    if not isinstance(exc, OSError) or isinstance(exc, TimeoutError):
                        raise
                    error = exc
                    continue
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                for option in socket_options or ():
                    sock.setsockopt(*option)
                return _DeadlineStream(sock)
            raise error or OSError(f"no address for {host}")

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Iterable[Any] | None = None
                            ) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("outbound requests do not use unix sockets")

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


_AddrInfo = list[tuple[Any, Any, int, str, Any]]


def _resolve(host: str, port: int, timeout: float | None) -> _AddrInfo:
    """getaddrinfo with a bound: the system resolver has no timeout of its own, so a name
    lookup runs on a daemon thread and the request stops waiting for it at the deadline."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    answer: queue.SimpleQueue[_AddrInfo | OSError] = queue.SimpleQueue()

    def lookup() -> None:
        try:
            answer.put(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except OSError as exc:
            answer.put(exc)

    threading.Thread(target=lookup, name="wasmgate-dns", daemon=True).start()
    try:
        result = answer.get(timeout=timeout)
    except queue.Empty:
        raise TimeoutError(f"resolving {host} timed out") from None
    if isinstance(result, OSError):
        raise result
    return result


__all__ = ["HOP_BY_HOP_HEADERS", "REFUSED_METHODS", "OutboundHttp",
           "OutboundHttpError", "OutboundReply", "OutboundRequest"]
