"""{{name}}: consumes order messages ({"id": "o-1", "items": [{"price": 2.5, "qty": 2}]})."""

from wasmgate_sdk import BadRequest, Request, Response, handler, kv, log


@handler
def handle(req: Request) -> Response:
    order = req.json()  # not JSON: 400, dead-lettered at once (retrying cannot fix it)
    if not isinstance(order, dict) or not isinstance(order.get("id"), str):
        raise BadRequest('expected an order like {"id": "o-1", "items": [...]}')
    done_key = f"orders/{order['id']}"
    # Brokers deliver at least once: a redelivered order is acknowledged, not redone.
    previous = kv.get_json(done_key)
    if previous is not None:
        log.info(f"order {order['id']} already processed (attempt {req.attempt})")
        return Response.json(previous)
    try:
        total = sum(item["price"] * item["qty"] for item in order.get("items", []))
    except (KeyError, TypeError) as exc:
        raise BadRequest(f"order {order['id']} has a malformed item: {exc}") from None
    # A dependency that is down is transient: `raise Retry("payments unavailable")` here
    # would redeliver with backoff, then dead-letter after max-attempts.
    result = {"id": order["id"], "total": total}
    kv.set_json(done_key, result, ttl_ms=7 * 24 * 3600 * 1000)
    return Response.json(result)
