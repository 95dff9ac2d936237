"""The ``webhook`` and ``enqueue`` tables of an ``[[trigger.http]]`` route (their schema)::

    [[trigger.http]]
    route = "/hooks/github"
    component = "on-push"                # or no component and an [trigger.http.enqueue]

    [trigger.http.webhook]
    scheme = "github"                    # github | stripe | standard-webhooks | hmac-sha256
    secrets = ["github-secret"]          # [variables] marked secret = true; two while rotating
    tolerance-s = 300                    # stripe / standard-webhooks: timestamp window

    [trigger.http.webhook.idempotency]
    store = "default"                    # a [key-value.<store>]; Redis for several replicas
    window-s = 86400                     # how long a done delivery id is remembered

    [trigger.http.enqueue]
    broker = "events"
    destination = "stream:webhooks"
    headers = ["content-type", "x-github-event"]

Checked by :func:`gateway.webhooks.gate.build_gate`, which names the file and field.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from bindings.host.kv import MAX_TTL_MS
from gateway.webhooks.signatures import DEFAULT_TOLERANCE_S

# A delivery's key lives in the key-value store with this TTL at most (100 years).
_MAX_TTL_S = MAX_TTL_MS // 1000


class _Table(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, rename="kebab"):
    pass


class IdempotencyConfig(_Table):
    """``[trigger.http.webhook.idempotency]``: remember delivery ids in a key-value store."""

    store: str = "default"
    # Where the delivery id is; default per scheme (github: X-GitHub-Delivery,
    # standard-webhooks: webhook-id, stripe: the event's JSON `id`).
    id_header: str | None = None
    id_field: str | None = None  # a JSON body field, dotted for nesting: "data.id"
    # A day covers every provider's retry schedule we know of (GitHub redeliveries are
    # manual; Stripe retries for 3 days in live mode: raise it there).
    window_s: Annotated[int, msgspec.Meta(gt=0, le=_MAX_TTL_S)] = 86_400
    # How long a delivery counts as in progress: past it, a crashed replica's claim lapses
    # and the provider's retry runs. Keep it above the component's timeout-ms.
    lease_s: Annotated[int, msgspec.Meta(gt=0, le=_MAX_TTL_S)] = 120


class WebhookConfig(_Table):
    """``[trigger.http.webhook]``: verify a provider's signature before anything runs."""

    # A plain str, not a Literal: the gate's own error lists the schemes by name.
    scheme: str
    secrets: list[str]
    tolerance_s: int = DEFAULT_TOLERANCE_S
    header: str | None = None  # hmac-sha256: the signature's header
    prefix: str = ""  # hmac-sha256: text before the signature ("sha256=")
    encoding: Literal["hex", "base64"] = "hex"  # hmac-sha256
    idempotency: IdempotencyConfig | None = None


class EnqueueConfig(_Table):
    """``[trigger.http.enqueue]``: publish the verified request and answer 202."""

    broker: str
    # As for a component's publish: "stream:<name>" on Redis, a topic on Kafka, a subject
    # ("js:" for JetStream) on NATS, "<exchange>/<routing-key>" on AMQP.
    destination: str
    # Request headers carried into the message (names, any case); the rest are dropped.
    headers: list[str] = msgspec.field(default_factory=lambda: ["content-type"])
    # Providers give up after ~10 s (GitHub) to 30 s; the broker's confirmation must come
    # well before, or the provider gets 503 and retries.
    timeout_ms: Annotated[int, msgspec.Meta(gt=0)] = 5_000


__all__ = ["EnqueueConfig", "IdempotencyConfig", "WebhookConfig"]
