"""The ``outbound-http`` import: requests from a handler to allowed hosts only.

Spin's rule: deny by default. A component lists ``allowed-outbound-hosts`` as
``scheme://host[:port]``; scheme, host and port must all match (a missing port means the
scheme's default port, ``*`` matches any port, a host may start with ``*.`` for
subdomains). Redirects are not followed: the guest sees the 3xx and decides, so a redirect
can never carry a request to a host that is not on the list.

Host calls run on the executor's worker thread (the event loop is free), so this uses a
blocking httpx client with a per-request timeout and a response size limit read in chunks.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import urllib.parse

import httpx

from gateway.errors import WasmgateError

_DEFAULT_PORTS = {"http": 80, "https": 443}


class OutboundHttpError(WasmgateError):
    """A refused or failed outbound request (the message goes back to the guest)."""


@dataclasses.dataclass(frozen=True)
class AllowedHost:
    scheme: str  # "http", "https" or "*"
    host: str  # exact, "*.example.com" or "*"
    port: int | None  # None: any port

    def matches(self, scheme: str, host: str, port: int) -> bool:
        if self.scheme not in ("*", scheme):
            return False
        if self.port is not None and self.port != port:
            return False
        if self.host == "*":
            return True
        if self.host.startswith("*."):
            return fnmatch.fnmatchcase(host, self.host) and host.count(".") >= 1
        return host == self.host


def parse_allowed_host(text: str) -> AllowedHost:
    """Parse one ``allowed-outbound-hosts`` entry; ValueError says what a valid one is."""
    scheme, sep, rest = text.partition("://")
    hint = ('write scheme://host[:port], e.g. "https://api.example.com", '
            '"http://127.0.0.1:8080" or "https://*.example.com"')
    if not sep or scheme not in ("http", "https", "*") or not rest or "/" in rest:
        raise ValueError(f"invalid allowed outbound host {text!r}; {hint}")
    host, _, port_text = rest.rpartition(":") if ":" in rest else (rest, "", "")
    if not host:
        raise ValueError(f"invalid allowed outbound host {text!r}; {hint}")
    port: int | None
    if port_text == "*":
        port = None
    elif port_text:
        if not port_text.isdigit():
            raise ValueError(f"invalid port in allowed outbound host {text!r}; {hint}")
        port = int(port_text)
    elif scheme == "*":
        port = None
    else:
        port = _DEFAULT_PORTS[scheme]
    return AllowedHost(scheme=scheme, host=host.lower(), port=port)


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


class OutboundHttp:
    """One component's outbound HTTP: its allow list, timeout and size limit."""

    def __init__(self, component: str, allowed: list[str], *, timeout_ms: int,
                 max_response_bytes: int) -> None:
        self.component = component
        self.allowed = [parse_allowed_host(a) for a in allowed]
        self.timeout_ms = timeout_ms
        self.max_response_bytes = max_response_bytes
        self._client: httpx.Client | None = None

    def check(self, url: str) -> None:
        """Raise OutboundHttpError unless ``url`` is on the allow list."""
        parts = urllib.parse.urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in _DEFAULT_PORTS or not parts.hostname:
            raise OutboundHttpError(f"invalid outbound URL {url!r}: use http:// or https://")
        port = parts.port or _DEFAULT_PORTS[scheme]
        host = parts.hostname.lower()
        if not any(a.matches(scheme, host, port) for a in self.allowed):
            origin = f"{scheme}://{host}:{port}"
            raise OutboundHttpError(
                f"component `{self.component}` may not call {origin}; add it to "
                f"`allowed-outbound-hosts` of [component.{self.component}]")

    def send(self, request: OutboundRequest) -> OutboundReply:
        self.check(request.url)
        timeout_ms = min(request.timeout_ms or self.timeout_ms, self.timeout_ms)
        client = self._client or self._open()
        try:
            with client.stream(request.method.upper(), request.url, headers=request.headers,
                               content=request.body or None,
                               timeout=timeout_ms / 1000) as response:
                body = bytearray()
                for chunk in response.iter_raw():
                    body += chunk
                    if len(body) > self.max_response_bytes:
                        raise OutboundHttpError(
                            f"response from {request.url} is over the limit of "
                            f"{self.max_response_bytes} bytes (`outbound-max-response-bytes`)")
                return OutboundReply(status=response.status_code,
                                     headers=list(response.headers.multi_items()),
                                     body=bytes(body))
        except httpx.TimeoutException:
            raise OutboundHttpError(
                f"request to {request.url} timed out after {timeout_ms} ms") from None
        except httpx.HTTPError as exc:
            raise OutboundHttpError(f"request to {request.url} failed: {exc}") from None

    def _open(self) -> httpx.Client:
        # One pooled client per component: keep-alive across events, no redirects, no env
        # proxies (a proxy would be an unlisted host).
        self._client = httpx.Client(follow_redirects=False, trust_env=False)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
