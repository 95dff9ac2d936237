// The polyglot example's queue side (JavaScript): one event per entry of the Redis stream
// `orders` (written by the Python api handler). It counts processed orders in key-value.
//
// Redis Streams delivery is at-least-once: an entry can run again after a crash or a
// retry, so the worker remembers each order it counted (`processed:<id>`) and counts an
// order once. Throwing a string returns `err`: the trigger retries, then dead-letters.
import { exists, increment, set } from 'wasmgate:handler/kv@0.1.0';
import { emit } from 'wasmgate:handler/log@0.1.0';

const STORE = 'default';
const decoder = new TextDecoder();
const encoder = new TextEncoder();

export function handle(event) {
  let order;
  try {
    order = JSON.parse(decoder.decode(event.data));
  } catch {
    // A 4xx is a poison message: dead-lettered at once, never retried.
    return { status: 422, headers: [], body: encoder.encode('entry data is not JSON') };
  }
  if (typeof order?.id !== 'string') {
    return { status: 422, headers: [], body: encoder.encode('order has no id') };
  }
  const seen = `processed:${order.id}`;
  if (exists(STORE, seen)) {
    emit('info', `order ${order.id} already processed; skipping the redelivery`);
    return { status: 200, headers: [], body: encoder.encode('duplicate') };
  }
  // Not atomic with the increment: a crash between the two counts the order again on
  // redelivery. Good enough for a counter; a ledger would use the sql import's transaction.
  const total = increment(STORE, 'orders-processed', 1n);
  set(STORE, seen, encoder.encode(total.toString()), undefined);
  emit('info', `processed order ${order.id} (${order.item} x${order.qty ?? 1}); total ${total}`);
  return { status: 200, headers: [], body: encoder.encode(`processed ${total}`) };
}
