"""The shop demo's one handler, deployed as several components.

Every component of compose/shop/wasmgate.toml runs this same code; its `role` variable
says which step it is, and its grants say what that step may touch (deny by default: the
webhook may publish to Kafka but has no database; the report job may read the database
but publish nowhere).

  POST /webhooks/orders --> webhook --(Kafka orders, key=customer)--> orders
  orders --(sql: orders table)--(JetStream shop.notify.*)--> notify --(kv)--
         --(RabbitMQ shop/invoice)--> invoice --(sql: invoices table)
         --(Redis stream audit)--> audit --(kv)
  cron */10s --> report --(sql, kv)          GET /stats --> stats --(kv)
"""

import json

from componentize_py_types import Err
from wit_world import WitWorld
from wit_world.imports import config, kv, log, publish, sql, types

STORE = "shop"


def _json(status, value):
    return types.Response(status, [("content-type", "application/json")],
                          json.dumps(value).encode())


def _text(v):
    return sql.Value_Text(v)


def webhook(e):
    try:
        order = json.loads(e.data)
        order_id, customer, total = str(order["id"]), str(order["customer"]), float(order["total"])
    except (ValueError, KeyError, TypeError):
        # A 4xx tells the caller to fix the request; nothing is published.
        return _json(400, {"error": 'expected {"id": ..., "customer": ..., "total": ...}'})
    body = json.dumps({"id": order_id, "customer": customer, "total": total}).encode()
    # Keyed by customer: one customer's orders stay in order through Kafka.
    receipt = publish.send(publish.Message("events", "orders", customer.encode(),
                                           [("content-type", "application/json")], body))
    return _json(202, {"accepted": order_id, "receipt": receipt})


def orders(e):
    order = json.loads(e.data)
    sql.execute("shop", "CREATE TABLE IF NOT EXISTS orders (id text PRIMARY KEY, "
                "customer text, total double precision)", [])
    # At-least-once delivery: a redelivered order must not be stored twice ...
    sql.execute("shop", "INSERT INTO orders VALUES ($1, $2, $3) ON CONFLICT (id) DO NOTHING",
                [_text(order["id"]), _text(order["customer"]), sql.Value_Real(order["total"])])
    # ... but it is published again every time: a redelivery may come from a publish below
    # that failed (a broker down, an exchange not declared yet), and skipping them then
    # would lose the order downstream. The consumers are idempotent by order id instead.
    headers = [("order-id", order["id"])]
    # JetStream drops a second message with the same id within its duplicate window.
    notify_headers = [*headers, ("Nats-Msg-Id", "notify:" + order["id"])]
    publish.send(publish.Message("nats", "js:shop.notify." + order["id"], None,
                                 notify_headers, e.data))
    publish.send(publish.Message("rabbit", "shop/invoice", None, headers, e.data))
    publish.send(publish.Message("redis", "stream:audit", order["customer"].encode(),
                                 headers, e.data))
    return types.Response(200, [], b"")


def _order_id(e):
    return json.loads(e.data)["id"]


def notify(e):
    # One key per order: a duplicate delivery marks the same order again.
    kv.set(STORE, "notified:" + _order_id(e), b"1", None)
    log.emit(log.Level.INFO, "would e-mail about order " + e.subject)
    return types.Response(200, [], b"")


def invoice(e):
    order = json.loads(e.data)
    sql.execute("shop", "CREATE TABLE IF NOT EXISTS invoices (order_id text PRIMARY KEY, "
                "amount double precision)", [])
    sql.execute("shop", "INSERT INTO invoices VALUES ($1, $2) ON CONFLICT DO NOTHING",
                [_text(order["id"]), sql.Value_Real(order["total"] * 1.2)])
    return types.Response(200, [], b"")


def audit(e):
    kv.set(STORE, "audited:" + _order_id(e), b"1", None)
    return types.Response(200, [], b"")


def report(e):
    try:
        rows = sql.query("shop", "SELECT count(*), coalesce(sum(total), 0) FROM orders", [])
        count, total = (v.value for v in rows.rows[0])
    except Err:
        count, total = 0, 0.0  # no order yet: the table does not exist
    kv.set(STORE, "report", json.dumps({"orders": count, "revenue": total,
                                        "at": e.time}).encode(), None)
    return types.Response(200, [], b"")


def stats(e):
    def read(key):
        value = kv.get(STORE, key)
        return None if value is None else value.decode()

    report_text = read("report")
    return _json(200, {"notified": len(kv.list_keys(STORE, "notified:")),
                       "audited": len(kv.list_keys(STORE, "audited:")),
                       "report": json.loads(report_text) if report_text else None})


ROLES = {"webhook": webhook, "orders": orders, "notify": notify, "invoice": invoice,
         "audit": audit, "report": report, "stats": stats}


class WitWorld(WitWorld):
    def handle(self, e):
        role = config.get("role")
        if role not in ROLES:
            raise Err("component variable `role` must be one of " + ", ".join(ROLES))
        return ROLES[role](e)
