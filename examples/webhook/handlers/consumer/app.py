"""The webhook example's consumer: one event per GitHub delivery taken off the stream.

The HTTP side already verified the signature and dropped redeliveries, so every entry here
is a genuine, new delivery: the stream entry's data is the raw body, its key the delivery
id, and the `x-github-event` header says what happened. It counts deliveries per event type
(GET /stats shows them) and logs pushes.
"""

from wasmgate_sdk import BadRequest, Request, Response, handler, kv, log


@handler
def handle(req: Request) -> Response:
    if req.method == "GET":  # /stats, over HTTP
        return Response.json({"events": kv.get_json("events") or {}})
    event = req.headers.get("x-github-event")
    if event is None:
        raise BadRequest("stream entry has no x-github-event header")  # dead-lettered
    payload = req.json()  # not JSON: 400, dead-lettered at once
    counts = kv.get_json("events") or {}
    # Not atomic, but the stream's consumer group hands one entry to one consumer; a
    # replayed entry after a crash may count twice (at least once).
    counts[event] = counts.get(event, 0) + 1
    kv.set_json("events", counts)
    if event == "push" and isinstance(payload, dict):
        log.info(f"push to {payload.get('ref')} (delivery {req.headers.get('x-github-delivery')})")
    return Response.json({"event": event})
