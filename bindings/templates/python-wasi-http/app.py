"""{{name}}: a standard wasi:http/proxy handler (componentize-py -w wasi:http/proxy).

On wasmgate it answers HTTP requests as they came and receives broker and cron events as
CloudEvents binary-mode POSTs (`ce-id`, `ce-type`, ... headers, the data as the body);
its status settles them: 2xx ack, 429 and 5xx retry, other 4xx dead-letter.
"""

import asyncio
import json
from urllib.parse import parse_qs, urlsplit

from componentize_py_types import Ok
from poll_loop import PollLoop, Sink, Stream
from wit_world import exports
from wit_world.imports.types import Fields, IncomingRequest, OutgoingResponse, ResponseOutparam


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request: IncomingRequest, response_out: ResponseOutparam) -> None:
        loop = PollLoop()
        asyncio.set_event_loop(loop)
        loop.run_until_complete(handle(request, response_out))


async def handle(request: IncomingRequest, response_out: ResponseOutparam) -> None:
    target = urlsplit(request.path_with_query() or "/")
    headers = dict(request.headers().entries())
    body = b""
    stream = Stream(request.consume())
    while (chunk := await stream.next()) is not None:
        body += chunk
    if "ce-id" in headers:
        # An event from a broker or cron: acknowledge it.
        answer = {"event": headers["ce-id"].decode(), "type": headers["ce-type"].decode(),
                  "bytes": len(body)}
    else:
        name = parse_qs(target.query).get("name", ["world"])[0]
        answer = {"message": f"hello, {name}!"}
    response = OutgoingResponse(Fields.from_list([("content-type", b"application/json")]))
    response.set_status_code(200)
    out = response.body()
    ResponseOutparam.set(response_out, Ok(response))
    sink = Sink(out)
    await sink.send(json.dumps(answer).encode())
    sink.close()
