"""GET /hello: a greeting plus the counter the cron job keeps in key-value."""

from wasmgate_sdk import Request, Response, handler, kv, variable


@handler
def handle(req: Request) -> Response:
    greeting = variable("greeting", "hello")
    ticks = kv.get_text("ticks") or "0"
    return Response.text(f"{greeting}! cron has ticked {ticks} times\n")
