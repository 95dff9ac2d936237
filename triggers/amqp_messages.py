"""AMQP messages in and out of the gateway: a delivery becomes an :class:`Event`; an
outcome becomes a reply or a dead letter.

Pure functions over aio-pika's message types, so they are unit-tested without a broker.
The connection, the settle calls and the retry loop live in :mod:`triggers.amqp`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage, DeliveryMode

from bindings.types import Event, Response, new_event_id, now_micros
from gateway.dispatch import Outcome
from triggers.delivery import attempt_metadata, dead_letter_headers

# Set by quorum queues on every redelivery: how many times the broker handed the message
# out before (absent on the first delivery).
DELIVERY_COUNT = "x-delivery-count"
# The handler's status on a reply (the body alone cannot say it failed).
REPLY_STATUS = "wasmgate-status"
_DEAD_LETTER_PREFIX = "wasmgate-dead-letter-"


def delivery_count(message: AbstractIncomingMessage) -> int:
    """How many times the broker has delivered ``message``, this delivery included.

    Quorum queues count (``x-delivery-count``); classic queues only say ``redelivered``,
    which proves at least one delivery before this one.
    """
    count = (message.headers or {}).get(DELIVERY_COUNT)
    if isinstance(count, int) and not isinstance(count, bool) and count >= 0:
        return count + 1
    return 2 if message.redelivered else 1


def header_text(value: Any) -> str:
    """An AMQP field value as the string a WIT header carries (tables become JSON)."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict | list | tuple):
        return json.dumps(value, default=header_text, separators=(",", ":"))
    return str(value)


def ordering_key(message: AbstractIncomingMessage, key_header: str | None) -> bytes | None:
    """The event key: the ``key_header`` header when configured, else the routing key."""
    if key_header is not None:
        value = (message.headers or {}).get(key_header)
        return None if value is None else header_text(value).encode()
    return message.routing_key.encode() if message.routing_key else None


def _time_micros(timestamp: datetime | None) -> int:
    if timestamp is None:
        return now_micros()
    if timestamp.tzinfo is None:
        timestamp = timestamp.replace(tzinfo=UTC)
    return int(timestamp.timestamp() * 1_000_000)


def event_from_message(message: AbstractIncomingMessage, *, broker: str, queue: str,
                       key_header: str | None) -> Event:
    """The canonical event for one delivery from ``queue`` on broker ``broker``."""
    headers = [(name, header_text(value)) for name, value in (message.headers or {}).items()]
    metadata = [("queue", queue), ("exchange", message.exchange or ""),
                ("routing-key", message.routing_key or ""),
                ("delivery-tag", str(message.delivery_tag)),
                ("redelivered", "true" if message.redelivered else "false"),
                ("delivery-count", str(delivery_count(message)))]
    for name, value in (("reply-to", message.reply_to),
                        ("correlation-id", message.correlation_id),
                        ("message-id", message.message_id), ("type", message.type),
                        ("app-id", message.app_id)):
        if value:
            metadata.append((name, value))
    metadata += attempt_metadata(delivery_count(message))
    return Event(
        # A publisher's message id names the event (consumers dedupe on it); else fresh.
        id=message.message_id or new_event_id(),
        source=f"wasmgate/amqp/{broker}",
        type="wasmgate.amqp.message",
        subject=queue,
        time=_time_micros(message.timestamp),
        content_type=message.content_type,
        key=ordering_key(message, key_header),
        headers=headers,
        metadata=metadata,
        data=message.body,
    )


def dead_letter_message(message: AbstractIncomingMessage, event: Event, outcome: Outcome,
                        component: str) -> aio_pika.Message:
    """A copy of ``message`` for the dead-letter exchange: same body and properties, its
    original (typed) headers, plus the ``wasmgate-dead-letter-*`` headers saying why."""
    headers: dict[str, Any] = {k: v for k, v in (message.headers or {}).items()
                               # The broker's own counter, not the publisher's header.
                               if k != DELIVERY_COUNT}
    for name, value in dead_letter_headers(event, outcome, component):
        if name.startswith(_DEAD_LETTER_PREFIX):
            headers[name] = value
    return aio_pika.Message(
        message.body, headers=headers, content_type=message.content_type,
        content_encoding=message.content_encoding,
        # A dead letter is kept until someone looks at it, whatever the original said.
        delivery_mode=DeliveryMode.PERSISTENT, priority=message.priority,
        correlation_id=message.correlation_id, reply_to=message.reply_to,
        message_id=message.message_id, timestamp=message.timestamp, type=message.type,
        app_id=message.app_id,
    )


def reply_message(request: AbstractIncomingMessage, outcome: Outcome) -> aio_pika.Message:
    """The reply to a request that carried ``reply_to``: the handler's body, its headers,
    the status in ``wasmgate-status``, the request's correlation id."""
    response = outcome.response
    if response is None:
        # The handler never answered (error, trap, timeout): the caller still learns why.
        response = Response(status=outcome.status,
                            headers=[("content-type", "text/plain; charset=utf-8")],
                            body=(outcome.error or "handler failed").encode())
    headers: dict[str, Any] = dict(_without_content_type(response.headers))
    headers[REPLY_STATUS] = str(response.status)
    return aio_pika.Message(
        response.body, headers=headers, content_type=_content_type(response.headers),
        correlation_id=request.correlation_id,
        # The requester waits for it now; nothing gains from writing it to disk.
        delivery_mode=DeliveryMode.NOT_PERSISTENT,
    )


def _content_type(headers: list[tuple[str, str]]) -> str | None:
    for name, value in headers:
        if name.lower() == "content-type":
            return value
    return None


def _without_content_type(headers: list[tuple[str, str]]) -> Mapping[str, str]:
    return {name: value for name, value in headers if name.lower() != "content-type"}


__all__ = ["DELIVERY_COUNT", "REPLY_STATUS", "dead_letter_message", "delivery_count",
           "event_from_message", "header_text", "ordering_key", "reply_message"]
