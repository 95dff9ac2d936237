"""Webhook ingestion on HTTP routes: signature verification (:mod:`.signatures`), delivery
ids remembered in a shared key-value store (:mod:`.idempotency`), accept-and-enqueue to a
broker (:mod:`.enqueue`), wired per route by :mod:`.gate`. See docs/webhooks.md."""
