"""The schema of one ``[[trigger.nats-jetstream]]`` table and its checks at load."""

from __future__ import annotations

import re
from typing import Annotated, Literal

import msgspec

from gateway.errors import ConfigError
from triggers.base import TriggerContext
from triggers.delivery import BrokerTriggerConfig, Positive
from triggers.nats_connection import subject_matches

_NAME = re.compile(r"^[A-Za-z0-9_-]+$")

class JetStreamConfig(BrokerTriggerConfig, kw_only=True, forbid_unknown_fields=True,
                      rename="kebab"):
    """The schema of one ``[[trigger.nats-jetstream]]`` table."""

    stream: str
    consumer: str  # the durable consumer's name, shared by every replica
    # create = true: create the stream (with `subjects`) and the consumer when missing, and
    # update the consumer's settings; false: bind to the existing ones.
    create: bool = False
    subjects: list[str] = msgspec.field(default_factory=list)
    filter_subject: str | None = None
    storage: Literal["file", "memory"] = "file"
    ack_wait_ms: Annotated[int, msgspec.Meta(ge=300)] = 30_000
    max_ack_pending: Positive = 1000
    batch: Positive | None = None  # default: concurrency
    fetch_wait_ms: Annotated[int, msgspec.Meta(ge=10)] = 1000


def validate(config: JetStreamConfig, context: TriggerContext) -> None:
    """Refuse names JetStream would reject, and a dead-letter subject fed back to the input."""
    def fail(field: str, message: str) -> ConfigError:
        return ConfigError(message, path=context.manifest_path, field=f"{context.field}.{field}")

    for field, name in (("stream", config.stream), ("consumer", config.consumer)):
        if not _NAME.match(name):
            raise fail(field, f"{field} name {name!r} may only hold letters, digits, `-` and "
                       "`_` (no dots, spaces or wildcards)")
    if config.create and not config.subjects:
        raise fail("subjects", "create = true needs the stream's subjects, e.g. "
                   'subjects = ["orders.>"]')
    if config.subjects and not config.create:
        raise fail("subjects", "subjects is only used to create the stream; set create = true "
                   "or remove it (an existing stream keeps its own subjects)")
    target = config.dead_letter
    if target is not None:
        inputs = [*config.subjects, *([config.filter_subject] if config.filter_subject else [])]
        for pattern in inputs:
            if subject_matches(pattern, target):
                raise fail("dead-letter", f"dead-letter subject {target!r} matches the input "
                           f"subject {pattern!r}: dead letters would be consumed again; pick a "
                           "subject outside the stream")


__all__ = ["JetStreamConfig", "validate"]
