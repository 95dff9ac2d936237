"""Every few seconds: add one to the `ticks` counter in key-value."""

from wit_world import WitWorld
from wit_world.imports import kv, log, types


class WitWorld(WitWorld):
    def handle(self, e: types.Event) -> types.Response:
        n = kv.increment("default", "ticks", 1)
        log.emit(log.Level.INFO, f"tick {n}")
        return types.Response(200, [], b"")
