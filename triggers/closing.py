"""One way to close a broker client on the way out: whatever its close throws is logged, not
raised, so one failing client never keeps the rest of a stop from running; but a
cancellation of the caller's own task always goes through.

Every trigger's stop, reconnect and dead-letter path closes its clients with
``close_quietly``. Broker clients end their close with surprising exceptions after a
broker cut: aiokafka's ``consumer.stop()`` with the ``CancelledError`` of a fetch it
cancelled itself (seen in CI), aio-pika and redis-py with connection errors, nats-py with
its own timeouts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

import structlog

from triggers.delivery import describe

log = structlog.get_logger("wasmgate.triggers")


async def close_quietly(closing: Awaitable[object], *, what: str) -> None:
    """Await ``closing`` (a client's close or stop), logging what it throws; ``what`` names
    the client in that log line ("kafka consumer", "amqp connection", ...)."""
    try:
        await closing
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise  # our own stop is being cancelled: pass that on
        # The client cancelled a task of its own and its close re-raised that: nobody
        # cancelled us, so the caller goes on closing the rest.
        log.debug("a client's close ended with its own cancellation", client=what)
    except Exception as exc:
        log.debug("error while closing a client", client=what, error=describe(exc))


__all__ = ["close_quietly"]
