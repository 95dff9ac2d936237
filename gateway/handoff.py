"""Run blocking calls on long-lived worker threads and await them from the event loop.

``asyncio.to_thread`` costs ~45-65 µs a call on a loaded machine: it builds a
``concurrent.futures.Future`` and a work item, submits them to the loop's default executor
(which checks whether to start a thread on every submit), then chains that future to an
asyncio one through a done-callback. :class:`WorkerThreads` keeps what the hop needs and
drops the rest: a job is one tuple on a ``SimpleQueue`` (a C-level queue, no Python lock),
a started thread takes it, and the result comes back through one
``loop.call_soon_threadsafe`` onto an asyncio future.

Semantics kept from ``to_thread``: the call runs in a copy of the caller's context (the
guest's log lines carry the event id bound in contextvars), and cancelling the awaiting
task does not stop the call already running on its thread; its result is dropped.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Callable
from queue import SimpleQueue
from typing import Any, Generic, TypeVar

A = TypeVar("A")
R = TypeVar("R")

_Job = tuple[contextvars.Context, Callable[[Any], Any], Any, asyncio.AbstractEventLoop,
             "asyncio.Future[Any]"]


def _set_result(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():  # cancelled while the call ran
        future.set_result(value)


def _set_exception(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


class WorkerThreads(Generic[A, R]):
    """Daemon threads running ``func`` for awaiting callers.

    A call takes an idle thread or starts one, so it never queues behind a busy thread:
    the caller bounds concurrency (the executor's admission semaphore), and threads only
    grow to the peak number of calls in flight (plus calls whose caller was cancelled and
    that are still running). They stay, blocked on their queue, until :meth:`close`.
    """

    def __init__(self, func: Callable[[A], R], name: str) -> None:
        self._func = func
        self._name = name
        self._crew = _Crew()

    async def call(self, arg: A) -> R:
        """Run ``func(arg)`` on a worker thread and return its result (or raise)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        crew = self._crew
        with crew.lock:
            if crew.idle:
                crew.idle -= 1
            else:
                thread = threading.Thread(target=_work, args=(crew,), daemon=True,
                                          name=f"{self._name}-{len(crew.threads)}")
                crew.threads.append(thread)
                thread.start()
        crew.jobs.put((contextvars.copy_context(), self._func, arg, loop, future))
        return await future

    def close(self) -> None:
        """Let every thread finish its current call and exit.

        A later call starts new threads, so a pool stays usable after its app stopped.
        """
        crew, self._crew = self._crew, _Crew()
        with crew.lock:
            for _ in crew.threads:
                crew.jobs.put(None)


class _Crew:
    """One generation of threads: their queue, and how many wait on it for a job."""

    __slots__ = ("idle", "jobs", "lock", "threads")

    def __init__(self) -> None:
        self.jobs: SimpleQueue[_Job | None] = SimpleQueue()
        self.threads: list[threading.Thread] = []
        self.idle = 0
        self.lock = threading.Lock()


def _work(crew: _Crew) -> None:
    get = crew.jobs.get
    while True:
        job = get()
        if job is None:
            return
        ctx, func, arg, loop, future = job
        try:
            value = ctx.run(func, arg)
        except BaseException as exc:  # delivered to the awaiting caller, as to_thread does
            setter: Callable[..., None] = _set_exception
            value = exc
        else:
            setter = _set_result
        # Counted idle before the result is delivered: the next call, which can only come
        # once a result freed an admission slot, then finds this thread available.
        with crew.lock:
            crew.idle += 1
        _deliver(loop, setter, future, value)
        del job, ctx, arg, future, loop, value  # hold no event or response while idle


def _deliver(loop: asyncio.AbstractEventLoop, setter: Callable[..., None],
             future: asyncio.Future[Any], value: Any) -> None:
    # Not contextlib.suppress: this is the per-call path.
    try:  # noqa: SIM105
        loop.call_soon_threadsafe(setter, future, value)
    except RuntimeError:
        pass  # the loop closed while the call ran: nobody is waiting any more


__all__ = ["WorkerThreads"]
