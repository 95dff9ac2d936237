"""``wasmgate dead-letters``: inspect, replay and purge what broker triggers dead-lettered.

==================  ==============================================  ==================
module              dead-letter destination                         id
==================  ==============================================  ==================
``kafka``           the ``dead-letter`` topic (+ a marker topic)     ``<partition>-<offset>``
``jetstream``       the stream storing the ``dead-letter`` subject  stream sequence
``amqp``            the ``dead-letter-queue``                       ``wasmgate-dead-letter-id``
``redis_streams``   the ``dead-letter`` stream                      entry id
==================  ==============================================  ==================

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
