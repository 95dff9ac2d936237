"""The schema of one ``[[trigger.amqp]]`` table and its checks at load."""

from __future__ import annotations

import msgspec

from gateway.errors import ConfigError
from triggers.amqp_topology import ExchangeKind, QueueType, dead_letter_routing_key
from triggers.base import TriggerContext
from triggers.delivery import BrokerTriggerConfig, Positive

FieldValue = str | int | float | bool


class AmqpConfig(BrokerTriggerConfig, kw_only=True, forbid_unknown_fields=True,
                 rename="kebab"):
    """The schema of one ``[[trigger.amqp]]`` table (plus the shared broker fields)."""

    queue: str
    # Declare queue, exchange, bindings and dead-letter exchange (idempotent). False: they
    # must exist already (checked passively at every connect).
    declare: bool = True
    queue_type: QueueType = "quorum"
    queue_arguments: dict[str, FieldValue] = msgspec.field(default_factory=dict)
    exchange: str | None = None
    exchange_type: ExchangeKind = "direct"
    binding_keys: list[str] = msgspec.field(default_factory=list)
    # Header holding the ordering key; by default the routing key is the key.
    key_header: str | None = None
    dead_letter_routing_key: str | None = None
    dead_letter_exchange_type: ExchangeKind = "direct"
    # Declared and bound to the dead-letter exchange so dead letters always have a route.
    dead_letter_queue: str | None = None
    confirm_timeout_ms: Positive = 10_000


def validate(config: AmqpConfig, context: TriggerContext) -> None:
    """Refuse a queue or exchange the broker would reject, and dead letters routed back."""
    def fail(field_name: str, message: str) -> ConfigError:
        return ConfigError(message, path=context.manifest_path,
                           field=f"{context.field}.{field_name}")

    if not config.queue:
        raise fail("queue", "queue must name a queue (the server-named empty queue would be "
                            "lost on reconnect)")
    if config.declare and config.queue.startswith("amq."):
        raise fail("queue", f"queue {config.queue!r}: names starting with 'amq.' are "
                            "reserved by the broker; choose another name or set declare = false")
    if config.exchange == "":
        raise fail("exchange", "the default exchange already routes by queue name; leave "
                               "`exchange` out to consume what is published to it")
    if config.dead_letter == "" and dead_letter_routing_key(config) == config.queue:
        raise fail("dead-letter-routing-key",
                   "dead-letter = \"\" (the default exchange) would route dead letters back "
                   "into the queue itself; set dead-letter-queue or dead-letter-routing-key")


__all__ = ["AmqpConfig", "FieldValue", "validate"]
