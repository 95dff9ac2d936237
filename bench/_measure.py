"""What every broker benchmark measures and prints the same way.

* :class:`Completions`: done times keyed by message id, for benches whose publisher keeps
  the publish time (the consumer only sees the id).
* :class:`StampedLatencies` with :func:`stamped`: the publish time travels in the payload's
  first 8 bytes, for benches whose consumer sees the payload.
* :func:`percentiles`, :func:`print_table`, :func:`ratios`, :func:`load_average`: the
  numbers and the side-by-side markdown table that BENCHMARKS.md quotes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import statistics
import struct
import time
from collections.abc import Awaitable, Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import structlog

STAMP = struct.Struct(">q")

K = TypeVar("K", bound=Hashable)


class Completions(Generic[K]):
    """Done times per message id; ``finished`` is set once ``expect`` ids are in."""

    def __init__(self, expect: int = 0) -> None:
        self.done: dict[K, float] = {}
        self.finished = asyncio.Event()
        self.expect = expect

    def mark(self, key: K) -> None:
        self.done[key] = time.perf_counter()
        if len(self.done) >= self.expect:
            self.finished.set()

    def reset(self, expect: int) -> None:
        """Forget what was marked and wait for ``expect`` new ids."""
        self.done.clear()
        self.finished.clear()
        self.expect = expect

    def latencies_ms(self, published: Mapping[K, float]) -> list[float]:
        """Publish -> done of every id in ``published`` (``time.perf_counter`` seconds)."""
        return [(self.done[key] - t) * 1000 for key, t in published.items()]


    async def burst_then_paced(self, start: Callable[[], Awaitable[None]],
                               publish: Callable[[int], Awaitable[K]], *, burst: int,
                               paced: int, rate: float) -> dict[str, float]:
        """Throughput and latency of one consumer, in that order.

        ``burst`` messages are already waiting: the clock runs from ``start()`` until the
        last is done. Then ``paced`` more are published at ``rate``/s while the consumer
        runs; ``publish(i)`` returns the id the consumer will mark. Returns events/s and
        p50/p99 latency in ms.
        """
        self.reset(burst)
        t0 = time.perf_counter()
        await start()
        await asyncio.wait_for(self.finished.wait(), 600)
        elapsed = max(self.done.values()) - t0
        self.reset(paced)
        published: dict[K, float] = {}
        for i in range(paced):
            t = time.perf_counter()
            published[await publish(i)] = t
            await asyncio.sleep(max(0.0, 1 / rate - (time.perf_counter() - t)))
        await asyncio.wait_for(self.finished.wait(), 120)
        p50, p99 = percentiles(self.latencies_ms(published))
        return {"rate": burst / elapsed, "p50": p50, "p99": p99}


def stamped(size: int) -> bytes:
    """A payload of ``size`` bytes (at least 8) that carries its own publish time."""
    return STAMP.pack(time.perf_counter_ns()) + b"x" * max(0, size - STAMP.size)


@dataclass
class StampedLatencies:
    """Publish -> done latencies of :func:`stamped` payloads; ``done`` fires after
    ``expected`` of them, ``last`` is when the latest one was recorded."""

    expected: int
    latencies_ms: list[float] = field(default_factory=list)
    last: float = 0.0  # time.perf_counter() seconds
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def record(self, payload: bytes) -> None:
        now = time.perf_counter_ns()
        self.latencies_ms.append((now - STAMP.unpack_from(payload)[0]) / 1e6)
        self.last = now / 1e9
        if len(self.latencies_ms) >= self.expected:
            self.done.set()


def percentiles(latencies_ms: Sequence[float]) -> tuple[float, float]:
    """(p50, p99) of at least two samples (``statistics.quantiles``, exclusive method)."""
    cuts = statistics.quantiles(latencies_ms, n=100)
    return cuts[49], cuts[98]


def load_average() -> str:
    """The machine's load, for the line above a table: the numbers move with it."""
    one, five, fifteen = os.getloadavg()
    return (f"load average {one:.2f} / {five:.2f} / {fifteen:.2f} (1 / 5 / 15 min), "
            f"{os.cpu_count()} cores")


def print_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
    """A markdown table: the first column left-aligned (names), the others right (numbers)."""
    print("| " + " | ".join(header) + " |")
    print("|---|" + "---:|" * (len(header) - 1))
    for row in rows:
        print("| " + " | ".join(row) + " |")


def ratios(rates: Mapping[str, float], pairs: Iterable[tuple[str, str, str]]) -> str:
    """``label = a/b`` for each (label, a, b) of names in ``rates``, on one line."""
    return ", ".join(f"{label} = {rates[a] / rates[b]:.2f}x" for label, a, b in pairs)


def quiet_logging(level: int = logging.WARNING) -> None:
    """Keep the gateway's and FastStream's logs out of the printed table."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(level))
    logging.getLogger("faststream").setLevel(level)
