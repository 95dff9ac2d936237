"""{{name}}: handles verified GitHub-style webhook deliveries.

By the time this runs the gateway has checked the signature (a forged delivery never gets
here) and dropped redeliveries of deliveries that already succeeded. Answer 2xx once the
delivery is handled; any other status lets the provider retry it.
"""

from wasmgate_sdk import BadRequest, Request, Response, handler, log


@handler
def handle(req: Request) -> Response:
    event = req.headers.get("x-github-event")
    if event is None:
        raise BadRequest("no x-github-event header")
    payload = req.json()  # not JSON: 400
    if event == "ping":  # sent once when the webhook is created
        return Response.json({"pong": True})
    if event == "push" and isinstance(payload, dict):
        log.info(f"push to {payload.get('ref')}")
        return Response.json({"event": event, "ref": payload.get("ref")})
    return Response.json({"event": event})
