"""The msgspec mirror of the WIT records in ``wit/handler.wit``.

These Structs are what triggers build and what the executor converts into component
values. They are msgspec Structs (not dataclasses) because they are created for every
event on the hot path and also decoded from CloudEvents JSON by ``wasmgate invoke``.
"""

from __future__ import annotations

import base64
import time
import uuid
from datetime import UTC, datetime

import msgspec

from gateway.errors import InvalidEvent

Pairs = list[tuple[str, str]]


class Event(msgspec.Struct, kw_only=True, gc=False):
    """One event, as the component sees it (CloudEvents 1.0 attributes plus transport data)."""

    id: str
    source: str
    type: str
    subject: str = ""
    time: int = 0  # microseconds since the Unix epoch, UTC
    content_type: str | None = None
    key: bytes | None = None
    headers: Pairs = msgspec.field(default_factory=list)
    metadata: Pairs = msgspec.field(default_factory=list)
    data: bytes = b""

    def meta(self, name: str) -> str | None:
        """Return the first metadata value called ``name``, or None."""
        for k, v in self.metadata:
            if k == name:
                return v
        return None


class Response(msgspec.Struct, kw_only=True, gc=False):
    """What a component returned: an HTTP-style status, headers and a body."""

    status: int = 200
    headers: Pairs = msgspec.field(default_factory=list)
    body: bytes = b""


def new_event_id() -> str:
    """Return a fresh, unique event id."""
    return uuid.uuid4().hex


def now_micros() -> int:
    """Return the current time in microseconds since the Unix epoch."""
    return time.time_ns() // 1000


class CloudEventJSON(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    """CloudEvents 1.0 JSON format, as accepted by ``wasmgate invoke --event``.

    ``data`` may be any JSON value (encoded as JSON bytes for the handler) and
    ``data_base64`` carries binary data. The extensions ``subject``, ``headers``,
    ``metadata`` and ``key`` are wasmgate's own.
    """

    specversion: str = "1.0"
    id: str = ""
    source: str = "wasmgate/invoke"
    type: str = "wasmgate.invoke"
    subject: str = ""
    time: str | None = None
    datacontenttype: str | None = None
    data: msgspec.Raw = msgspec.field(default_factory=msgspec.Raw)
    data_base64: str | None = None
    key: str | None = None
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    metadata: dict[str, str] = msgspec.field(default_factory=dict)


_cloud_event_decoder = msgspec.json.Decoder(CloudEventJSON)

def event_from_cloudevent_json(raw: bytes) -> Event:
    """Decode a CloudEvents JSON document into an Event.

    Raises :class:`~gateway.errors.InvalidEvent` naming the attribute at fault (msgspec's
    ``$.path`` for a wrong type), so a caller catches one error for any input.
    """
    try:
        ce = _cloud_event_decoder.decode(raw)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise InvalidEvent(str(exc)) from exc
    if ce.data_base64 is not None:
        try:
            data = base64.b64decode(ce.data_base64, validate=True)
        except ValueError as exc:  # binascii.Error
            raise InvalidEvent(f"`data_base64` is not valid base64: {exc}") from exc
    elif not bytes(ce.data) or bytes(ce.data) == b"null":
        data = b""
    elif bytes(ce.data).startswith(b'"'):
        # A JSON string is the payload itself (msgspec left `data` raw, so its bytes were
        # not checked as UTF-8 until now)...
        try:
            text = msgspec.json.decode(ce.data, type=str)
        except msgspec.DecodeError as exc:
            raise InvalidEvent(f"`data` is not valid UTF-8 JSON text: {exc}") from None
        data = _utf8(text, "data")
    else:
        # ...anything else is passed on as JSON, as written: not decoded here, where a
        # number past a double's range (1e999) raised a raw ValidationError.
        data = bytes(ce.data)
    content_type = ce.datacontenttype
    if content_type is None and data and ce.data_base64 is None:
        content_type = "application/json"
    event = Event(
        id=ce.id or new_event_id(),
        source=ce.source,
        type=ce.type,
        subject=ce.subject,
        time=now_micros() if ce.time is None else _micros(ce.time),
        content_type=content_type,
        key=_utf8(ce.key, "key") if ce.key is not None else None,
        headers=list(ce.headers.items()),
        metadata=list(ce.metadata.items()),
        data=data,
    )
    # JSON may carry lone surrogates ("\ud800"), which no WIT string can hold: refused here
    # rather than failing when the event is handed to the component.
    for name in ("id", "source", "type", "subject", "datacontenttype"):
        text = getattr(ce, name)
        if text is not None:
            _utf8(text, name)
    for name, pairs in (("headers", event.headers), ("metadata", event.metadata)):
        for k, v in pairs:
            _utf8(k + v, f"{name}.{k!r}" if k.isprintable() else name)
    return event


def _utf8(text: str, attribute: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidEvent(f"`{attribute}` is not valid Unicode text ({exc.reason} at "
                           f"position {exc.start})") from None


def _micros(text: str) -> int:
    """RFC 3339 ``time`` as microseconds since the epoch (UTC when no offset is given)."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise InvalidEvent(f"`time` {text!r} is not an RFC 3339 timestamp "
                           f"(e.g. \"2026-01-31T12:00:00Z\"): {exc}") from None
    if moment.tzinfo is None:
        # Without an offset the host's timezone would decide the value; RFC 3339 requires an
        # offset, and UTC is the reading least likely to surprise.
        moment = moment.replace(tzinfo=UTC)
    delta = moment - _EPOCH
    micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    if micros < 0:
        raise InvalidEvent(f"`time` {text!r} is before 1970-01-01T00:00:00Z; an event's time "
                           "is unsigned microseconds since the Unix epoch")
    # datetime stops at year 9999, far inside the WIT's u64, so only the lower bound checks.
    return micros


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


__all__ = ["CloudEventJSON", "Event", "Pairs", "Response", "event_from_cloudevent_json",
           "new_event_id", "now_micros"]
