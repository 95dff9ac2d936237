"""What a component's grants in wasmgate.toml mean, parsed without touching the network:
``allowed-outbound-hosts`` entries and ``publish`` grants. The manifest checks them at load
and the host capabilities (bindings/host) enforce them; this module imports nothing of the
project, so both may import it.

Allowed outbound hosts are ``scheme://host[:port]``: ``*`` for any scheme or host,
``*.example.com`` for its subdomains, ``:*`` for any port; no port means the scheme's.

Publish grants: which destinations a ``"<broker>:<pattern>"`` grant lets a component reach.

Patterns match token by token, as NATS subjects do, so a wildcard never reaches further
than its own token (fnmatch's ``x.allowed.*`` also matched ``x.allowed.a.b`` and
``x.allowed.``):

* A destination is split into tokens at its broker's separator: ``.`` for Kafka topics and
  NATS subjects (core and JetStream), ``:`` for Redis channels and stream names (Redis's
  own key convention), and for AMQP ``<exchange>/<routing-key>`` the exchange is the first
  token and the routing key's ``.``-separated words follow (an empty routing key adds none).
* The JetStream prefix ``js:`` (NATS) and the stream prefix ``stream:`` (Redis) say what
  kind of destination it is; they are not tokens. A pattern reaches JetStream subjects or
  Redis streams only if it starts with the same prefix: ``nats:>`` is every core subject and
  no JetStream one, ``nats:js:>`` every JetStream subject.
* ``*`` as a whole token matches exactly one non-empty token; ``>`` as the last token
  matches one or more non-empty tokens; ``*`` inside a token (``orders-*``) matches any
  characters within that one token. Everything else matches itself, case-sensitively; a
  pattern without wildcards matches exactly one destination.
* AMQP's default exchange is the empty exchange token (``/<queue>``): only a pattern that
  starts with ``/`` reaches it, never ``*`` or ``>``, because it routes to any queue by
  name.

A pattern that cannot mean what it looks like (``>`` anywhere but as the whole last token,
an empty token next to a wildcard, an AMQP pattern without ``/``) is refused when the
manifest loads.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import functools
import ipaddress
import re

DEFAULT_PORTS = {"http": 80, "https": 443}

# Destination prefixes that select a kind of destination rather than name a token.
_MODES: dict[str, tuple[str, ...]] = {"nats": ("js:",), "redis": ("stream:",)}
_SEPARATORS = {"kafka": ".", "nats": ".", "redis": ":", "amqp": "."}


@dataclasses.dataclass(frozen=True)
class PublishGrant:
    """One ``publish`` grant, parsed: the broker and its destination pattern's tokens."""

    broker: str
    pattern: str
    kind: str
    mode: str
    tokens: tuple[str, ...]
    literal: bool

    def matches(self, broker: str, destination: str) -> bool:
        """Whether this grant lets a component publish to ``destination`` on ``broker``."""
        if broker != self.broker:
            return False
        if self.literal:
            return destination == self.pattern
        split = _split(self.kind, destination)
        if split is None or split[0] != self.mode:
            return False
        return _match(self.tokens, split[1])


def parse_publish_grant(grant: str, kind: str) -> PublishGrant:
    """Parse ``"<broker>:<pattern>"`` for a broker of ``kind``; ValueError says what is
    wrong with the pattern."""
    broker, sep, pattern = grant.partition(":")
    if not sep or not broker or not pattern:
        raise ValueError(f"publish grant {grant!r} must read `<broker>:<destination pattern>`, "
                         'e.g. "events:orders.*"')
    split = _split(kind, pattern)
    if split is None:
        raise ValueError(f"publish grant {grant!r}: an AMQP pattern reads "
                         "`<exchange>/<routing-key pattern>`, e.g. \"orders/eu.*\" (or "
                         "\"/<queue>\" for the default exchange)")
    mode, tokens = split
    for index, token in enumerate(tokens):
        if ">" in token and (token != ">" or index != len(tokens) - 1):
            raise ValueError(f"publish grant {grant!r}: `>` matches the remaining tokens, so it "
                             "can only be a whole token at the end, e.g. \"orders.>\"")
    if "*" not in pattern and ">" not in tokens:
        return PublishGrant(broker, pattern, kind, mode, tuple(tokens), literal=True)
    for index, token in enumerate(tokens):
        amqp_default_exchange = kind == "amqp" and index == 0
        if not token and not amqp_default_exchange:
            raise ValueError(f"publish grant {grant!r} has an empty token (a separator at the "
                             "start or end, or two in a row)")
    return PublishGrant(broker, pattern, kind, mode, tuple(tokens), literal=False)


def _split(kind: str, text: str) -> tuple[str, list[str]] | None:
    """``(mode prefix, tokens)`` of a destination or pattern; None when it cannot be one
    (an AMQP destination without ``/``)."""
    mode = next((m for m in _MODES.get(kind, ()) if text.startswith(m)), "")
    rest = text[len(mode):]
    if kind == "amqp":
        if rest == ">":
            return mode, [">"]
        exchange, sep, routing_key = rest.partition("/")
        if not sep:
            return None
        return mode, [exchange, *(routing_key.split(".") if routing_key else [])]
    return mode, rest.split(_SEPARATORS.get(kind, "."))


def _match(pattern: tuple[str, ...], tokens: list[str]) -> bool:
    for index, want in enumerate(pattern):
        if want == ">":
            rest = tokens[index:]
            return bool(rest) and all(rest)
        if index >= len(tokens):
            return False
        token = tokens[index]
        if want == "*":
            if not token:
                return False
        elif "*" in want:
            if not _token_glob(want).fullmatch(token):
                return False
        elif want != token:
            return False
    return len(tokens) == len(pattern)


@functools.lru_cache(maxsize=256)
def _token_glob(want: str) -> re.Pattern[str]:
    # Tokens hold no separator, so ".*" here can never reach into the next token.
    return re.compile(".*".join(map(re.escape, want.split("*"))), re.DOTALL)


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
    if not rest.isascii():
        # Requests are matched by their IDNA form (xn--...): this entry could never match.
        raise ValueError(f"invalid allowed outbound host {text!r}: write a non-ASCII host "
                         "name in its IDNA form (xn--...)")
    if rest.startswith("["):
        # An IPv6 literal: requests are matched on the address without its brackets.
        literal, bracket, after = rest[1:].partition("]")
        if not bracket or not literal or (after and not after.startswith(":")):
            raise ValueError(f"invalid allowed outbound host {text!r}: an IPv6 address goes "
                             'in brackets, e.g. "http://[::1]:8080"')
        try:
            host = ipaddress.IPv6Address(literal).compressed
        except ValueError:
            raise ValueError(f"invalid allowed outbound host {text!r}: {literal!r} is not an "
                             "IPv6 address") from None
        port_text = after[1:]
    else:
        host, _, port_text = rest.rpartition(":") if ":" in rest else (rest, "", "")
    if not host or "[" in host or "]" in host:
        raise ValueError(f"invalid allowed outbound host {text!r}; {hint}")
    port: int | None
    if port_text == "*":
        port = None
    elif port_text:
        if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            raise ValueError(f"invalid port in allowed outbound host {text!r}: a port is "
                             f"1-65535 or *; {hint}")
        port = int(port_text)
    elif scheme == "*":
        port = None
    else:
        port = DEFAULT_PORTS[scheme]
    return AllowedHost(scheme=scheme, host=host.lower(), port=port)


__all__ = ["DEFAULT_PORTS", "AllowedHost", "PublishGrant", "parse_allowed_host",
           "parse_publish_grant"]
