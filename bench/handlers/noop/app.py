"""Benchmark handler: does nothing and answers 200 (the cost measured is the gateway's)."""

from wit_world import WitWorld
from wit_world.imports import types


class WitWorld(WitWorld):
    def handle(self, e: types.Event) -> types.Response:
        return types.Response(200, [], b"")
