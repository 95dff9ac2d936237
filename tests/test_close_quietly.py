"""``close_quietly`` closes a broker client whatever its close throws, but never swallows a
cancellation of the caller's own task (logic only: the clients are stand-ins)."""

from __future__ import annotations

import asyncio

import pytest

from triggers.closing import close_quietly


async def _raises(exc: BaseException) -> None:
    raise exc


async def test_an_error_or_a_stray_cancellation_from_a_stop_is_logged_not_raised() -> None:
    await close_quietly(_raises(RuntimeError("broker gone")), what="test client")
    # aiokafka's consumer.stop() can end with the CancelledError of a fetch task it
    # cancelled itself: the caller was not cancelled and goes on closing the rest.
    await close_quietly(_raises(asyncio.CancelledError()), what="test client")


async def test_a_cancellation_of_the_caller_itself_goes_through() -> None:
    started = asyncio.Event()

    async def slow_stop() -> None:
        started.set()
        await asyncio.sleep(60)

    task = asyncio.create_task(close_quietly(slow_stop(), what="test client"))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
