"""Start returns once the trigger accepts messages: the one wait every broker trigger's
``start()`` ends with.

"Accepting" is the adapter's own ``ready`` event: subscribed and confirmed by the server
(core NATS, Redis pub/sub), consumer bound (JetStream, AMQP), consumer group made or found
(Redis Streams). A message published after ``start()`` returns is then handled, even where
the broker keeps nothing for a subscriber that is not there yet, or where the trigger
itself declares the queue or creates the group at the stream's end (``$``).

A broker that is down at start is not waited for past its connect timeout: ``start()``
returns with the intake still retrying in the background (the app serves its other triggers
meanwhile), and the adapter logs that it is waiting.
"""

from __future__ import annotations

import asyncio


async def until_accepting(ready: asyncio.Event, intake: asyncio.Task[None], *,
                          timeout_s: float) -> bool:
    """Return True once ``ready`` is set, False when ``timeout_s`` passed first (``intake``
    goes on retrying). An ``intake`` that ended before that raises its error here: a bug,
    not a broker outage, surfaced at start rather than left to a log line."""
    waiting = asyncio.create_task(ready.wait())
    try:
        await asyncio.wait([waiting, intake], timeout=timeout_s,
                           return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiting.cancel()
    if ready.is_set():
        return True
    if intake.done():
        intake.result()
    return False


__all__ = ["until_accepting"]
