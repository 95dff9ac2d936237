"""Delivery ids remembered in a key-value store the replicas share, so a provider's retry
of a delivery that already succeeded does not run the handler again.

One key per delivery, ``webhook:<route>:<id>``, in one of three states:

* absent: never seen, or its last attempt failed; the next attempt runs.
* ``running`` (TTL ``lease``): claimed by an attempt in progress. The claim is the store's
  atomic set-if-absent (SQLite ``BEGIN IMMEDIATE``, Redis ``SET NX PX``), so of several
  concurrent duplicates, on any replica, exactly one runs. A replica that dies mid-run
  leaves the claim to lapse after the lease.
* ``done`` (TTL ``window``): the attempt succeeded; duplicates are answered 2xx unrun.

A failed attempt deletes its claim, so the provider's retry runs again.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Literal

from bindings.host.kv import KeyValueStore

_RUNNING = b"running"
_DONE = b"done"
# Ids longer than this are hashed into the key (kv keys are at most 1 KiB).
_MAX_PLAIN_ID = 200

Claim = Literal["run", "done", "running"]


class DeliveryLedger:
    """Claims and records delivery ids of one route."""

    def __init__(self, store: KeyValueStore, route: str, *, window_s: int,
                 lease_s: int) -> None:
        self.store = store
        self.route = route
        self.window_ms = window_s * 1000
        self.lease_ms = lease_s * 1000

    def _key(self, delivery_id: str) -> str:
        if len(delivery_id) > _MAX_PLAIN_ID:
            delivery_id = "sha256:" + hashlib.sha256(delivery_id.encode()).hexdigest()
        return f"webhook:{self.route}:{delivery_id}"

    async def claim(self, delivery_id: str) -> Claim:
        """``run`` if this attempt now holds the delivery; else whether it is done or running.

        The store's calls block (a SQLite lock, a Redis round trip): they run off the loop.
        Raises KeyValueError if the store is unreachable.
        """
        key = self._key(delivery_id)
        if await asyncio.to_thread(self.store.claim, key, _RUNNING, self.lease_ms):
            return "run"
        state = await asyncio.to_thread(self.store.get, key)
        return "done" if state == _DONE else "running"

    async def finish(self, delivery_id: str, *, succeeded: bool) -> None:
        """Record the attempt: done for ``window``, or released for the provider's retry."""
        key = self._key(delivery_id)
        if succeeded:
            await asyncio.to_thread(self.store.set, key, _DONE, self.window_ms)
        else:
            await asyncio.to_thread(self.store.delete, key)


__all__ = ["Claim", "DeliveryLedger"]
