// {{name}}: a standard wasi:http/proxy handler (componentize-js, world wasi:http/proxy).
// On wasmgate it answers HTTP requests as they came and receives broker and cron events
// as CloudEvents binary-mode POSTs (ce-id, ce-type, ... headers; the data as the body).
import { Fields, OutgoingBody, OutgoingResponse, ResponseOutparam } from 'wasi:http/types@0.2.12';

const encoder = new TextEncoder();
const decoder = new TextDecoder();

function readBody(request) {
  const body = request.consume();
  const stream = body.stream();
  let size = 0;
  for (;;) {
    try {
      size += stream.blockingRead(65536n).length;
    } catch (e) {
      if (e.payload && e.payload.tag === 'closed') break;
      throw e;
    }
  }
  stream[Symbol.dispose]();
  return size;
}

export const incomingHandler = {
  handle(request, responseOut) {
    const url = new URL(request.pathWithQuery() || '/', 'http://localhost');
    const headers = new Map(request.headers().entries().map(([k, v]) => [k, decoder.decode(v)]));
    const size = readBody(request);
    const answer = headers.has('ce-id')
      ? { event: headers.get('ce-id'), type: headers.get('ce-type'), bytes: size }
      : { message: `hello, ${url.searchParams.get('name') || 'world'}!` };
    const response = new OutgoingResponse(
      Fields.fromList([['content-type', encoder.encode('application/json')]]));
    response.setStatusCode(200);
    const body = response.body();
    ResponseOutparam.set(responseOut, { tag: 'ok', val: response });
    const out = body.write();
    out.blockingWriteAndFlush(encoder.encode(JSON.stringify(answer)));
    out[Symbol.dispose]();
    OutgoingBody.finish(body, undefined);
  },
};
