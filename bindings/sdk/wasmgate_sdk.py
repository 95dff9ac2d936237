"""wasmgate_sdk: write a wasmgate handler as one plain Python function.

::

    from wasmgate_sdk import Request, Response, handler

    @handler
    def handle(req: Request) -> Response:
        return Response.json({"hi": req.json()["name"]})

Build it with ``wasmgate componentize app -o build/app.wasm``, which runs componentize-py
with the wasmgate WIT and puts this module on the path. It runs inside the component (the
guest), so it only imports the standard library and the bindings componentize-py generates.

Every source (HTTP, cron, queues) uses one status vocabulary, and exceptions map onto it:

=============================  ==================================  ==========================
in the handler                 the gateway sees                    what happens
=============================  ==================================  ==========================
return a 2xx Response          that response                       ack / HTTP reply
raise HTTPError(404, "...")    a 404 with the message as body      dead-letter at once
raise BadRequest("...")        400 (also from ``req.json()``)      dead-letter at once
raise Retry("db busy")         ``err("db busy")``                  retry with backoff (HTTP: 500)
any other exception            ``err("KeyError: 'x'")``, logged    retry with backoff (HTTP: 500)
=============================  ==================================  ==========================

Host capabilities are thin wrappers: :class:`KeyValue` (``kv`` is the ``default`` store),
manifest variables via :func:`variable`, and :data:`log`. A store the manifest does not grant
raises :class:`HostError` naming the fix. ``publish``, ``sql`` and ``outbound_http`` are
used straight from ``wit_world.imports`` (see docs/capabilities.md).
"""

from __future__ import annotations

import json as _json
import sys
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, TypeVar
from urllib.parse import parse_qsl

from componentize_py_types import Err
from wit_world import WitWorld as _WitWorldProtocol
from wit_world.imports import config as _config
from wit_world.imports import kv as _kv
from wit_world.imports import log as _log
from wit_world.imports import publish as _publish
from wit_world.imports import types as _types

Pairs = list[tuple[str, str]]
T = TypeVar("T")


class Fields:
    """Ordered name/value pairs with case-insensitive lookup: headers and metadata.

    A name may repeat (``set-cookie``, Kafka headers); :meth:`get` returns the first value and
    :meth:`get_all` every value.
    """

    __slots__ = ("_pairs",)

    def __init__(self, pairs: Iterable[tuple[str, str]] | Mapping[str, str] = ()) -> None:
        items = pairs.items() if isinstance(pairs, Mapping) else pairs
        self._pairs: Pairs = [(str(k), str(v)) for k, v in items]

    def get(self, name: str, default: str | None = None) -> str | None:
        """Return the first value called ``name`` (any case), or ``default``."""
        wanted = name.lower()
        for k, v in self._pairs:
            if k.lower() == wanted:
                return v
        return default

    def get_all(self, name: str) -> list[str]:
        """Return every value called ``name`` (any case), in order."""
        wanted = name.lower()
        return [v for k, v in self._pairs if k.lower() == wanted]

    def __getitem__(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._pairs)

    def __len__(self) -> int:
        return len(self._pairs)

    def __repr__(self) -> str:
        return f"Fields({self._pairs!r})"

    def to_list(self) -> Pairs:
        """Return a copy of the pairs, as the WIT record carries them."""
        return list(self._pairs)


class Request:
    """One event as a handler sees it: CloudEvents attributes, headers, metadata and a body.

    The same class serves every source. HTTP fills :attr:`method`, :attr:`path` and
    :attr:`query`; queues fill :attr:`partition`/:attr:`offset` where they have them; cron
    fills ``scheduled-time``. Anything else is in :attr:`metadata`.
    """

    __slots__ = ("body", "content_type", "headers", "id", "key", "metadata", "source",
                 "subject", "time", "type")

    def __init__(self, event: _types.Event) -> None:
        self.id: str = event.id
        self.source: str = event.source
        self.type: str = event.type
        self.subject: str = event.subject
        self.time: int = event.time  # microseconds since the Unix epoch, UTC
        self.content_type: str | None = event.content_type
        self.key: bytes | None = event.key
        self.headers = Fields(event.headers)
        self.metadata = Fields(event.metadata)
        self.body: bytes = event.data

    def text(self, encoding: str = "utf-8") -> str:
        """Return the body decoded as text; undecodable bytes raise :class:`BadRequest`."""
        try:
            return self.body.decode(encoding)
        except UnicodeDecodeError as exc:
            raise BadRequest(f"body is not valid {encoding}: {exc.reason}") from None

    def json(self) -> Any:
        """Return the body parsed as JSON; a body that is not JSON raises :class:`BadRequest`.

        Raising (rather than returning None) is deliberate: a malformed message is a poison
        message, and a 400 dead-letters it at once instead of retrying it forever.
        """
        try:
            return _json.loads(self.body)
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            raise BadRequest(f"body is not valid JSON: {exc}") from None

    def meta(self, name: str, default: str | None = None) -> str | None:
        """Return the metadata value called ``name`` (``partition``, ``offset`` ...)."""
        return self.metadata.get(name, default)

    @property
    def method(self) -> str | None:
        """HTTP method (``GET``, ``POST`` ...), or None for other sources."""
        return self.metadata.get("method")

    @property
    def path(self) -> str | None:
        """HTTP path without the query string, or None for other sources."""
        return self.metadata.get("path")

    @property
    def query(self) -> dict[str, str]:
        """HTTP query parameters (the first value of each name); empty for other sources."""
        return dict(reversed(parse_qsl(self.metadata.get("query") or "",
                                       keep_blank_values=True)))

    @property
    def attempt(self) -> int:
        """Delivery attempt, 1 for the first; more when the gateway or broker retries."""
        value = self.metadata.get("attempt") or ""
        return int(value) if value.isdigit() else 1

    @property
    def partition(self) -> int | None:
        """Partition number, for sources that have partitions (Kafka)."""
        return _int_or_none(self.metadata.get("partition"))

    @property
    def offset(self) -> int | None:
        """Offset or sequence number in the partition or stream, where the source has one."""
        return _int_or_none(self.metadata.get("offset"))

    def __repr__(self) -> str:
        return (f"Request(id={self.id!r}, source={self.source!r}, type={self.type!r}, "
                f"subject={self.subject!r}, body={len(self.body)} bytes)")


class Response:
    """What the handler returns: an HTTP-style status, headers and a body.

    The status decides delivery for every source: 2xx acks, 429/5xx retry, other 4xx
    dead-letter. Build one with :meth:`json`, :meth:`text`, :meth:`binary` or :meth:`empty`.
    """

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int = 200, body: bytes = b"",
                 headers: Iterable[tuple[str, str]] | Mapping[str, str] = ()) -> None:
        if not 100 <= status <= 599:
            raise ValueError(f"status must be between 100 and 599, got {status}")
        self.status = status
        self.body = body
        self.headers = Fields(headers)

    @classmethod
    def json(cls, value: Any, status: int = 200,
             headers: Iterable[tuple[str, str]] | Mapping[str, str] = ()) -> Response:
        """A response whose body is ``value`` encoded as compact JSON."""
        body = _json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
        return cls(status, body, [("content-type", "application/json"), *Fields(headers)])

    @classmethod
    def text(cls, text: str, status: int = 200,
             headers: Iterable[tuple[str, str]] | Mapping[str, str] = ()) -> Response:
        """A ``text/plain; charset=utf-8`` response."""
        return cls(status, text.encode(),
                   [("content-type", "text/plain; charset=utf-8"), *Fields(headers)])

    @classmethod
    def binary(cls, data: bytes, status: int = 200,
               content_type: str = "application/octet-stream",
               headers: Iterable[tuple[str, str]] | Mapping[str, str] = ()) -> Response:
        """A response carrying raw bytes with the given content type."""
        return cls(status, bytes(data), [("content-type", content_type), *Fields(headers)])

    @classmethod
    def empty(cls, status: int = 204) -> Response:
        """A response with no body: 204 by default, or e.g. ``empty(202)`` for "accepted"."""
        return cls(status)

    @property
    def ok(self) -> bool:
        """True for a 2xx status (the event is acknowledged)."""
        return 200 <= self.status < 300

    def __repr__(self) -> str:
        return f"Response(status={self.status}, body={len(self.body)} bytes)"


class HTTPError(Exception):
    """Raise to answer with ``status`` and ``message`` as a text body.

    A 4xx dead-letters a queued message at once; 429 and 5xx are retried.
    """

    def __init__(self, status: int, message: str = "") -> None:
        super().__init__(message or f"HTTP {status}")
        self.status = status
        self.message = message

    def to_response(self) -> Response:
        """The response the gateway receives for this error."""
        return Response.text(self.message + "\n" if self.message else "", self.status)


class BadRequest(HTTPError):
    """400: the event itself is wrong (bad JSON, missing field); never worth retrying."""

    def __init__(self, message: str) -> None:
        super().__init__(400, message)


class Retry(Exception):
    """Raise when the failure is transient (a dependency is down): the gateway retries.

    The handler returns ``err(message)``; the dispatcher retries with backoff up to
    ``max-attempts`` and then dead-letters. Over HTTP the caller gets a 500.
    """


class HostError(Exception):
    """A host call failed: the store or variable is not granted, or the host store failed."""


Handler = Callable[[Request], Response]


def handler(fn: Handler) -> Handler:
    """Export ``fn`` as the component's ``handle`` function; returns ``fn`` unchanged.

    componentize-py looks for a class called ``WitWorld`` in the app module, so this defines
    one there. Decorate exactly one function, in the module you pass to
    ``wasmgate componentize`` (``app.py`` by default).
    """
    module = sys.modules[fn.__module__]
    previous = getattr(getattr(module, "WitWorld", None), "_wasmgate_handler", None)
    if previous is not None:
        raise RuntimeError(
            f"{fn.__module__} already has a @handler ({previous.__name__}); a component "
            f"exports one handle function, so remove @handler from {fn.__name__}")

    class WitWorld(_WitWorldProtocol):
        _wasmgate_handler = fn

        def handle(self, e: _types.Event) -> _types.Response:
            return _call(fn, e)

    module.WitWorld = WitWorld  # type: ignore[attr-defined]
    return fn


def _call(fn: Handler, event: _types.Event) -> _types.Response:
    try:
        response = fn(Request(event))
        if not isinstance(response, Response):
            raise TypeError(f"handler {fn.__name__} returned {type(response).__name__}; "
                            "return a wasmgate_sdk.Response (e.g. Response.json(...))")
    except HTTPError as exc:
        response = exc.to_response()
    except Retry as exc:
        raise Err(str(exc) or "retry requested") from None
    except Err:
        raise  # already a WIT err (e.g. raised by hand-written code)
    except Exception as exc:
        # An err instead of a trap: the message reaches the gateway log and the caller, and the
        # traceback goes to the log with the component and event id bound.
        message = f"{type(exc).__name__}: {exc}"
        _log.emit(_log.Level.ERROR, f"handler {fn.__name__} failed: {message}\n"
                  + "".join(traceback.format_exception(exc)))
        raise Err(message) from None
    return _types.Response(response.status, response.headers.to_list(), response.body)


class KeyValue:
    """A key-value store granted in wasmgate.toml (``key-value-stores = ["name"]``)."""

    __slots__ = ("store",)

    def __init__(self, store: str = "default") -> None:
        self.store = store

    def get(self, key: str) -> bytes | None:
        """Return the value of ``key``, or None when it is absent."""
        return _host(lambda: _kv.get(self.store, key), f"kv get {self.store}/{key}")

    def get_text(self, key: str) -> str | None:
        """Return the value of ``key`` decoded as UTF-8, or None."""
        value = self.get(key)
        return None if value is None else value.decode()

    def get_json(self, key: str) -> Any:
        """Return the value of ``key`` parsed as JSON, or None when it is absent."""
        value = self.get(key)
        return None if value is None else _json.loads(value)

    def set(self, key: str, value: bytes | str, *, ttl_ms: int | None = None) -> None:
        """Store ``value`` (str is stored as UTF-8); ``ttl_ms`` makes the key expire."""
        data = value.encode() if isinstance(value, str) else value
        _host(lambda: _kv.set(self.store, key, data, ttl_ms), f"kv set {self.store}/{key}")

    def set_json(self, key: str, value: Any, *, ttl_ms: int | None = None) -> None:
        """Store ``value`` encoded as JSON."""
        self.set(key, _json.dumps(value, separators=(",", ":")), ttl_ms=ttl_ms)

    def delete(self, key: str) -> None:
        """Remove ``key``; a missing key is not an error."""
        _host(lambda: _kv.delete(self.store, key), f"kv delete {self.store}/{key}")

    def exists(self, key: str) -> bool:
        """Return whether ``key`` is present."""
        return _host(lambda: _kv.exists(self.store, key), f"kv exists {self.store}/{key}")

    def keys(self, prefix: str = "") -> list[str]:
        """Return the keys starting with ``prefix``."""
        return _host(lambda: _kv.list_keys(self.store, prefix), f"kv keys {self.store}/{prefix}*")

    def increment(self, key: str, delta: int = 1) -> int:
        """Add ``delta`` atomically and return the new value (a missing key counts as 0)."""
        return _host(lambda: _kv.increment(self.store, key, delta),
                     f"kv increment {self.store}/{key}")


kv = KeyValue("default")


def variable(name: str, default: str | None = None) -> str | None:
    """Return the manifest variable ``name`` (``[variables]``), or ``default`` when unset."""
    value = _host(lambda: _config.get(name), f"config get {name}")
    return default if value is None else value


def publish(broker: str, destination: str, body: bytes | str, *, key: bytes | str | None = None,
            headers: Iterable[tuple[str, str]] | Mapping[str, str] = ()) -> str:
    """Publish to ``destination`` on ``[brokers.<broker>]`` and return the broker's receipt
    once it confirmed (see docs/capabilities.md for destination forms). Needs a grant in the
    component's ``publish`` list; a refusal or a failure raises :class:`HostError`."""
    data = body.encode() if isinstance(body, str) else bytes(body)
    raw_key = key.encode() if isinstance(key, str) else key
    pairs = list(headers.items()) if isinstance(headers, Mapping) else list(headers)
    message = _publish.Message(broker, destination, raw_key, pairs, data)
    return _host(lambda: _publish.send(message), f"publish {broker}:{destination}")


class _Log:
    """Lines into the gateway's structured log, with the component and event id bound."""

    def debug(self, message: str) -> None:
        _log.emit(_log.Level.DEBUG, message)

    def info(self, message: str) -> None:
        _log.emit(_log.Level.INFO, message)

    def warn(self, message: str) -> None:
        _log.emit(_log.Level.WARN, message)

    def error(self, message: str) -> None:
        _log.emit(_log.Level.ERROR, message)


log = _Log()


def _host(call: Callable[[], T], what: str) -> T:
    # Host calls report failures as componentize-py's Err; translating them at the edge
    # keeps that type out of handler code (callers catch HostError).
    try:
        return call()
    except Err as exc:
        raise HostError(f"{what}: {exc.value}") from None


def _int_or_none(value: str | None) -> int | None:
    return int(value) if value is not None and value.lstrip("-").isdigit() else None


__all__ = [
    "BadRequest",
    "Fields",
    "HTTPError",
    "HostError",
    "KeyValue",
    "Request",
    "Response",
    "Retry",
    "handler",
    "kv",
    "log",
    "publish",
    "variable",
]
