"""One thread that runs callbacks at their deadlines, for host calls that cannot watch the
clock themselves (a SQLite statement busy inside one virtual-machine step).

A timer per call would cost a thread start per statement; this keeps one daemon thread
and a heap. :meth:`DeadlineTimer.disarm` returns only once the callback has either run
or will never run, so a caller can tidy up after it without a race.
"""

from __future__ import annotations

import contextlib
import dataclasses
import heapq
import itertools
import threading
import time
from collections.abc import Callable

_COMPACT_AT = 1024


@dataclasses.dataclass(eq=False)
class Alarm:
    """An armed callback; pass it back to :meth:`DeadlineTimer.disarm`."""

    at: float
    callback: Callable[[], None]
    done: bool = False


class DeadlineTimer:
    """Calls each armed callback at its ``time.monotonic()`` time unless disarmed first."""

    def __init__(self) -> None:
        # Callbacks run while holding this lock, so disarm() waits for one in progress.
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Alarm]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None

    def arm(self, at: float, callback: Callable[[], None]) -> Alarm:
        alarm = Alarm(at, callback)
        with self._cond:
            # Disarmed alarms stay in the heap until their time; past a size, drop them all
            # at once (each costs O(1) then), so a busy database does not grow it unbounded.
            if len(self._heap) >= _COMPACT_AT:
                self._heap = [entry for entry in self._heap if not entry[2].done]
                heapq.heapify(self._heap)
            heapq.heappush(self._heap, (at, next(self._order), alarm))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="wasmgate-deadlines",
                                                daemon=True)
                self._thread.start()
            # Wake the thread only when it must sleep less than it does: most alarms are
            # disarmed long before their time, and a wake-up per statement costs a switch.
            if self._heap[0][2] is alarm:
                self._cond.notify()
        return alarm

    def disarm(self, alarm: Alarm) -> None:
        with self._cond:
            alarm.done = True  # left in the heap; skipped when its time comes

    def _run(self) -> None:
        with self._cond:
            while True:
                while self._heap and self._heap[0][2].done:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._cond.wait()
                    continue
                at, _, alarm = self._heap[0]
                wait = at - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                heapq.heappop(self._heap)
                alarm.done = True
                # One failing callback (a connection closed meanwhile) must not stop the
                # thread that serves every other deadline.
                with contextlib.suppress(Exception):
                    alarm.callback()


TIMER = DeadlineTimer()

__all__ = ["TIMER", "Alarm", "DeadlineTimer"]
