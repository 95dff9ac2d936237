"""The schema of one ``[[trigger.kafka]]`` table and its checks at load (which name the
file, the field and the fix)."""

from __future__ import annotations

import re
from typing import Literal

from gateway.errors import ConfigError
from triggers.base import TriggerContext
from triggers.delivery import BrokerTriggerConfig, Positive

# Kafka's own rule for topic names.
_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,249}$")


class KafkaConfig(BrokerTriggerConfig, kw_only=True, forbid_unknown_fields=True,
                  rename="kebab"):
    """The schema of one ``[[trigger.kafka]]`` table (plus the shared broker fields)."""

    topics: list[str]
    # Consumer group; members with the same group share the partitions.
    group: str | None = None
    # Where a group with no committed offset starts. "earliest" so that a first run that
    # crashes before its first commit does not skip what it had been given.
    start_from: Literal["earliest", "latest"] = "earliest"
    commit_interval_ms: Positive = 500
    max_poll_records: Positive = 500
    # How long the broker may hold a fetch open waiting for data (latency when idle).
    fetch_max_wait_ms: Positive = 500
    session_timeout_ms: Positive = 10_000
    heartbeat_interval_ms: Positive = 3_000
    rebalance_timeout_ms: Positive | None = None
    max_poll_interval_ms: Positive = 300_000
    # How long a revoked partition's running records may take before it is handed over.
    revoke_wait_ms: Positive = 5_000
    client_id: str | None = None
    # The [key-value.<name>] store counting each record's attempts (triggers.kafka_attempts);
    # every replica of the group should share it. None: .wasmgate/kafka-attempts.sqlite.
    attempts_store: str | None = None


def validate(config: KafkaConfig, context: TriggerContext) -> None:
    """Refuse what decoding cannot: bad topic names, a dead letter fed back, timings."""
    def fail(field: str, message: str) -> ConfigError:
        return ConfigError(message, path=context.manifest_path, field=f"{context.field}.{field}")

    if not config.topics:
        raise fail("topics", 'list at least one topic, e.g. topics = ["orders"]')
    for topic in [*config.topics, *([config.dead_letter] if config.dead_letter else [])]:
        if not _TOPIC.match(topic):
            raise fail("topics" if topic in config.topics else "dead-letter",
                       f"invalid topic name {topic!r}; use 1-249 of A-Z a-z 0-9 . _ -")
    if config.dead_letter in config.topics:
        raise fail("dead-letter", f"dead-letter topic {config.dead_letter!r} is also consumed "
                   "by this trigger, so a dead letter would run again; use another topic")
    if config.heartbeat_interval_ms >= config.session_timeout_ms:
        raise fail("heartbeat-interval-ms",
                   f"heartbeat-interval-ms ({config.heartbeat_interval_ms}) must be below "
                   f"session-timeout-ms ({config.session_timeout_ms}); about a third of it")


__all__ = ["KafkaConfig", "validate"]
