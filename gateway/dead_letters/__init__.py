"""``wasmgate dead-letters``: inspect, replay and purge what broker triggers dead-lettered.

One store module per broker, each reading the trigger's dead-letter destination:

* ``kafka``: the ``dead-letter`` topic, plus a marker topic for what was replayed or
  purged (a record cannot be deleted); id ``<partition>-<offset>``.
* ``jetstream``: the stream that stores the ``dead-letter`` subject; id its sequence.
* ``amqp``: the ``dead-letter-queue``; id the ``wasmgate-dead-letter-id`` header.
* ``redis_streams``: the ``dead-letter`` stream; id the entry id.

Each implements :class:`~gateway.dead_letters.model.DeadLetterStore`; :mod:`.stores` picks
one for a trigger of a manifest; :mod:`.cli` is the command. See docs/dead-letters.md.
"""

from __future__ import annotations

from gateway.dead_letters.model import (
    REPLAYED_FROM,
    DeadLetter,
    DeadLetterNotFound,
    DeadLetterStore,
)

__all__ = ["REPLAYED_FROM", "DeadLetter", "DeadLetterNotFound", "DeadLetterStore"]
