"""NATS trigger configs: bad tables fail at load with the file, the field and the fix."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.errors import ConfigError
from gateway.manifest import BrokerSpec
from triggers.base import TriggerContext
from triggers.jetstream import JetStreamTrigger, build_jetstream_trigger
from triggers.nats import NatsTrigger, build_nats_trigger
from triggers.nats_connection import subject_matches

CONTEXT = TriggerContext(manifest_path="/app/wasmgate.toml", field="trigger.nats[0]",
                         brokers={"b": BrokerSpec(kind="nats", url="nats://127.0.0.1:4222")})


def core(**table: Any) -> NatsTrigger:
    return build_nats_trigger({"component": "c", "broker": "b", **table}, context=CONTEXT)


def jetstream(**table: Any) -> JetStreamTrigger:
    base = {"component": "c", "broker": "b", "stream": "orders", "consumer": "gw"}
    return build_jetstream_trigger({**base, **table}, context=CONTEXT)


def test_defaults_and_trigger_attributes() -> None:
    trigger = core(subject="orders.*", queue="workers")
    assert trigger.config.concurrency == 16 and trigger.config.ordering == "key"
    assert trigger.config.retry_policy.max_attempts == 5
    js = jetstream(**{"max-attempts": 3})
    assert js.config.retry_policy.max_attempts == 3
    assert js.config.ack_wait_ms == 30_000 and js.config.max_ack_pending == 1000


@pytest.mark.parametrize(("build", "table", "field", "fix"), [
    (core, {"subject": "a b"}, "trigger.nats[0].subject", "tokens separated by dots"),
    (core, {"subject": "orders.>", "dead-letter": "orders.dead"},
     "trigger.nats[0].dead-letter", "outside"),
    (core, {"subject": "x", "queue-group": "q"}, "trigger.nats[0]", "queue-group"),
    (jetstream, {"create": True}, "trigger.nats[0].subjects", 'subjects = ["orders.>"]'),
    (jetstream, {"subjects": ["orders.>"]}, "trigger.nats[0].subjects", "create = true"),
    (jetstream, {"stream": "orders.v1"}, "trigger.nats[0].stream", "letters, digits"),
    (jetstream, {"create": True, "subjects": ["orders.>"], "dead-letter": "orders.dlq"},
     "trigger.nats[0].dead-letter", "outside the stream"),
    (jetstream, {"ack-wait-ms": 10}, "trigger.nats[0].ack-wait-ms", ">= 300"),
])
def test_bad_tables_name_file_field_and_fix(build: Any, table: dict[str, Any], field: str,
                                            fix: str) -> None:
    with pytest.raises(ConfigError) as caught:
        build(**table)
    message = str(caught.value)
    assert "/app/wasmgate.toml" in message
    assert field in message
    assert fix in message


@pytest.mark.parametrize(("pattern", "subject", "expected"), [
    ("orders.*", "orders.eu", True),
    ("orders.*", "orders.eu.1", False),
    ("orders.>", "orders.eu.1", True),
    ("orders.>", "orders", False),
    ("orders", "orders", True),
    ("*.dead", "orders.dead", True),
    ("orders.eu", "orders.us", False),
])
def test_subject_matching(pattern: str, subject: str, expected: bool) -> None:
    assert subject_matches(pattern, subject) is expected


@pytest.mark.parametrize("old", ["shutdown-grace-ms", "drain-timeout-ms"])
def test_a_renamed_stop_grace_field_is_refused_with_its_new_name(old: str) -> None:
    # Kafka said shutdown-grace-ms and AMQP drain-timeout-ms; every broker trigger now
    # says stop-grace-ms, and a manifest with an old name learns the new one.
    with pytest.raises(ConfigError) as info:
        core(subject="orders", **{old: 1000})
    assert f"`{old}` is now `stop-grace-ms`" in str(info.value)
    assert f"trigger.nats[0].{old}" in str(info.value)
    assert core(subject="orders", **{"stop-grace-ms": 1000}).config.stop_grace_ms == 1000
