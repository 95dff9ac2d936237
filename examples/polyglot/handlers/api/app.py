"""The polyglot example's HTTP side (Python): POST /orders stores the order and queues it.

The order is kept in key-value under ``order:<id>`` and appended to the Redis stream
``orders`` through the ``publish`` import; the JavaScript worker consumes that stream.
GET /orders/stats reports how many orders the worker has processed so far.
"""

import json

from wasmgate_sdk import BadRequest, HostError, Request, Response, handler, kv, log, publish


@handler
def handle(req: Request) -> Response:
    if req.subject == "/orders/stats" and req.method == "GET":
        processed = kv.get_text("orders-processed")
        return Response.json({"processed": int(processed) if processed else 0})
    if req.method != "POST":
        return Response.json({"error": "POST an order to /orders"}, status=405)
    order = req.json()  # not JSON: 400 by itself
    if not isinstance(order, dict) or not isinstance(order.get("item"), str):
        raise BadRequest('expected a JSON object like {"item": "tea", "qty": 2}')
    # The event id is unique per request: it doubles as the order id.
    order["id"] = req.id
    body = json.dumps(order)
    kv.set(f"order:{req.id}", body)
    try:
        # Stream fields: data = body, key = order id, headers as the other fields.
        receipt = publish("redis", "stream:orders", body, key=req.id,
                          headers={"content-type": "application/json"})
    except HostError as err:
        # 503 makes the caller retry; the order is stored but not yet queued.
        log.error(f"could not queue order {req.id}: {err}")
        return Response.json({"error": "order queue unavailable, try again"}, status=503)
    return Response.json({"id": req.id, "queued": receipt}, status=201)
