"""The executor's hand-off to its worker threads (gateway/handoff.py): results, exceptions,
the caller's context, cancellation and close, as asyncio.to_thread gives them."""

from __future__ import annotations

import asyncio
import contextvars
import threading

import pytest

from gateway.handoff import WorkerThreads

REQUEST = contextvars.ContextVar("request", default="none")


async def test_runs_off_the_loop_thread_with_the_callers_context() -> None:
    seen: list[tuple[str, bool]] = []

    def work(x: int) -> int:
        seen.append((REQUEST.get(), threading.current_thread() is threading.main_thread()))
        REQUEST.set("changed by the worker")  # must not leak back to the caller
        return x * 2

    workers: WorkerThreads[int, int] = WorkerThreads(work, name="t")
    REQUEST.set("ev-7")
    assert await workers.call(21) == 42
    assert seen == [("ev-7", False)]
    assert REQUEST.get() == "ev-7"
    workers.close()


async def test_an_exception_reaches_the_caller_and_the_thread_serves_on() -> None:
    def work(x: int) -> int:
        if x < 0:
            raise ValueError(f"negative {x}")
        return x

    workers: WorkerThreads[int, int] = WorkerThreads(work, name="t")
    with pytest.raises(ValueError, match="negative -1"):
        await workers.call(-1)
    assert await workers.call(5) == 5
    workers.close()


async def test_concurrent_calls_each_get_a_thread() -> None:
    # Three calls that only finish together: they deadlock unless each has its own thread.
    barrier = threading.Barrier(3, timeout=10)
    workers: WorkerThreads[int, int] = WorkerThreads(lambda x: barrier.wait() * 0 + x,
                                                     name="t")
    assert sorted(await asyncio.gather(*(workers.call(i) for i in range(3)))) == [0, 1, 2]
    workers.close()


async def test_a_cancelled_caller_does_not_block_the_next_call() -> None:
    release = threading.Event()
    started = threading.Event()

    def work(x: int) -> int:
        if x == 0:
            started.set()
            release.wait(10)
        return x

    workers: WorkerThreads[int, int] = WorkerThreads(work, name="t")
    stuck = asyncio.create_task(workers.call(0))
    await asyncio.to_thread(started.wait, 10)
    stuck.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stuck
    assert await workers.call(1) == 1  # another thread, while the first is still busy
    release.set()
    workers.close()


async def test_close_ends_the_threads_and_a_later_call_still_works() -> None:
    workers: WorkerThreads[int, int] = WorkerThreads(lambda x: x, name="closing-test")
    assert await workers.call(1) == 1
    workers.close()

    def named() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name.startswith("closing-test")]

    for thread in named():
        await asyncio.to_thread(thread.join, 10)
    assert named() == []
    assert await workers.call(2) == 2
    workers.close()
