"""Which trigger's dead letters: a manifest and a trigger name become an open store.

A trigger is named ``<kind>[<i>]`` (its table's position, as in error messages:
``kafka[0]``), by its kind alone when it is the only one of that kind, or by its component
when that component has one broker trigger. Without a name, the manifest's only broker
trigger with a dead-letter destination is used.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway import brokers
from gateway.dead_letters.model import DeadLetterStore
from gateway.errors import BrokerError, ConfigError
from gateway.manifest import LoadedManifest, load_manifest
from gateway.redaction import redact_url
from triggers.base import TriggerContext, decode_config
from triggers.closing import close_quietly
from triggers.delivery import BrokerTriggerConfig, describe

# The trigger kinds with a dead-letter destination, and their config schema's module.
KINDS = ("kafka", "nats-jetstream", "amqp", "redis-streams")
_NAMED = re.compile(r"^(?P<kind>[a-z-]+)\[(?P<index>\d+)\]$")


@dataclass
class TriggerRef:
    kind: str
    index: int
    config: BrokerTriggerConfig

    @property
    def name(self) -> str:
        return f"{self.kind}[{self.index}]"


def find_trigger(manifest: LoadedManifest, name: str | None) -> TriggerRef:
    """The broker trigger ``name`` names (see the module docstring); ConfigError naming
    the manifest and the known triggers otherwise."""
    refs = [TriggerRef(kind, i, _decode(manifest, kind, i, table))
            for kind in KINDS for i, table in enumerate(manifest.triggers.get(kind, []))]
    known = ", ".join(f"{r.name} (component {r.config.component})" for r in refs) or "none"
    where = str(manifest.path)
    if name is None:
        with_dlq = [r for r in refs if r.config.dead_letter is not None]
        if len(with_dlq) == 1:
            return with_dlq[0]
        if not with_dlq:
            raise ConfigError("no broker trigger here has a dead-letter destination (set "
                              f"dead-letter in a trigger table); broker triggers: {known}",
                              path=where)
        raise ConfigError("several triggers have dead letters; name one: "
                          + ", ".join(r.name for r in with_dlq), path=where)
    match = _NAMED.match(name)
    if match:
        found = [r for r in refs if r.kind == match["kind"] and r.index == int(match["index"])]
    else:
        found = [r for r in refs if r.kind == name] or [
            r for r in refs if r.config.component == name]
    if len(found) != 1:
        problem = "matches several triggers" if found else "names no broker trigger"
        raise ConfigError(f"{name!r} {problem}; name one as <kind>[<index>]. Broker "
                          f"triggers: {known}", path=where)
    return found[0]


def _decode(manifest: LoadedManifest, kind: str, index: int, table: Any
            ) -> BrokerTriggerConfig:
    schema = _schema(kind)
    context = TriggerContext(manifest_path=str(manifest.path), field=f"trigger.{kind}[{index}]",
                             brokers=dict(manifest.brokers))
    return decode_config(dict(table), schema, context)


def _schema(kind: str) -> type[BrokerTriggerConfig]:
    if kind == "kafka":
        from triggers.kafka_config import KafkaConfig
        return KafkaConfig
    if kind == "nats-jetstream":
        from triggers.jetstream_config import JetStreamConfig
        return JetStreamConfig
    if kind == "amqp":
        from triggers.amqp_config import AmqpConfig
        return AmqpConfig
    from triggers.redis_streams_config import RedisStreamsConfig
    return RedisStreamsConfig


async def open_store(manifest_path: str | Path, name: str | None
                     ) -> tuple[TriggerRef, DeadLetterStore]:
    """The open dead-letter store of the trigger ``name`` names in the manifest."""
    manifest = load_manifest(manifest_path)
    brokers.check(dict(manifest.brokers), path=str(manifest.path))
    ref = find_trigger(manifest, name)
    config = ref.config
    field = f"trigger.{ref.kind}[{ref.index}].dead-letter"
    if config.dead_letter is None:
        raise ConfigError(f"trigger {ref.name} has no dead-letter destination: its dead "
                          "letters are logged and dropped. Set dead-letter to keep them",
                          path=str(manifest.path), field=field)
    spec = manifest.brokers[config.broker]
    store = _store(ref, spec, str(manifest.path))
    try:
        await store.open()
    except Exception as exc:
        await close_quietly(store.close(), what="dead-letter store")
        raise BrokerError(f"cannot reach broker `{config.broker}` at {redact_url(spec.url)} "
                          f"to read {store.describe}: {describe(exc)}; is it running?"
                          ) from None
    return ref, store


def _store(ref: TriggerRef, spec: Any, path: str) -> DeadLetterStore:
    config: Any = ref.config
    if ref.kind == "kafka":
        from gateway.dead_letters.kafka import KafkaDeadLetters
        return KafkaDeadLetters(config, spec)
    if ref.kind == "nats-jetstream":
        from gateway.dead_letters.jetstream import JetStreamDeadLetters
        return JetStreamDeadLetters(config, spec)
    if ref.kind == "amqp":
        if config.dead_letter_queue is None:
            raise ConfigError(f"trigger {ref.name} dead-letters to exchange "
                              f"{config.dead_letter!r} but names no dead-letter-queue, so "
                              "there is no queue to read them from; set dead-letter-queue",
                              path=path, field=f"trigger.amqp[{ref.index}].dead-letter-queue")
        from gateway.dead_letters.amqp import AmqpDeadLetters
        return AmqpDeadLetters(config, spec)
    from gateway.dead_letters.redis_streams import RedisStreamsDeadLetters
    return RedisStreamsDeadLetters(config, spec)


__all__ = ["KINDS", "TriggerRef", "find_trigger", "open_store"]
