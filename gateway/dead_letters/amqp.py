"""Dead letters of an ``[[trigger.amqp]]``: messages in its ``dead-letter-queue``.

AMQP has no way to read a queue without taking its messages, so listing takes every
message with basic.get *unacked* and holds them for the session; closing the session hands
every one still held back (nack, requeue), in order. Replay publishes a copy (original
body, properties and headers) to the consumed queue through the default exchange, with a
publisher confirm and ``mandatory`` (a missing queue is an error, not a silent drop), and
only then acks the held dead letter. Going through the default exchange puts the message
on this trigger's queue only, not on every queue bound to the original exchange.

The id is the ``wasmgate-dead-letter-id`` header (else the message id, else its position).
Copies of one dead letter (the same ``wasmgate-dead-letter-id``: written again after a kill
before its message was acked) are listed once; replaying or purging it acks every copy.
"""

from __future__ import annotations

from typing import Any

import aio_pika
import aiormq.exceptions
from aio_pika.abc import AbstractIncomingMessage, DeliveryMode

from gateway.dead_letters.model import REPLAYED_FROM, DeadLetter
from gateway.errors import BrokerError
from gateway.manifest import BrokerSpec
from triggers.amqp_config import AmqpConfig
from triggers.amqp_messages import DELIVERY_COUNT, header_text
from triggers.delivery import DL_ID

_DEAD_LETTER_PREFIX = "wasmgate-dead-letter-"


class AmqpDeadLetters:
    def __init__(self, config: AmqpConfig, spec: BrokerSpec) -> None:
        assert config.dead_letter_queue is not None
        self.config, self.spec, self.queue = config, spec, config.dead_letter_queue
        self.describe = f"amqp queue {self.queue!r} on broker `{config.broker}`"
        self._connection: Any = None
        self._channel: Any = None
        self._held: dict[str, AbstractIncomingMessage] | None = None
        # Listed id -> the later copies of the same dead letter, acked along with it.
        self._copies: dict[str, list[AbstractIncomingMessage]] = {}

    async def open(self) -> None:
        from gateway.brokers.amqp import connect

        self._connection = await connect(self.config.broker, self.spec,
                                         connection_name=f"wasmgate-dead-letters:{self.queue}")
        self._channel = await self._connection.channel(publisher_confirms=True,
                                                       on_return_raises=True)

    async def letters(self) -> list[DeadLetter]:
        if self._held is None:
            self._held = {}
            try:
                queue = await self._channel.declare_queue(self.queue, passive=True)
            except aiormq.exceptions.ChannelNotFoundEntity:
                raise BrokerError(f"{self.describe} does not exist; the trigger declares it "
                                  "when it starts (declare = true), or create it") from None
            first_of: dict[str, str] = {}  # wasmgate-dead-letter-id -> its listed id
            taken = 0
            while (message := await queue.get(no_ack=False, fail=False)) is not None:
                taken += 1
                position = f"#{taken}"
                headers = message.headers or {}
                dead_letter_id = header_text(headers[DL_ID]) if DL_ID in headers else None
                if dead_letter_id is not None and dead_letter_id in first_of:
                    self._copies[first_of[dead_letter_id]].append(message)
                    continue
                ident = (dead_letter_id if dead_letter_id is not None
                         else message.message_id or position)
                # Message ids repeat (a producer's own, or one message dead-lettered
                # twice): each held message keeps an id of its own, or it would be
                # neither listed nor purged.
                while ident in self._held:
                    ident = f"{ident}{position}"
                self._held[ident] = message
                self._copies[ident] = []
                if dead_letter_id is not None:
                    first_of[dead_letter_id] = ident
        return [_letter(ident, message, self.queue) for ident, message in self._held.items()]

    async def replay(self, letter: DeadLetter, *, replayed_from: str) -> str:
        message = self._take(letter)
        headers: dict[str, Any] = {
            k: v for k, v in (message.headers or {}).items()
            # The broker's counter restarts: a fresh attempt count.
            if not k.startswith(_DEAD_LETTER_PREFIX) and k not in (DELIVERY_COUNT, "x-death")}
        headers[REPLAYED_FROM] = replayed_from
        copy = aio_pika.Message(
            message.body, headers=headers, content_type=message.content_type,
            content_encoding=message.content_encoding, delivery_mode=DeliveryMode.PERSISTENT,
            priority=message.priority, correlation_id=message.correlation_id,
            reply_to=message.reply_to, message_id=message.message_id,
            timestamp=message.timestamp, type=message.type, app_id=message.app_id)
        try:
            await self._channel.default_exchange.publish(copy, routing_key=self.config.queue,
                                                         mandatory=True)
        except aio_pika.exceptions.DeliveryError as exc:
            raise BrokerError(f"queue {self.config.queue!r} did not take the replayed message "
                              f"(does it still exist?): {exc}; the dead letter is kept") from exc
        await message.ack()
        await self._ack_copies(letter)
        return f"amqp queue {self.config.queue!r}"

    async def purge(self, letters: list[DeadLetter]) -> int:
        for letter in letters:
            await self._take(letter).ack()
            await self._ack_copies(letter)
        return len(letters)

    async def _ack_copies(self, letter: DeadLetter) -> None:
        for copy in self._copies.pop(letter.id, []):
            await copy.ack()

    def _take(self, letter: DeadLetter) -> AbstractIncomingMessage:
        assert self._held is not None, "letters() first"
        return self._held.pop(letter.id)

    async def close(self) -> None:
        try:
            copies = [copy for listed in self._copies.values() for copy in listed]
            for message in [*(self._held or {}).values(), *copies]:
                await message.nack(requeue=True)
        finally:
            self._held = None
            self._copies = {}
            if self._connection is not None:
                await self._connection.close()


def _letter(ident: str, message: AbstractIncomingMessage, queue: str) -> DeadLetter:
    headers = [(k, header_text(v)) for k, v in (message.headers or {}).items()]
    if message.content_type:
        headers.append(("content-type", message.content_type))
    return DeadLetter(id=ident, headers=headers, body=message.body,
                      stored_at=message.timestamp,
                      location={"queue": queue,
                                "delivery-tag": str(message.delivery_tag)})


__all__ = ["AmqpDeadLetters"]
