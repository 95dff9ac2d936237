"""The queues, exchanges and bindings an ``[[trigger.amqp]]`` table asks for.

With ``declare = true`` (the default) everything is declared idempotently at every
(re)connect, so the trigger also works against a fresh broker. With ``declare = false``
the queue and the dead-letter exchange are only checked (passive declare): an operator
owns the topology and a missing piece is reported, never created.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from aio_pika.abc import AbstractChannel, AbstractQueue, ExchangeType

if TYPE_CHECKING:
    from triggers.amqp_config import AmqpConfig

QueueType = Literal["quorum", "classic"]
ExchangeKind = Literal["direct", "fanout", "topic", "headers"]


def queue_arguments(queue_type: QueueType, extra: dict[str, Any]) -> dict[str, Any]:
    """The ``x-`` arguments the queue is declared with (they must match an existing queue's
    arguments, or the broker refuses the declaration with PRECONDITION_FAILED)."""
    return {"x-queue-type": queue_type, **extra}


def binding_keys(config: AmqpConfig) -> list[str]:
    """The binding keys of the queue on ``exchange``: the configured ones, else what binds
    everything the exchange type can route (``#`` for topic, the queue name for direct)."""
    if config.binding_keys:
        return list(config.binding_keys)
    if config.exchange_type == "topic":
        return ["#"]
    if config.exchange_type == "direct":
        return [config.queue]
    return [""]


def dead_letter_routing_key(config: AmqpConfig) -> str:
    """Where dead letters are routed on the dead-letter exchange: the configured key, the
    dead-letter queue's name on the default exchange, else the source queue's name."""
    if config.dead_letter_routing_key:
        return config.dead_letter_routing_key
    if config.dead_letter == "" and config.dead_letter_queue:
        return config.dead_letter_queue
    return config.queue


async def declare(channel: AbstractChannel, config: AmqpConfig) -> AbstractQueue:
    """Declare (or, with ``declare = false``, check) the topology; return the queue."""
    if not config.declare:
        queue = await channel.declare_queue(config.queue, passive=True)
        if config.dead_letter:
            await channel.declare_exchange(config.dead_letter, passive=True)
        return queue
    queue = await channel.declare_queue(
        config.queue, durable=True,
        arguments=queue_arguments(config.queue_type, config.queue_arguments))
    if config.exchange:
        exchange = await channel.declare_exchange(
            config.exchange, ExchangeType(config.exchange_type), durable=True)
        for key in binding_keys(config):
            await queue.bind(exchange, routing_key=key)
    if config.dead_letter:  # "" is the default exchange: nothing to declare
        dead = await channel.declare_exchange(
            config.dead_letter, ExchangeType(config.dead_letter_exchange_type), durable=True)
        if config.dead_letter_queue:
            # Bound here so that dead letters are never unroutable (and so never lost).
            dlq = await channel.declare_queue(
                config.dead_letter_queue, durable=True,
                arguments=queue_arguments(config.queue_type, {}))
            await dlq.bind(dead, routing_key=dead_letter_routing_key(config))
    elif config.dead_letter == "" and config.dead_letter_queue:
        await channel.declare_queue(config.dead_letter_queue, durable=True,
                                    arguments=queue_arguments(config.queue_type, {}))
    return queue


__all__ = ["ExchangeKind", "QueueType", "binding_keys", "dead_letter_routing_key", "declare",
           "queue_arguments"]
