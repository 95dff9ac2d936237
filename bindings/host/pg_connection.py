"""A psycopg connection whose every wait on the server is bounded by a deadline and a
byte budget, whatever the statement or the session settings a guest sent.

psycopg runs every statement (either protocol, streamed or not) as a generator that a
``wait`` method drives: it blocks on the socket until libpq can go on. This subclass
drives it itself, so between two reads it can

- cancel the statement on the server once the event's deadline passes (a cancel request,
  as Ctrl-C would send; ``SET statement_timeout = 0`` in the guest's own statement does
  not stop it), and give up on the connection if the server has not ended the statement
  within :data:`CANCEL_GRACE_S` (the caller then closes it);
- count the bytes the server has sent for this statement (the kernel's count for the TCP
  socket) and give up past the budget. libpq keeps a whole row in memory before anyone
  sees it, so without this one 300 MB value reached the gateway's memory before any row
  limit could look at it.

Giving up closes the connection (which also ends the statement on the server) and raises
:class:`StatementAbandoned`. Closing first also keeps psycopg from sending a cancel of its
own on the way out and waiting up to 5 s for it.
"""

from __future__ import annotations

import dataclasses
import select
import socket
import struct
import time
from typing import Any, TypeVar

import psycopg
from psycopg.abc import PQGen
from psycopg.waiting import Ready, Wait

RV = TypeVar("RV")

_POLL_EVENTS = {Wait.R: select.POLLIN, Wait.W: select.POLLOUT,
                Wait.RW: select.POLLIN | select.POLLOUT}

# After a cancel request, how long the server has to end the statement before the
# connection is dropped instead (a statement that does not check for interrupts).
CANCEL_GRACE_S = 0.5
_READABLE = select.POLLIN | select.POLLERR | select.POLLHUP
# struct tcp_info (linux/tcp.h): tcpi_bytes_received is the u64 at offset 128.
_TCP_INFO_LEN = 136
_BYTES_RECEIVED = struct.Struct("=Q")
_BYTES_RECEIVED_AT = 128


class StatementAbandoned(Exception):
    """The statement was given up on (deadline or byte budget); its connection is closed."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclasses.dataclass
class StatementGuard:
    """The bounds of the statement running on a :class:`GuardedConnection`.

    ``stop_at`` is a ``time.monotonic()`` value (None: no deadline); ``max_wire_bytes``
    the most the server may send for it (None: unbounded). ``cancel`` says whether the
    deadline sends a cancel request first (a guest's statement) or gives up at once (the
    gateway's own housekeeping statements, which are dropped with the connection).
    """

    stop_at: float | None
    max_wire_bytes: int | None = None
    cancel: bool = True
    # What happened, for the caller's error message.
    cancelled: bool = False
    over_budget: bool = False
    _hard_stop: float | None = None
    _received_at_start: int | None = None


def _bytes_received(sock: socket.socket | None) -> int | None:
    """The TCP socket's count of bytes received so far; None where the kernel has none
    (a Unix-domain socket, another OS)."""
    if sock is None or not hasattr(socket, "TCP_INFO"):
        return None
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_LEN)
    except OSError:
        return None
    if len(info) < _BYTES_RECEIVED_AT + _BYTES_RECEIVED.size:
        return None
    count: int = _BYTES_RECEIVED.unpack_from(info, _BYTES_RECEIVED_AT)[0]
    return count


class GuardedConnection(psycopg.Connection[Any]):
    """A psycopg connection that honours :attr:`guard` in every wait on the server."""

    guard: StatementGuard | None = None
    _tcp: socket.socket | None = None
    _tcp_fd: int = -1

    def guarded(self, guard: StatementGuard) -> StatementGuard:
        """Bound the statements that follow by ``guard`` (until :meth:`unguard`)."""
        guard._received_at_start = _bytes_received(self._socket())
        self.guard = guard
        return guard

    def unguard(self) -> None:
        self.guard = None

    def close(self) -> None:
        self._release_socket()
        super().close()

    def _release_socket(self) -> None:
        if self._tcp is not None:
            self._tcp.close()
            self._tcp = None

    def _socket(self) -> socket.socket | None:
        """A duplicate of libpq's socket, for getsockopt (the same until a reconnect)."""
        fd = self.pgconn.socket
        if self._tcp is None or self._tcp_fd != fd:
            if self._tcp is not None:
                self._tcp.close()
            try:
                # The family given does not matter to getsockopt on the descriptor (IPv6
                # too); on a Unix-domain socket TCP_INFO fails and nothing is counted.
                self._tcp = socket.fromfd(fd, socket.AF_INET, socket.SOCK_STREAM)
            except OSError:
                self._tcp = None
            self._tcp_fd = fd
        return self._tcp

    def wait(self, gen: PQGen[RV], interval: float = 0.1,
             timeout: float | None = None) -> RV:
        guard = self.guard
        if guard is None:
            return super().wait(gen, interval, timeout)
        return self._wait_guarded(gen, guard)

    def _wait_guarded(self, gen: PQGen[RV], guard: StatementGuard) -> RV:
        fileno = self.pgconn.socket
        # poll(), not a selector: no file descriptor to create and close for each wait.
        poller = select.poll()
        try:
            state = next(gen)
            poller.register(fileno, _POLL_EVENTS[state])
            while True:
                wake = self._check(guard)
                events = poller.poll(None if wake is None else wake * 1000)
                if events:
                    mask = events[0][1]
                    if mask & select.POLLNVAL:
                        raise psycopg.OperationalError("the connection's socket was closed")
                    # An error or hang-up counts as readable: libpq then reads what it is.
                    ready = ((Ready.R if mask & _READABLE else 0)
                             | (Ready.W if mask & select.POLLOUT else 0))
                    new_state = gen.send(Ready(ready))
                    if new_state != state:
                        poller.modify(fileno, _POLL_EVENTS[new_state])
                        state = new_state
                else:
                    gen.send(Ready.NONE)
                self._check_budget(guard)
        except StopIteration as stop:
            result: RV = stop.value
            return result
        except StatementAbandoned:
            self._release_socket()
            self.pgconn.finish()
            raise

    def _check(self, guard: StatementGuard) -> float | None:
        """Act on the deadline; how long to wait for the socket before looking again
        (None: until it is ready; the byte count is checked after every read anyway)."""
        now = time.monotonic()
        if guard._hard_stop is not None:
            if now >= guard._hard_stop:
                raise StatementAbandoned("deadline")
            return guard._hard_stop - now
        if guard.stop_at is None:
            return None
        if now < guard.stop_at:
            return guard.stop_at - now
        guard.cancelled = True
        if not guard.cancel:
            raise StatementAbandoned("deadline")
        guard._hard_stop = now + CANCEL_GRACE_S
        try:
            self.cancel_safe(timeout=CANCEL_GRACE_S)
        except psycopg.Error:
            raise StatementAbandoned("deadline") from None
        return CANCEL_GRACE_S

    def _check_budget(self, guard: StatementGuard) -> None:
        if guard.max_wire_bytes is None or guard._received_at_start is None:
            return
        now = _bytes_received(self._tcp)
        if now is not None and now - guard._received_at_start > guard.max_wire_bytes:
            guard.over_budget = True
            raise StatementAbandoned("result too large")


__all__ = ["CANCEL_GRACE_S", "GuardedConnection", "StatementAbandoned", "StatementGuard"]
