"""The msgspec mirror of the WIT records in ``wit/handler.wit``.

These Structs are what triggers build and what the executor converts into component
values. They are msgspec Structs (not dataclasses) because they are created for every
event on the hot path and also decoded from CloudEvents JSON by ``wasmgate invoke``.
"""

from __future__ import annotations

import base64
import time
import uuid

import msgspec

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

    Raises ``msgspec.ValidationError`` / ``msgspec.DecodeError`` with the offending path.
    """
    ce = _cloud_event_decoder.decode(raw)
    if ce.data_base64 is not None:
        data = base64.b64decode(ce.data_base64)
    elif not bytes(ce.data) or bytes(ce.data) == b"null":
        data = b""
    else:
        value = msgspec.json.decode(ce.data)
        # A JSON string is the payload itself; anything else is passed on as JSON.
        data = value.encode() if isinstance(value, str) else bytes(ce.data)
    content_type = ce.datacontenttype
    if content_type is None and data and ce.data_base64 is None:
        content_type = "application/json"
    ts = now_micros()
    if ce.time is not None:
        from datetime import datetime

        ts = int(datetime.fromisoformat(ce.time.replace("Z", "+00:00")).timestamp() * 1_000_000)
    return Event(
        id=ce.id or new_event_id(),
        source=ce.source,
        type=ce.type,
        subject=ce.subject,
        time=ts,
        content_type=content_type,
        key=ce.key.encode() if ce.key is not None else None,
        headers=list(ce.headers.items()),
        metadata=list(ce.metadata.items()),
        data=data,
    )


__all__ = ["CloudEventJSON", "Event", "Pairs", "Response", "event_from_cloudevent_json",
           "new_event_id", "now_micros"]
