"""{{name}}: runs on a schedule and counts its runs in key-value."""

from wasmgate_sdk import Request, Response, handler, kv, log


@handler
def handle(req: Request) -> Response:
    # The tick's planned time, not the time it started: stable across retries and late starts.
    scheduled = req.meta("scheduled-time", "now")
    runs = kv.increment("runs")
    kv.set("last-run", scheduled or "")
    log.info(f"run {runs} for {scheduled}")
    # A raised exception would be retried within the tick; 2xx marks the run done.
    return Response.json({"runs": runs, "scheduled": scheduled})
