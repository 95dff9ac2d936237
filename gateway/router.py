"""Component names to instance pools: where the dispatcher sends each classified call.

The dispatcher holds :meth:`Router.invoke` and nothing of the App, so the call path is
trigger → delivery → dispatcher → router → pool, with the App only wiring it together.
`wasmgate watch` swaps a pool with :meth:`Router.replace` while events keep flowing.
"""

from __future__ import annotations

from collections.abc import Mapping

import structlog

from bindings.types import Event, Response
from gateway.errors import ConfigError
from gateway.executor import InstancePool
from gateway.manifest import ComponentSpec
from gateway.responses import check_response


class Router:
    """The live pool of every component, looked up per event."""

    def __init__(self, specs: Mapping[str, ComponentSpec], *, manifest_path: str) -> None:
        self._specs = specs
        self._manifest_path = manifest_path
        self.pools: dict[str, InstancePool] = {}

    def add(self, pool: InstancePool) -> None:
        self.pools[pool.name] = pool

    def replace(self, pool: InstancePool) -> InstancePool:
        """Route new events for ``pool.name`` to ``pool``; return the old pool, for the caller
        to close once its calls are done. One assignment: every event goes wholly to the old
        pool or wholly to the new one."""
        old, self.pools[pool.name] = self.pools[pool.name], pool
        return old

    async def invoke(self, component: str, event: Event) -> Response:
        """Run one event through ``component`` (no retry policy); return its response once
        :func:`~gateway.responses.check_response` has passed it (else InvalidResponse)."""
        try:
            pool = self.pools[component]
        except KeyError:
            raise ConfigError(f"no component named `{component}`",
                              path=self._manifest_path) from None
        # Bound here so that guest log lines and host-call refusals carry the event id (the
        # worker thread running the call inherits this context).
        with structlog.contextvars.bound_contextvars(event_id=event.id):
            response = await pool.call(event)
        check_response(component, response, self._specs[component])
        return response


__all__ = ["Router"]
