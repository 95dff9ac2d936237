"""What a webhook route does with a request before (or instead of) its handler.

In order: verify the signature over the raw body (401 and a metric if it fails); find the
delivery id; claim it (a done delivery is answered 200 unrun, one in progress elsewhere 409
with ``Retry-After``); then run the handler, or publish to the broker and answer 202; then
record the delivery as done (2xx) or release it for the provider's retry (anything else).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

import msgspec
import structlog

from bindings.host.kv import KeyValueError
from gateway import metrics
from gateway.errors import ConfigError
from gateway.webhooks.config import EnqueueConfig, WebhookConfig
from gateway.webhooks.enqueue import EnqueueFailed, Enqueuer
from gateway.webhooks.idempotency import DeliveryLedger
from gateway.webhooks.signatures import (
    SCHEMES,
    Verifier,
    standard_webhooks_key,
)

if TYPE_CHECKING:
    from triggers.base import TriggerContext

log = structlog.get_logger("wasmgate.webhooks")

# (status, headers, body)
Reply = tuple[int, list[tuple[str, str]], bytes]
# Runs the route's handler and sends its response; returns the status sent.
RunHandler = Callable[[], Awaitable[int]]

# Where each scheme's provider puts its delivery id (Stripe: the event's `id`).
_DEFAULT_ID_HEADER = {"github": "x-github-delivery", "standard-webhooks": "webhook-id"}
_DEFAULT_ID_FIELD = {"stripe": "id"}
# Seconds a provider should wait before retrying: a broker or store outage, a duplicate in
# progress. Short: both usually clear within seconds.
_RETRY_AFTER_S = "5"
_JSON = msgspec.json.Decoder()
# Broker kinds whose plain destinations are fire-and-forget (the message is gone if nobody
# listens): what such a destination is, and the prefix of a durable one.
_AT_MOST_ONCE = {"redis": ("Redis pub/sub channel", "stream:"),
                 "nats": ("core NATS subject", "js:")}


@dataclasses.dataclass(frozen=True)
class DeliveryId:
    """Where a route finds the delivery id: a header, or a JSON body field."""

    header: str | None = None
    field: tuple[str, ...] = ()

    def find(self, headers: Mapping[str, str], body: bytes) -> str | None:
        if self.header is not None:
            return headers.get(self.header) or None
        if not self.field:
            return None
        try:
            value: Any = _JSON.decode(body)
        except msgspec.DecodeError:
            return None
        for name in self.field:
            value = value.get(name) if isinstance(value, dict) else None
        if isinstance(value, bool):  # an int to Python; no id: every true would collide
            return None
        return str(value) if isinstance(value, str | int) and value != "" else None

    @property
    def description(self) -> str:
        return f"header `{self.header}`" if self.header else f"JSON field `{'.'.join(self.field)}`"


class WebhookGate:
    """One route's verification, idempotency and enqueueing."""

    def __init__(self, route: str, *, verifier: Verifier | None, delivery_id: DeliveryId,
                 ledger: DeliveryLedger | None, enqueuer: Enqueuer | None) -> None:
        self.route = route
        self.verifier = verifier
        self.delivery_id = delivery_id
        self.ledger = ledger
        self.enqueuer = enqueuer

    async def serve(self, headers: Mapping[str, str], body: bytes,
                    run: RunHandler) -> Reply | None:
        """The reply to send, or None once ``run`` has sent the handler's own."""
        if self.verifier is not None:
            reason = self.verifier.verify(headers, body)
            if reason is not None:
                metrics.counter("wasmgate_webhook_verification_failures_total",
                                "Webhook deliveries refused (401) for their signature.",
                                route=self.route, reason=reason)
                # Neither the body nor any header value: the reason is a fixed word.
                log.warning("webhook signature refused", route=self.route, reason=reason,
                            scheme=self.verifier.scheme)
                return 401, [], f"webhook signature refused: {reason}\n".encode()
        delivery_id = self.delivery_id.find(headers, body)
        if self.ledger is None:
            return (await self._attempt(headers, body, delivery_id, run))[0]
        if delivery_id is None:
            return 400, [], f"missing delivery id ({self.delivery_id.description})\n".encode()
        try:
            claim = await self.ledger.claim(delivery_id)
        except KeyValueError as exc:
            return self._store_down(exc)
        if claim == "done":
            metrics.counter("wasmgate_webhook_deduplicated_total",
                            "Webhook deliveries answered without running again (a retry "
                            "of a delivery that already succeeded).", route=self.route)
            log.info("webhook delivery already processed", route=self.route,
                     delivery_id=delivery_id)
            return 200, [("content-type", "text/plain")], b"already processed\n"
        if claim == "running":
            metrics.counter("wasmgate_webhook_in_progress_total",
                            "Webhook deliveries refused (409) while the same delivery id "
                            "was being processed.", route=self.route)
            return 409, [("retry-after", _RETRY_AFTER_S)], b"delivery in progress\n"
        succeeded = False
        try:
            reply, status = await self._attempt(headers, body, delivery_id, run)
            succeeded = 200 <= status < 300
            return reply
        finally:
            try:
                await self.ledger.finish(delivery_id, succeeded=succeeded)
            except KeyValueError as exc:
                # The handler ran; not recording it means a retry may run it again (at
                # least once), and a failed release lapses with the lease.
                log.error("webhook delivery not recorded", route=self.route,
                          delivery_id=delivery_id, error=str(exc))

    async def _attempt(self, headers: Mapping[str, str], body: bytes,
                       delivery_id: str | None, run: RunHandler) -> tuple[Reply | None, int]:
        """The reply (None: the handler sent its own) and its status."""
        if self.enqueuer is None:
            return None, await run()
        try:
            receipt = await self.enqueuer.publish(headers, body, delivery_id)
        except EnqueueFailed as exc:
            metrics.counter("wasmgate_webhook_enqueue_failures_total",
                            "Webhook deliveries answered 503 because the broker did not "
                            "confirm the message.", route=self.route)
            log.warning("webhook not enqueued", route=self.route, delivery_id=delivery_id,
                        error=str(exc))
            return (503, [("retry-after", _RETRY_AFTER_S)], b"not enqueued, retry later\n"), 503
        answer = msgspec.json.encode({"accepted": True, "delivery": delivery_id,
                                      "receipt": receipt})
        return (202, [("content-type", "application/json")], answer + b"\n"), 202

    def _store_down(self, exc: KeyValueError) -> Reply:
        log.warning("webhook idempotency store unavailable", route=self.route,
                    error=str(exc))
        return 503, [("retry-after", _RETRY_AFTER_S)], b"idempotency store unavailable\n"


def build_gate(route: str, webhook: WebhookConfig | None, enqueue: EnqueueConfig | None,
               context: TriggerContext) -> WebhookGate | None:
    """The route's gate, checked: a ConfigError names the file and field of any mistake."""
    if webhook is None and enqueue is None:
        return None
    where = context.manifest_path
    verifier: Verifier | None = None
    delivery_id = DeliveryId()
    ledger: DeliveryLedger | None = None
    if webhook is not None:
        field = f"{context.field}.webhook"
        verifier = _verifier(webhook, context, field)
        delivery_id = _delivery_id(webhook)
        if webhook.idempotency is not None:
            if delivery_id == DeliveryId():
                raise ConfigError(
                    f"the {webhook.scheme} scheme has no delivery id of its own; set "
                    "`id-header` (e.g. \"x-request-id\") or `id-field` (e.g. \"id\")",
                    path=where, field=f"{field}.idempotency")
            idem = webhook.idempotency
            granted = context.store_grants.get(idem.store)
            if granted:
                # A handler granted the store could write the delivery keys: mark a delivery
                # done that never ran (the provider's retries then answered 200 unrun), or
                # free one that is running or done (it runs twice).
                names = ", ".join(f"[component.{c}]" for c in granted)
                raise ConfigError(
                    f"key-value store {idem.store!r} keeps this route's delivery ids, and "
                    f"`key-value-stores` of {names} grants it, so a handler could mark "
                    "deliveries done or free them; give the delivery ids a store no "
                    f"component is granted (declare e.g. [key-value.webhook-deliveries] and "
                    "name it here)", path=where, field=f"{field}.idempotency.store")
            ledger = DeliveryLedger(context.store(idem.store, "webhook.idempotency.store"),
                                    route, window_s=idem.window_s, lease_s=idem.lease_s)
    enqueuer: Enqueuer | None = None
    if enqueue is not None:
        enqueuer = _enqueuer(enqueue, context)
    return WebhookGate(route, verifier=verifier, delivery_id=delivery_id, ledger=ledger,
                       enqueuer=enqueuer)


def _verifier(webhook: WebhookConfig, context: TriggerContext, field: str) -> Verifier:
    where = context.manifest_path
    if webhook.scheme not in SCHEMES:
        known = ", ".join(f'"{s}"' for s in SCHEMES)
        raise ConfigError(f"unknown webhook scheme {webhook.scheme!r}; known schemes: {known}",
                          path=where, field=f"{field}.scheme")
    if not webhook.secrets:
        raise ConfigError("no secret named; list the [variables] holding the signing "
                          'secret, e.g. secrets = ["github-secret"]', path=where,
                          field=f"{field}.secrets")
    if webhook.tolerance_s <= 0:
        raise ConfigError(f"tolerance-s = {webhook.tolerance_s}: the window must be more than "
                          "0 seconds (default 300)", path=where, field=f"{field}.tolerance-s")
    if webhook.scheme == "hmac-sha256" and not webhook.header:
        raise ConfigError('the hmac-sha256 scheme needs `header`, the signature\'s header '
                          '(e.g. "x-signature")', path=where, field=f"{field}.header")
    values: list[str] = []
    for i, name in enumerate(webhook.secrets):
        if context.webhook_secret is None:
            continue  # `wasmgate build`'s check: secrets are not resolved there
        value = context.webhook_secret(name, f"{field}.secrets[{i}]")
        if webhook.scheme == "standard-webhooks":
            try:
                standard_webhooks_key(value)
            except ValueError as exc:
                raise ConfigError(f"secret {name!r}: {exc}", path=where,
                                  field=f"{field}.secrets[{i}]") from None
        values.append(value)
    return Verifier(webhook.scheme, tuple(values),
                    tolerance_s=webhook.tolerance_s,
                    header=(webhook.header or "").lower(), prefix=webhook.prefix,
                    encoding=webhook.encoding)


def _delivery_id(webhook: WebhookConfig) -> DeliveryId:
    idem = webhook.idempotency
    if idem is not None and idem.id_header:
        return DeliveryId(header=idem.id_header.lower())
    if idem is not None and idem.id_field:
        return DeliveryId(field=tuple(idem.id_field.split(".")))
    if webhook.scheme in _DEFAULT_ID_HEADER:
        return DeliveryId(header=_DEFAULT_ID_HEADER[webhook.scheme])
    if webhook.scheme in _DEFAULT_ID_FIELD:
        return DeliveryId(field=(_DEFAULT_ID_FIELD[webhook.scheme],))
    return DeliveryId()


def _enqueuer(enqueue: EnqueueConfig, context: TriggerContext) -> Enqueuer:
    field = f"{context.field}.enqueue"
    if enqueue.broker not in context.brokers:
        known = ", ".join(f"`{b}`" for b in sorted(context.brokers)) or "(none)"
        raise ConfigError(f"unknown broker {enqueue.broker!r}; declare it with "
                          f"[brokers.{enqueue.broker}] (known brokers: {known})",
                          path=context.manifest_path, field=f"{field}.broker")
    kind = context.brokers[enqueue.broker].kind
    at_most_once = _AT_MOST_ONCE.get(kind)
    if at_most_once is not None and not enqueue.destination.startswith(at_most_once[1]):
        what, durable = at_most_once
        raise ConfigError(
            f"{what} {enqueue.destination!r} keeps no message: with nobody subscribed it is "
            f"dropped, after the provider got its 202 (and will never retry); write "
            f"\"{durable}{enqueue.destination}\" to enqueue durably",
            path=context.manifest_path, field=f"{field}.destination")
    from bindings.host.publish import BrokerClients

    clients = context.broker_clients or BrokerClients(dict(context.brokers))
    return Enqueuer(clients, broker=enqueue.broker, destination=enqueue.destination,
                    headers=enqueue.headers, timeout_ms=enqueue.timeout_ms)


__all__ = ["DeliveryId", "Reply", "RunHandler", "WebhookGate", "build_gate"]
