"""The polyglot example's HTTP side (Python): POST /orders stores the order and queues it.

The order is kept in key-value under ``order:<id>`` and appended to the Redis stream
``orders`` through the ``publish`` import; the JavaScript worker consumes that stream.
GET /orders/stats reports how many orders the worker has processed so far.
"""

import json

from componentize_py_types import Err
from wit_world import WitWorld
from wit_world.imports import kv, log, publish, types

STORE = "default"


def _json(status: int, value: object) -> types.Response:
    return types.Response(status, [("content-type", "application/json")],
                          json.dumps(value).encode())


class WitWorld(WitWorld):
    def handle(self, e: types.Event) -> types.Response:
        method = dict(e.metadata).get("method", "POST")
        if e.subject == "/orders/stats" and method == "GET":
            raw = kv.get(STORE, "orders-processed")
            return _json(200, {"processed": int(raw) if raw else 0})
        if method != "POST":
            return _json(405, {"error": "POST an order to /orders"})
        try:
            order = json.loads(e.data)
        except ValueError:
            return _json(400, {"error": "body is not JSON"})
        if not isinstance(order, dict) or not isinstance(order.get("item"), str):
            return _json(400, {"error": 'expected a JSON object like {"item": "tea", "qty": 2}'})
        # The event id is unique per request: it doubles as the order id.
        order["id"] = e.id
        body = json.dumps(order).encode()
        kv.set(STORE, "order:" + e.id, body, None)
        try:
            # Stream fields: data = body, key = order id, headers as the other fields.
            receipt = publish.send(publish.Message(
                "redis", "stream:orders", e.id.encode(),
                [("content-type", "application/json")], body))
        except Err as err:
            # 503 makes the caller retry; the order is stored but not yet queued.
            log.emit(log.Level.ERROR, "could not queue order " + e.id + ": " + str(err.value))
            return _json(503, {"error": "order queue unavailable, try again"})
        return _json(201, {"id": e.id, "queued": receipt})
