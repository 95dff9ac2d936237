"""The Redis pub/sub trigger (kind ``redis``): channels and patterns, **at most once**.

Redis pub/sub keeps nothing: a message reaches the subscribers connected at the moment it
is published and is gone. So this trigger cannot redeliver and has no dead-letter
destination. What it does guarantee: every message it *receives* runs through the
component with the trigger's retry policy (in process, with backoff), at most
``concurrency`` at once, in order per channel unless ``ordering = "none"``; a graceful
stop finishes what is running.

Lost by design, and said so in a log line at start: messages published while the gateway
is disconnected or resubscribing, messages received but not yet started at a crash, and
messages Redis drops when this subscriber falls behind (the server disconnects a
subscriber whose output buffer passes ``client-output-buffer-limit pubsub``, 32 MB by
default; the trigger then reconnects). Use ``redis-streams`` for at-least-once.

A message becomes an event with ``data`` = the payload, ``subject`` = the channel, and
metadata ``channel`` (and ``pattern`` for a pattern subscription); pub/sub carries no key
or headers.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

import msgspec
import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

from bindings.types import Event, new_event_id, now_micros
from gateway.brokers.redis import CONNECTION_ERRORS, redis_client
from gateway.dispatch import RetryPolicy
from gateway.errors import ConfigError
from triggers.base import Dispatch, TriggerContext, decode_config, register
from triggers.closing import close_quietly
from triggers.delivery import (
    BrokerTriggerConfig,
    ConnectionWatch,
    NothingToSettle,
    OrderedLanes,
    deliver,
    describe,
    drain_at_stop,
    lane_key,
)
from triggers.readiness import until_accepting

log = structlog.get_logger("wasmgate.redis")


class RedisPubSubConfig(BrokerTriggerConfig, kw_only=True, forbid_unknown_fields=True,
                       rename="kebab"):
    """The schema of one ``[[trigger.redis]]`` table."""

    channels: list[str] = msgspec.field(default_factory=list)
    # Glob-style patterns (PSUBSCRIBE): "orders.*", "h?llo".
    patterns: list[str] = msgspec.field(default_factory=list)


class RedisPubSubTrigger:
    """One ``[[trigger.redis]]`` table: a subscriber to ``channels`` and ``patterns``."""

    kind: ClassVar[str] = "redis"

    def __init__(self, config: RedisPubSubConfig, context: TriggerContext) -> None:
        # Set first thing in start(): stop() of a trigger never started (a manifest check
        # builds every trigger to validate it) does nothing and logs nothing.
        self._started = False
        self.config = config
        self.component = config.component
        self.spec = context.broker(config.broker)
        self.source = f"wasmgate/redis/{config.broker}"
        self.ready = asyncio.Event()
        self.received = 0
        self._watch = ConnectionWatch("redis", config.broker, self.spec)
        self._lanes = OrderedLanes(config.concurrency)
        self._dispatch: Dispatch | None = None
        self._client: aioredis.Redis | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def retry_policy(self) -> RetryPolicy:
        """max-attempts and backoff of this table, applied by ``deliver``."""
        return self.config.retry_policy

    async def start(self, dispatch: Dispatch) -> None:
        """Subscribe; returns once Redis confirmed every subscription (``ready``), or after
        the broker's connect timeout with the subscription still retrying in the background.
        """
        self._started = True
        self._dispatch = dispatch
        # No read timeout: a subscriber waits for messages as long as it takes.
        self._client = redis_client(self.spec, read_timeout_s=None, retries=0,
                                    name="wasmgate-pubsub")
        self._task = asyncio.create_task(self._subscribe_loop(), name="wasmgate-redis-pubsub")
        if not await until_accepting(self.ready, self._task,
                                     timeout_s=self.spec.connect_timeout_ms / 1000):
            log.warning("redis pub/sub trigger waiting for its broker; intake starts when it "
                        "answers", channels=self.config.channels, patterns=self.config.patterns)
        log.warning("redis pub/sub is at most once: messages published while the gateway is "
                    "disconnected, or received and not yet run when it crashes, are lost; "
                    "use kind redis-streams for at-least-once", component=self.component,
                    channels=self.config.channels, patterns=self.config.patterns)

    async def stop(self) -> None:
        """Unsubscribe, let running handler calls finish, then disconnect."""
        if not self._started:
            return
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task])
            self._task = None
        await drain_at_stop(self._lanes, self.config, redelivered=False,
                            channels=self.config.channels, patterns=self.config.patterns)
        if self._client is not None:
            await close_quietly(self._client.aclose(), what="redis client")
            self._client = None
        log.info("redis pub/sub trigger stopped", component=self.component,
                 received=self.received)

    async def _subscribe_loop(self) -> None:
        assert self._client is not None
        while not self._stopping:
            pubsub = self._client.pubsub()
            try:
                await self._subscribe(pubsub)
                self._watch.up()
                self.ready.set()
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True,
                                                       timeout=None)
                    if message is not None:
                        await self._submit(message)
            except CONNECTION_ERRORS as exc:
                await self._down(exc)
            except RedisError as exc:  # e.g. an ACL refusing the channel
                log.error("redis refused the subscription", error=describe(exc),
                          channels=self.config.channels, patterns=self.config.patterns)
                await self._down(exc)
            finally:
                await close_quietly(pubsub.aclose(), what="redis pub/sub connection")

    async def _down(self, exc: BaseException) -> None:
        """Not accepting until the loop is back; back off before the next attempt."""
        self.ready.clear()
        await self._watch.down(exc)

    async def _subscribe(self, pubsub: aioredis.client.PubSub) -> None:
        """Subscribe, and return once Redis confirmed every subscription (from then on a
        publish reaches us)."""
        if self.config.channels:
            await pubsub.subscribe(*self.config.channels)
        if self.config.patterns:
            await pubsub.psubscribe(*self.config.patterns)
        expected = len(set(self.config.channels)) + len(set(self.config.patterns))
        confirmed = 0
        while confirmed < expected:
            reply = await pubsub.get_message(timeout=self.spec.connect_timeout_ms / 1000)
            if reply is None:
                raise aioredis.TimeoutError("no subscribe confirmation from redis")
            if reply["type"] in ("subscribe", "psubscribe"):
                confirmed += 1
            else:
                await self._submit(reply)

    async def _submit(self, message: dict[str, Any]) -> None:
        if message.get("type") not in ("message", "pmessage"):
            return
        self.received += 1
        event = self._event(message)
        lane = lane_key(self.config.ordering, None, event.subject)
        await self._lanes.submit(lane, lambda: self._run(event))

    def _event(self, message: dict[str, Any]) -> Event:
        channel = _text(message["channel"])
        metadata = [("channel", channel), ("attempt", "1")]
        if message.get("pattern") is not None:
            metadata.insert(1, ("pattern", _text(message["pattern"])))
        data = message["data"]
        return Event(id=new_event_id(), source=self.source, type="wasmgate.redis.message",
                     subject=channel, time=now_micros(), metadata=metadata,
                     data=data if isinstance(data, bytes) else str(data).encode())

    async def _run(self, event: Event) -> None:
        assert self._dispatch is not None
        # At most once: a message whose retries are spent is logged (dead-lettered) and gone.
        await deliver(event, NothingToSettle(), run=self._dispatch, component=self.component,
                      policy=self.retry_policy,
                      http_path=self.config.http_path, mode="in-process")


def _text(value: object) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def build_redis_pubsub_trigger(config: dict[str, Any], *, context: TriggerContext
                               ) -> RedisPubSubTrigger:
    """Decode and validate one ``[[trigger.redis]]`` table (the registered factory)."""
    decoded = decode_config(config, RedisPubSubConfig, context)
    if not decoded.channels and not decoded.patterns:
        raise ConfigError('nothing to subscribe to; set channels = ["orders"] and/or '
                          'patterns = ["orders.*"]', path=context.manifest_path,
                          field=f"{context.field}.channels")
    if decoded.dead_letter is not None:
        raise ConfigError("redis pub/sub has no dead-letter destination (it is at most once);"
                          " remove dead-letter, or use kind redis-streams for dead letters",
                          path=context.manifest_path, field=f"{context.field}.dead-letter")
    context.broker(decoded.broker)
    return RedisPubSubTrigger(decoded, context)


register("redis", build_redis_pubsub_trigger)

__all__ = ["RedisPubSubConfig", "RedisPubSubTrigger", "build_redis_pubsub_trigger"]
