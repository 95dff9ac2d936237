"""The AMQP adapter's pure parts: deliveries to events, dead letters, replies, config."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest

from bindings.types import Response
from gateway.brokers.amqp import connection_url
from gateway.dispatch import Outcome, Verdict
from gateway.errors import ConfigError
from gateway.manifest import BrokerSpec, TlsSpec
from triggers.amqp import build
from triggers.amqp_messages import (
    REPLY_STATUS,
    dead_letter_message,
    delivery_count,
    event_from_message,
    header_text,
    reply_message,
)
from triggers.amqp_topology import binding_keys, dead_letter_routing_key
from triggers.base import TriggerContext
from triggers.delivery import DL_ATTEMPTS, DL_COMPONENT, DL_REASON, DL_STATUS


def delivery(**overrides: Any) -> Any:
    """A stand-in for aio-pika's IncomingMessage (the functions only read attributes)."""
    fields: dict[str, Any] = {
        "body": b'{"id": "m1"}', "headers": {}, "content_type": "application/json",
        "content_encoding": None, "delivery_mode": 2, "priority": None,
        "correlation_id": None, "reply_to": None, "expiration": None, "message_id": None,
        "timestamp": None, "type": None, "user_id": None, "app_id": None,
        "exchange": "orders", "routing_key": "order.eu", "delivery_tag": 7,
        "redelivered": False,
    }
    fields.update(overrides)
    return SimpleNamespace(**fields)


def context() -> TriggerContext:
    return TriggerContext(manifest_path="/app/wasmgate.toml", field="trigger.amqp[0]",
                          brokers={"rabbit": BrokerSpec(kind="amqp",
                                                        url="amqp://127.0.0.1:5672/")})


def test_delivery_count_comes_from_the_quorum_counter_else_the_redelivered_flag() -> None:
    assert delivery_count(delivery()) == 1
    assert delivery_count(delivery(headers={"x-delivery-count": 3})) == 4
    # A classic queue only proves one earlier delivery.
    assert delivery_count(delivery(redelivered=True)) == 2


def test_event_carries_the_broker_facts_and_the_attempt() -> None:
    stamp = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    event = event_from_message(
        delivery(headers={"x-delivery-count": 1, "tenant": b"acme", "flag": True},
                 reply_to="replies", correlation_id="c-1", message_id="mid-9",
                 timestamp=stamp),
        broker="rabbit", queue="work", key_header=None)
    assert event.id == "mid-9"
    assert (event.source, event.type, event.subject) == (
        "wasmgate/amqp/rabbit", "wasmgate.amqp.message", "work")
    assert event.time == int(stamp.timestamp() * 1_000_000)
    assert event.key == b"order.eu"
    assert ("tenant", "acme") in event.headers and ("flag", "true") in event.headers
    meta = dict(event.metadata)
    assert meta["attempt"] == "2"
    assert meta["delivery-count"] == "2"
    assert meta["reply-to"] == "replies" and meta["correlation-id"] == "c-1"
    assert meta["exchange"] == "orders" and meta["routing-key"] == "order.eu"


def test_the_key_header_replaces_the_routing_key_as_the_ordering_key() -> None:
    with_key = event_from_message(delivery(headers={"customer": 42}), broker="b",
                                  queue="q", key_header="customer")
    without = event_from_message(delivery(), broker="b", queue="q", key_header="customer")
    assert with_key.key == b"42"
    assert without.key is None


def test_header_text_renders_every_amqp_field_type() -> None:
    assert header_text(b"x") == "x"
    assert header_text(5) == "5"
    assert header_text(False) == "false"
    assert header_text({"a": [1, b"b"]}) == '{"a":[1,"b"]}'


def test_a_dead_letter_keeps_body_properties_and_typed_headers_and_says_why() -> None:
    original = delivery(headers={"x-origin": "t", "n": 3, "x-delivery-count": 2},
                        correlation_id="c", message_id="m", delivery_mode=1)
    event = event_from_message(original, broker="b", queue="q", key_header=None)
    outcome = Outcome(verdict=Verdict.DEAD_LETTER, error="boom", error_kind="returned-error",
                      attempts=5)
    letter = dead_letter_message(original, event, outcome, "billing")
    assert letter.body == original.body
    assert letter.headers["x-origin"] == "t" and letter.headers["n"] == 3
    assert "x-delivery-count" not in letter.headers
    assert letter.headers[DL_ATTEMPTS] == "5"
    assert letter.headers[DL_COMPONENT] == "billing"
    assert letter.headers[DL_REASON] == "boom"
    assert letter.headers[DL_STATUS] == "500"
    assert (letter.correlation_id, letter.message_id) == ("c", "m")
    assert letter.delivery_mode == 2  # persistent whatever the original was


def test_a_reply_carries_the_body_status_and_correlation_id() -> None:
    request = delivery(reply_to="amq.rabbitmq.reply-to.x", correlation_id="req-1")
    ok = Outcome(verdict=Verdict.ACK, response=Response(
        status=201, headers=[("Content-Type", "text/plain"), ("x-a", "1")], body=b"made"))
    reply = reply_message(request, ok)
    assert reply.body == b"made"
    assert reply.correlation_id == "req-1"
    assert reply.content_type == "text/plain"
    assert reply.headers == {"x-a": "1", REPLY_STATUS: "201"}
    failed = reply_message(request, Outcome(verdict=Verdict.DEAD_LETTER, error="trapped",
                                            error_kind="trap"))
    assert failed.body == b"trapped"
    assert failed.headers[REPLY_STATUS] == "500"


def test_config_defaults_bindings_and_dead_letter_routes() -> None:
    trigger = build({"component": "c", "broker": "rabbit", "queue": "work",
                     "exchange": "events", "exchange-type": "topic",
                     "dead-letter": "dlx"}, context=context())
    config = trigger.config
    assert (config.queue_type, config.concurrency, config.ordering) == ("quorum", 16, "key")
    assert binding_keys(config) == ["#"]
    assert dead_letter_routing_key(config) == "work"
    assert trigger.config.retry_policy.max_attempts == 5
    direct = build({"component": "c", "broker": "rabbit", "queue": "work",
                    "exchange": "events", "dead-letter": "", "dead-letter-queue": "work.dead"},
                   context=context()).config
    assert binding_keys(direct) == ["work"]
    assert dead_letter_routing_key(direct) == "work.dead"


@pytest.mark.parametrize(("table", "field", "hint"), [
    ({"queue": "q", "prefetch": 5}, "trigger.amqp[0]", "prefetch"),
    ({}, "trigger.amqp[0]", "queue"),
    ({"queue": ""}, "trigger.amqp[0].queue", "server-named"),
    ({"queue": "amq.work"}, "trigger.amqp[0].queue", "reserved"),
    ({"queue": "q", "exchange": ""}, "trigger.amqp[0].exchange", "default exchange"),
    ({"queue": "q", "dead-letter": ""}, "trigger.amqp[0].dead-letter-routing-key",
     "back into the queue"),
    ({"queue": "q", "queue-type": "stream"}, "trigger.amqp[0].queue-type", "stream"),
])
def test_bad_config_names_the_file_the_field_and_the_fix(
        table: dict[str, Any], field: str, hint: str) -> None:
    with pytest.raises(ConfigError) as caught:
        build({"component": "c", "broker": "rabbit", **table}, context=context())
    message = str(caught.value)
    assert "/app/wasmgate.toml" in message
    assert field in message
    assert hint in message


def test_connection_url_applies_the_manifest_credentials() -> None:
    spec = BrokerSpec(kind="amqp", url="amqp://127.0.0.1:5672/vh", username="app",
                      password="s3cret/?", tls=TlsSpec(insecure_skip_verify=True))
    url = connection_url(spec)
    assert url.startswith("amqp://app:s3cret")
    assert url.endswith("@127.0.0.1:5672/vh")
    assert connection_url(BrokerSpec(kind="amqp", url="amqp://u:p@h/")) == "amqp://u:p@h/"
