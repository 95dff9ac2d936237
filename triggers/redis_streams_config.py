"""The schema of one ``[[trigger.redis-streams]]`` table and its checks at load."""

from __future__ import annotations

import re

from gateway.errors import ConfigError
from triggers.base import TriggerContext
from triggers.delivery import BrokerTriggerConfig, Positive

_START_ID = re.compile(r"^(\$|0|\d+(-\d+)?)$")


class RedisStreamsConfig(BrokerTriggerConfig, kw_only=True, forbid_unknown_fields=True,
                         rename="kebab"):
    """The schema of one ``[[trigger.redis-streams]]`` table."""

    stream: str
    group: str = "wasmgate"
    # None: generated once per gateway instance and kept in .wasmgate/redis-streams/.
    consumer: str | None = None
    create_group: bool = True
    # Where a group created by the trigger starts: "$" = new entries only, "0" = all.
    start_id: str = "$"
    batch_size: Positive = 32
    block_ms: Positive = 1000
    # The visibility timeout: an entry pending this long on any consumer is reclaimed.
    claim_idle_ms: Positive = 30_000
    claim_interval_ms: Positive = 5_000


def validate(config: RedisStreamsConfig, context: TriggerContext) -> None:
    """Refuse a start id Redis would reject, a dead letter fed back, an unknown broker."""
    if not _START_ID.match(config.start_id):
        raise ConfigError(f"start-id {config.start_id!r} is not \"$\" (new entries only), "
                          "\"0\" (the whole stream) or an entry id like \"1700000000000-0\"",
                          path=context.manifest_path, field=f"{context.field}.start-id")
    if config.dead_letter == config.stream:
        raise ConfigError("dead-letter is the consumed stream itself; name another stream, "
                          f"e.g. \"{config.stream}.dead-letter\"",
                          path=context.manifest_path, field=f"{context.field}.dead-letter")
    context.broker(config.broker)


__all__ = ["RedisStreamsConfig", "validate"]
