"""A stable Redis Streams consumer name for this gateway instance.

A consumer group remembers, per consumer name, which entries were delivered and not yet
acknowledged (its pending entries list). A gateway that restarts under the *same* name
re-reads its own pending entries at once; under a new name they wait for the visibility
timeout and another consumer's XAUTOCLAIM. So the name is generated once, kept in the
app's state directory (``.wasmgate/redis-streams/<group>.consumer``), and reused.

Two gateway processes sharing one state directory must not share a name (each would
re-read the other's in-flight entries), so the name file is held with an exclusive
``flock`` for the life of the process; a second process takes the next free slot
(``<name>-2``, ``<name>-3``, ...). The kernel drops the lock when a process dies, so a
killed gateway's successor gets the name back.
"""

from __future__ import annotations

import fcntl
import os
import re
import socket
import uuid
from pathlib import Path
from typing import IO

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


class ConsumerName:
    """The consumer name of one trigger, held (locked) until :meth:`release`."""

    def __init__(self, name: str, lock: IO[str] | None) -> None:
        self.name = name
        self._lock = lock

    def release(self) -> None:
        if self._lock is not None:
            self._lock.close()  # closing the file drops the flock
            self._lock = None


def claim_consumer_name(state_dir: str | Path, group: str, *, max_slots: int = 64
                        ) -> ConsumerName:
    """This instance's consumer name for ``group``: created once, then reused."""
    directory = Path(state_dir) / "redis-streams"
    directory.mkdir(parents=True, exist_ok=True)
    stem = _UNSAFE.sub("_", group)
    for slot in range(1, max_slots + 1):
        path = directory / (f"{stem}.consumer" if slot == 1 else f"{stem}.{slot}.consumer")
        handle = path.open("a+", encoding="utf-8")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()  # another live process holds this slot
            continue
        handle.seek(0)
        name = handle.read().strip()
        if not name:
            name = f"{_UNSAFE.sub('_', socket.gethostname())}-{uuid.uuid4().hex[:8]}"
            handle.write(name + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        return ConsumerName(name, handle)
    raise RuntimeError(f"more than {max_slots} gateway processes share {directory}")


__all__ = ["ConsumerName", "claim_consumer_name"]
