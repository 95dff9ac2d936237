"""How a Redis Streams entry becomes an :class:`~bindings.types.Event`, and back; and how
the entries are read out of an XREADGROUP / XAUTOCLAIM reply.

A stream entry is a list of field/value pairs. wasmgate reads three fields by name and
passes every other field through as a header:

==================  ===================================================================
field               event
==================  ===================================================================
``data``            ``data`` (bytes as stored; missing: empty)
``key``             ``key`` (the ordering key; missing: none)
``content-type``    ``content_type``
anything else       ``headers`` (name and value decoded as UTF-8, invalid bytes replaced)
==================  ===================================================================

The event ``id`` is ``<stream>/<entry-id>``, the same on every redelivery, so a handler can
deduplicate; ``time`` is the entry id's millisecond timestamp (when Redis added it).

A dead letter is the original entry's fields, byte for byte, plus the
``wasmgate-dead-letter-*`` fields (see :func:`triggers.delivery.dead_letter_headers`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from bindings.types import Event
from triggers.delivery import attempt_metadata

DATA = b"data"
KEY = b"key"
CONTENT_TYPE = b"content-type"
_RESERVED = frozenset({DATA, KEY, CONTENT_TYPE})

Fields = Mapping[bytes, bytes]


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace")


def entry_time_micros(entry_id: bytes) -> int:
    """The time Redis added the entry: the ``<ms>`` part of ``<ms>-<seq>``, in µs."""
    millis, _, _ = entry_id.partition(b"-")
    return int(millis) * 1000 if millis.isdigit() else 0


def entry_to_event(stream: str, entry_id: bytes, fields: Fields, *, source: str, group: str,
                   consumer: str, delivery_count: int) -> Event:
    """The event for one entry delivered ``delivery_count`` times to this group."""
    headers = [(_text(k), _text(v)) for k, v in fields.items() if k not in _RESERVED]
    content_type = fields.get(CONTENT_TYPE)
    entry = entry_id.decode()
    return Event(
        id=f"{stream}/{entry}",
        source=source,
        type="wasmgate.redis-streams.message",
        subject=stream,
        time=entry_time_micros(entry_id),
        content_type=_text(content_type) if content_type is not None else None,
        key=fields.get(KEY),
        headers=headers,
        metadata=[
            ("stream", stream),
            ("entry-id", entry),
            ("group", group),
            ("consumer", consumer),
            ("delivery-count", str(delivery_count)),
            ("redelivered", "true" if delivery_count > 1 else "false"),
            *attempt_metadata(delivery_count),
        ],
        data=fields.get(DATA, b""),
    )


def dead_letter_fields(fields: Fields, extra: Sequence[tuple[str, str]]) -> dict[bytes, bytes]:
    """The dead-letter entry: the original fields unchanged, then ``extra`` (which wins on a
    name clash, e.g. when a dead letter is dead-lettered again)."""
    out = dict(fields)
    for name, value in extra:
        out[name.encode()] = value.encode()
    return out


def reply_entries(reply: Any) -> Iterable[tuple[bytes, Fields]]:
    """The (id, fields) pairs of an XREADGROUP reply (RESP2 list or RESP3 map)."""
    if not reply:
        return
    streams = reply.items() if isinstance(reply, dict) else reply
    for _name, entries in streams:
        # RESP3 nests one more list level per stream.
        for item in entries:
            if item and isinstance(item[0], list):
                for entry_id, fields in item:
                    yield entry_id, fields or {}
            else:
                entry_id, fields = item
                yield entry_id, fields or {}


def as_bytes(value: object) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def id_order(entry_id: bytes) -> tuple[int, int]:
    millis, _, seq = entry_id.partition(b"-")
    return int(millis), int(seq or 0)


__all__ = ["CONTENT_TYPE", "DATA", "KEY", "as_bytes", "dead_letter_fields", "entry_time_micros",
           "entry_to_event", "id_order", "reply_entries"]
