"""Checking a component's response before any trigger sends it on.

A guest can return anything its WIT type holds: a status of 700, a header whose value
carries CR/LF (which would end the header early and let the guest write headers or a whole
response of its choosing), 100,000 headers, a body as large as its memory. The transport
libraries refuse such output with a bare exception in the middle of a reply, or worse, send
it. :func:`check_response` refuses it first with :class:`~gateway.errors.InvalidResponse`
(a 502 in the status vocabulary), naming the component, what was wrong and, for a size, the
setting to raise. :meth:`gateway.router.Router.invoke` calls it on every response, so the HTTP
reply, the NATS and AMQP reply-to and ``wasmgate invoke`` all see only checked responses.

Limits, per ``[component.<name>]``:

========================  =========  =================================================
setting                   default    bounds
========================  =========  =================================================
``max-response-headers``  100        how many headers one response may carry
``max-response-bytes``    16 MiB     the body plus every header's name and value
========================  =========  =================================================

What every response must also be, whatever the limits:

* a status from 100 to 599;
* header names that are HTTP tokens (letters, digits and ``!#$%&'*+-.^_`|~``);
* header values without control characters (CR, LF, NUL, ...); a tab is allowed.

What only HTTP adds (1xx finals, Latin-1 text, framing) is checked by the HTTP trigger.
The two limits are also enforced by the native executor right after it lifts a response
(with the same messages), so an oversized body never becomes a Python object.
"""

from __future__ import annotations

import re

from bindings.types import Response
from gateway.errors import InvalidResponse
from gateway.manifest import ComponentSpec
from gateway.redaction import cut_masked

# RFC 9110 §5.6.2 `token`: what a field name may be.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# RFC 9110 §5.5: a field value is visible characters, spaces and tabs; any other control
# character (CR and LF above all) would end or split the header line on the wire.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_CONTROL_NAMES = {"\r": "CR", "\n": "LF", "\x00": "NUL"}


def check_response(component: str, response: Response, spec: ComponentSpec) -> None:
    """Return if ``response`` may be sent on; raise :class:`InvalidResponse` saying why not."""
    headers = response.headers
    if len(headers) > spec.max_response_headers:
        raise InvalidResponse(
            f"component `{component}` returned {len(headers)} headers, over its "
            f"max-response-headers = {spec.max_response_headers}; raise "
            f"`max-response-headers` in [component.{component}] if that many are intended")
    size = len(response.body) + sum(len(name) + len(value) for name, value in headers)
    if size > spec.max_response_bytes:
        raise InvalidResponse(
            f"component `{component}` returned a {size}-byte response (body and headers), "
            f"over its max-response-bytes = {spec.max_response_bytes}; raise "
            f"`max-response-bytes` in [component.{component}] if that much is intended")
    if not 100 <= response.status <= 599:
        raise InvalidResponse(f"component `{component}` returned status {response.status}; "
                              "a status must be from 100 to 599")
    for name, value in headers:
        if not _TOKEN.fullmatch(name):
            raise InvalidResponse(
                f"component `{component}` returned the header name {excerpt(name)}; a header "
                "name must be letters, digits and !#$%&'*+-.^_`|~ only")
        bad = _CONTROL.search(value)
        if bad:
            char = _CONTROL_NAMES.get(bad.group(), f"U+{ord(bad.group()):04X}")
            raise InvalidResponse(
                f"component `{component}` returned header {excerpt(name)} with a control "
                f"character ({char}) in its value; a header value cannot hold CR, LF, NUL "
                "or other control characters")


def excerpt(text: str) -> str:
    """``text`` quoted (CR/LF show as ``\\r\\n``) and cut to 60 characters, for a log line;
    masked before the cut, which could leave a secret's head behind."""
    return repr(cut_masked(text, 60)) + ("..." if len(text) > 60 else "")


__all__ = ["check_response", "excerpt"]
