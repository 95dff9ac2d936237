// {{name}}: greets by name. GET /{{name}}?name=Ada, or POST /{{name}} with {"name": "Ada"}.
//
// A wasmgate handler is an ES module exporting `handle(event)` of the WIT world
// wasmgate:handler/handler (bindings/wit/handler.wit). From JavaScript:
//   - records are plain objects with camelCase fields (content-type -> contentType);
//   - list<u8> (data, body) is a Uint8Array; u64 (time) is a BigInt;
//   - option<T> is the value or undefined;
//   - returning an object is `ok`; throwing a *string* is `err` (the event is retried).
//     Throw a string, not an Error: an Error object cannot become the err string and the
//     call traps (wasmgate still retries it, but the message is lost).
//   - an import that fails (e.g. a store not granted in wasmgate.toml) throws an error
//     whose `payload` is the reason.
import { get as variable } from 'wasmgate:handler/config@0.1.0';

const encoder = new TextEncoder();
const decoder = new TextDecoder();

function json(status, value) {
  return {
    status,
    headers: [['content-type', 'application/json']],
    body: encoder.encode(JSON.stringify(value)),
  };
}

export function handle(event) {
  // HTTP facts travel as metadata pairs: method, path, query.
  const meta = Object.fromEntries(event.metadata);
  let name = new URLSearchParams(meta.query ?? '').get('name') ?? 'world';
  if (meta.method === 'POST') {
    let body;
    try {
      body = JSON.parse(decoder.decode(event.data));
    } catch {
      return json(400, { error: 'body is not JSON' });
    }
    if (typeof body?.name !== 'string') {
      return json(400, { error: 'expected a JSON object like {"name": "Ada"}' });
    }
    name = body.name;
  }
  const greeting = variable('greeting') ?? 'hello';
  return json(200, { message: `${greeting}, ${name}!` });
}
