"""The NATS core trigger: subscribe to a subject (wildcards allowed), optionally in a queue
group, and call a component for every message; answer requests with the handler's response.

Delivery semantics (NATS core has no acknowledgements and no persistence):

* **At most once.** A message published while the gateway is disconnected, or dropped by a
  slow consumer, is gone. Retries happen in process (``max-attempts``, backoff) while the
  message is held; a gateway killed mid-flight loses what it held.
* **Request/reply.** A message with a reply subject gets one reply after the last attempt:
  the handler's body and headers, with ``wasmgate-status``; a failure (5xx, trap, timeout,
  or any status >= 400) also carries ``Nats-Service-Error-Code`` and ``Nats-Service-Error``
  (the convention of NATS micro services), so a requester never waits for its timeout.
* **Dead letters** (optional ``dead-letter`` subject): a message that failed its last
  attempt, or got a 4xx, is published there with the ``wasmgate-dead-letter-*`` headers;
  that publish is core NATS too, so it is at most once as well.
* **Order.** The message key is its subject: ``ordering = "key"`` keeps messages of one
  subject in order while subjects run in parallel, ``"partition"`` runs the whole
  subscription in order, ``"none"`` only bounds concurrency.
* **Queue groups** (``queue``) spread messages over the gateway's replicas.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any, ClassVar

import structlog
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from bindings.types import Event, new_event_id, now_micros
from gateway.dispatch import Outcome, RetryPolicy
from gateway.errors import ConfigError
from gateway.redaction import cut_masked
from triggers.base import Dispatch, TriggerContext, decode_config, register
from triggers.delivery import (
    BrokerTriggerConfig,
    OrderedLanes,
    Positive,
    Settle,
    dead_letter_headers,
    deliver,
    describe,
    drain_at_stop,
    failure_reason,
    lane_key,
)
from triggers.nats_connection import (
    NatsConnection,
    confirm_subscriptions,
    content_type,
    header_dict,
    header_pairs,
    subject_matches,
)
from triggers.readiness import until_accepting

log = structlog.get_logger("wasmgate.nats")

STATUS_HEADER = "wasmgate-status"
SERVICE_ERROR_CODE = "Nats-Service-Error-Code"
SERVICE_ERROR = "Nats-Service-Error"
_DRAIN_TIMEOUT_S = 30.0


class NatsConfig(BrokerTriggerConfig, kw_only=True, forbid_unknown_fields=True,
                 rename="kebab"):
    """The schema of one ``[[trigger.nats]]`` table."""

    subject: str
    queue: str | None = None
    # Messages nats-py buffers for this subscription before it drops (slow consumer).
    pending_msgs_limit: Positive = 65_536


class NatsTrigger:
    """One ``[[trigger.nats]]`` table: a core NATS subscription feeding a component."""

    kind: ClassVar[str] = "nats"

    def __init__(self, config: NatsConfig, context: TriggerContext) -> None:
        # Set first thing in start(): stop() of a trigger never started (a manifest check
        # builds every trigger to validate it) does nothing and logs nothing.
        self._started = False
        _validate(config, context)
        self.config = config
        self.component = config.component
        self.source = f"wasmgate/nats/{config.broker}"
        self._connection = NatsConnection(f"nats:{config.subject}", config.broker,
                                          context.broker(config.broker),
                                          manifest_path=context.manifest_path,
                                          field=context.field)
        self._lanes = OrderedLanes(config.concurrency)
        self._dispatch: Dispatch | None = None
        self._sub: Subscription | None = None
        self._intake: asyncio.Task[None] | None = None
        # Set once the subscription is registered at the broker (tests wait for it).
        self.ready = asyncio.Event()
        self.handled = 0
        self.dead_lettered = 0

    @property
    def retry_policy(self) -> RetryPolicy:
        """max-attempts and backoff of this table, applied by ``deliver``."""
        return self.config.retry_policy

    async def start(self, dispatch: Dispatch) -> None:
        """Connect and subscribe; returns once subscribed, or after the broker's connect
        timeout with the connection still retrying in the background."""
        self._started = True
        self._dispatch = dispatch
        self._intake = asyncio.create_task(self._run(), name=f"wasmgate-nats:{self.config.subject}")
        self._intake.add_done_callback(_log_crash)
        if not await until_accepting(self.ready, self._intake,
                                     timeout_s=self._connection.spec.connect_timeout_ms / 1000):
            log.warning("nats trigger waiting for its broker; intake starts when it answers",
                        subject=self.config.subject, address=self._connection.address)

    async def _run(self) -> None:
        client = await self._connection.connect()
        self._sub = await client.subscribe(self.config.subject, queue=self.config.queue or "",
                                           pending_msgs_limit=self.config.pending_msgs_limit,
                                           pending_bytes_limit=0)
        timeout_s = self._connection.spec.connect_timeout_ms / 1000
        # Ready means subscribed: core NATS keeps nothing for a subject nobody holds yet.
        while not await confirm_subscriptions(client, timeout_s=timeout_s):
            log.warning("the broker has not confirmed the subscription yet; still waiting",
                        subject=self.config.subject, address=self._connection.address)
        self.ready.set()
        log.info("nats trigger subscribed", subject=self.config.subject,
                 queue=self.config.queue, component=self.component)
        async for msg in self._sub.messages:
            event = self._event_for(msg)
            key = lane_key(self.config.ordering, event.key)
            await self._lanes.submit(key, functools.partial(self._handle, msg, event))

    def _event_for(self, msg: Msg) -> Event:
        metadata = [("subject", msg.subject)]
        if msg.reply:
            metadata.append(("reply-to", msg.reply))
        if self.config.queue:
            metadata.append(("queue", self.config.queue))
        return Event(
            id=(msg.headers or {}).get("Nats-Msg-Id") or new_event_id(),
            source=self.source, type="wasmgate.nats.message", subject=msg.subject,
            time=now_micros(), content_type=content_type(msg.headers),
            key=msg.subject.encode(), headers=header_pairs(msg.headers), metadata=metadata,
            data=msg.data,
        )

    async def _handle(self, msg: Msg, event: Event) -> None:
        assert self._dispatch is not None
        self.handled += 1
        await deliver(event, _Settle(self, msg, event), run=self._dispatch,
                      component=self.component, policy=self.retry_policy,
                      http_path=self.config.http_path,
                      mode="in-process")

    async def stop(self) -> None:
        """Unsubscribe (the broker stops sending), run what was already received, reply,
        publish dead letters, then flush and close the connection."""
        if not self._started:
            return
        sub, client = self._sub, self._connection.client
        if sub is not None and client.is_connected:
            try:
                # drain = UNSUB + a round trip + wait until our loop took every queued message.
                await asyncio.wait_for(sub.drain(),  # type: ignore[no-untyped-call]
                                       _DRAIN_TIMEOUT_S)  # nats-py leaves it untyped
            except Exception as exc:
                log.warning("could not drain the subscription; queued messages are dropped",
                            subject=self.config.subject, error=describe(exc))
        if self._intake is not None:
            self._intake.cancel()
            await asyncio.gather(self._intake, return_exceptions=True)
        await drain_at_stop(self._lanes, self.config, redelivered=False,
                            subject=self.config.subject)
        await self._connection.close()
        self.ready.clear()
        log.info("nats trigger stopped", subject=self.config.subject, handled=self.handled,
                 dead_lettered=self.dead_lettered)



class _Settle(Settle):
    """Core NATS is at most once: nothing to ack; a reply if requested; a dead letter is
    published to the ``dead-letter`` subject, unconfirmed."""

    def __init__(self, trigger: NatsTrigger, msg: Msg, event: Event) -> None:
        self.trigger, self.msg, self.event = trigger, msg, event

    async def ack(self, outcome: Outcome) -> None:
        return

    async def reply(self, outcome: Outcome) -> None:
        if not self.msg.reply:
            return
        response = outcome.response
        headers = header_dict(response.headers) if response is not None else {}
        headers[STATUS_HEADER] = str(outcome.status)
        if outcome.status >= 400:
            headers[SERVICE_ERROR_CODE] = str(outcome.status)
            headers[SERVICE_ERROR] = cut_masked(failure_reason(outcome), 1000)
        body = response.body if response is not None else b""
        try:
            await self.trigger._connection.client.publish(self.msg.reply, body,
                                                          headers=headers)
        except Exception as exc:
            log.error("could not reply", subject=self.msg.subject, reply_to=self.msg.reply,
                      error=describe(exc))

    async def dead_letter(self, outcome: Outcome, reason: str) -> None:
        trigger, target = self.trigger, self.trigger.config.dead_letter
        trigger.dead_lettered += 1
        if target is None:
            return
        headers = header_dict(dead_letter_headers(self.event, outcome, trigger.component))
        try:
            await trigger._connection.client.publish(target, self.event.data, headers=headers)
        except Exception as exc:
            log.error("could not publish dead letter; it is lost (core NATS is at most once)",
                      dead_letter=target, event_id=self.event.id, error=describe(exc))

def _log_crash(task: asyncio.Task[None]) -> None:
    # Intake must never end silently: a crash here means the trigger stopped consuming.
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("intake stopped by an unexpected error", error=describe(exc), exc_info=exc)


def _validate(config: NatsConfig, context: TriggerContext) -> None:
    if not config.subject.strip() or " " in config.subject:
        raise ConfigError(f"subject {config.subject!r} is not a NATS subject; use tokens "
                          'separated by dots, e.g. "orders.*" or "events.>"',
                          path=context.manifest_path, field=f"{context.field}.subject")
    target = config.dead_letter
    if target is not None and subject_matches(config.subject, target):
        raise ConfigError(f"dead-letter subject {target!r} matches the trigger's own subject "
                          f"{config.subject!r}: dead letters would be consumed again; pick a "
                          "subject outside it", path=context.manifest_path,
                          field=f"{context.field}.dead-letter")


def build_nats_trigger(config: dict[str, Any], *, context: TriggerContext) -> NatsTrigger:
    """Decode and validate one ``[[trigger.nats]]`` table (the registered factory)."""
    return NatsTrigger(decode_config(config, NatsConfig, context), context)


register("nats", build_nats_trigger)

__all__ = ["NatsConfig", "NatsTrigger", "build_nats_trigger"]
