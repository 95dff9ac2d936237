"""``quietly`` closes a Kafka client whatever its stop throws, but never swallows a
cancellation of the caller's own task (logic only: the clients are stand-ins)."""

from __future__ import annotations

import asyncio

import pytest

from triggers.kafka_dead_letters import quietly


async def _raises(exc: BaseException) -> None:
    raise exc


async def test_an_error_or_a_stray_cancellation_from_a_stop_is_logged_not_raised() -> None:
    await quietly(_raises(RuntimeError("broker gone")))
    # aiokafka's consumer.stop() can end with the CancelledError of a fetch task it
    # cancelled itself: the caller was not cancelled and goes on closing the rest.
    await quietly(_raises(asyncio.CancelledError()))


async def test_a_cancellation_of_the_caller_itself_goes_through() -> None:
    started = asyncio.Event()

    async def slow_stop() -> None:
        started.set()
        await asyncio.sleep(60)

    task = asyncio.create_task(quietly(slow_stop()))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
