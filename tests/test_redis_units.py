"""Pure logic of the Redis adapters: entry mapping, consumer names, config errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.errors import ConfigError
from gateway.manifest import BrokerSpec
from triggers.base import TriggerContext
from triggers.redis_consumer import claim_consumer_name
from triggers.redis_entries import dead_letter_fields, entry_time_micros, entry_to_event
from triggers.redis_pubsub import build_redis_pubsub_trigger
from triggers.redis_streams import build_redis_streams_trigger


def _context(tmp_path: Path, field: str = "trigger.redis-streams[0]") -> TriggerContext:
    return TriggerContext(manifest_path="/app/wasmgate.toml", field=field,
                          brokers={"b": BrokerSpec(kind="redis", url="redis://127.0.0.1:1/0")},
                          state_dir=str(tmp_path))


def test_an_entry_maps_data_key_content_type_and_the_rest_as_headers() -> None:
    fields = {b"data": b"\x00payload", b"key": b"k1", b"content-type": b"application/json",
              b"x-trace": b"abc", b"bad": b"\xff"}
    event = entry_to_event("orders", b"1700000000123-4", fields, source="wasmgate/redis-streams/b",
                           group="g", consumer="c1", delivery_count=3)
    assert event.id == "orders/1700000000123-4"
    assert event.data == b"\x00payload"
    assert event.key == b"k1"
    assert event.content_type == "application/json"
    assert event.headers == [("x-trace", "abc"), ("bad", "\ufffd")]
    assert event.subject == "orders"
    assert event.time == 1700000000123 * 1000
    assert event.meta("attempt") == "3"
    assert event.meta("delivery-count") == "3"
    assert event.meta("redelivered") == "true"
    assert event.meta("entry-id") == "1700000000123-4"


def test_an_entry_without_the_known_fields_is_an_empty_keyless_event() -> None:
    event = entry_to_event("s", b"5-0", {b"other": b"v"}, source="x", group="g", consumer="c",
                           delivery_count=1)
    assert (event.data, event.key, event.content_type) == (b"", None, None)
    assert event.meta("redelivered") == "false"
    assert entry_time_micros(b"junk") == 0


def test_a_dead_letter_keeps_the_original_fields_byte_for_byte() -> None:
    out = dead_letter_fields({b"data": b"\xff\x00", b"x": b"1"},
                             [("wasmgate-dead-letter-status", "500")])
    assert out == {b"data": b"\xff\x00", b"x": b"1", b"wasmgate-dead-letter-status": b"500"}


def test_the_consumer_name_is_stable_and_never_shared_by_live_processes(
        tmp_path: Path) -> None:
    first = claim_consumer_name(tmp_path, "g")
    second = claim_consumer_name(tmp_path, "g")  # another process on the same state dir
    assert first.name != second.name
    name = first.name
    first.release()  # the process died: the kernel drops its lock
    again = claim_consumer_name(tmp_path, "g")
    assert again.name == name
    again.release()
    second.release()


def _streams(tmp_path: Path, **table: Any) -> None:
    build_redis_streams_trigger({"component": "c", "broker": "b", "stream": "s", **table},
                                context=_context(tmp_path))


@pytest.mark.parametrize(("table", "field", "says"), [
    ({"start-id": "latest"}, "start-id", "is not \"$\""),
    ({"dead-letter": "s"}, "dead-letter", "the consumed stream itself"),
    ({"claim-idle": 5}, "claim-idle", "unknown field"),
    ({"batch-size": 0}, "batch-size", ">= 1"),
])
def test_bad_streams_config_names_the_file_field_and_fix(
        tmp_path: Path, table: dict[str, Any], field: str, says: str) -> None:
    with pytest.raises(ConfigError) as info:
        _streams(tmp_path, **table)
    message = str(info.value)
    assert "/app/wasmgate.toml" in message
    assert "trigger.redis-streams[0]" in message
    assert field in message
    assert says in message


@pytest.mark.parametrize(("table", "says"), [
    ({}, "nothing to subscribe to"),
    ({"channels": ["a"], "dead-letter": "x"}, "no dead-letter destination"),
])
def test_bad_pubsub_config_names_the_file_field_and_fix(
        tmp_path: Path, table: dict[str, Any], says: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_redis_pubsub_trigger({"component": "c", "broker": "b", **table},
                                   context=_context(tmp_path, "trigger.redis[0]"))
    assert "/app/wasmgate.toml" in str(info.value)
    assert "trigger.redis[0]" in str(info.value)
    assert says in str(info.value)


def test_a_pubsub_message_maps_channel_pattern_and_payload(tmp_path: Path) -> None:
    trigger = build_redis_pubsub_trigger({"component": "c", "broker": "b",
                                          "patterns": ["orders.*"]},
                                         context=_context(tmp_path, "trigger.redis[0]"))
    event = trigger._event({"type": "pmessage", "pattern": b"orders.*",
                            "channel": b"orders.eu", "data": b"{}"})
    assert (event.subject, event.data, event.key) == ("orders.eu", b"{}", None)
    assert event.source == "wasmgate/redis/b"
    assert event.type == "wasmgate.redis.message"
    assert event.metadata == [("channel", "orders.eu"), ("pattern", "orders.*"),
                              ("attempt", "1")]
