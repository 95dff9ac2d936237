"""Every few seconds: add one to the `ticks` counter in key-value."""

from wasmgate_sdk import Request, Response, handler, kv, log


@handler
def handle(req: Request) -> Response:
    n = kv.increment("ticks")
    log.info(f"tick {n} (scheduled {req.meta('scheduled-time')})")
    return Response.empty()
