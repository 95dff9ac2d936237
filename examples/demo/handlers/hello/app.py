"""GET /hello: a greeting plus the counter the cron job keeps in key-value."""

from wit_world import WitWorld
from wit_world.imports import config, kv, types


class WitWorld(WitWorld):
    def handle(self, e: types.Event) -> types.Response:
        greeting = config.get("greeting") or "hello"
        ticks = kv.get("default", "ticks") or b"0"
        body = f"{greeting}! cron has ticked {ticks.decode()} times\n".encode()
        return types.Response(200, [("content-type", "text/plain")], body)
