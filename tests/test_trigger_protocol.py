"""Every trigger that retries declares its retry policy (the RetryingTrigger protocol), and
the policy is the one its table sets: what ``deliver`` applies is visible on the trigger."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from gateway.check import check_manifest
from gateway.errors import ConfigError
from gateway.manifest import BrokerSpec
from triggers.base import RetryingTrigger, TriggerContext, factory_for

BROKERS = {
    "k": BrokerSpec(kind="kafka", url="kafka://127.0.0.1:9092"),
    "n": BrokerSpec(kind="nats", url="nats://127.0.0.1:4222"),
    "a": BrokerSpec(kind="amqp", url="amqp://127.0.0.1:5672/"),
    "r": BrokerSpec(kind="redis", url="redis://127.0.0.1:6379/0"),
}
TABLES: dict[str, dict[str, Any]] = {
    "kafka": {"broker": "k", "topics": ["t"]},
    "nats": {"broker": "n", "subject": "s.>"},
    "nats-jetstream": {"broker": "n", "stream": "S", "consumer": "c"},
    "amqp": {"broker": "a", "queue": "q"},
    "redis": {"broker": "r", "channels": ["c"]},
    "redis-streams": {"broker": "r", "stream": "s", "group": "g"},
    "cron": {"schedule": "* * * * *"},
}
# Cron keeps its retries in a `retry` table (they run within one tick).
POLICY: dict[str, dict[str, Any]] = {"cron": {"retry": {"max-attempts": 7}}}


@pytest.mark.parametrize("kind", sorted(TABLES))
def test_a_retrying_trigger_declares_the_policy_its_table_sets(kind: str,
                                                               tmp_path: Path) -> None:
    context = TriggerContext(manifest_path=str(tmp_path / "wasmgate.toml"),
                             field=f"trigger.{kind}[0]", brokers=BROKERS,
                             state_dir=str(tmp_path / ".wasmgate"))
    factory = factory_for(kind, manifest_path=context.manifest_path)
    policy = POLICY.get(kind, {"max-attempts": 7})
    table = {"component": "c", **policy, **TABLES[kind]}
    trigger = factory(table, context=context)
    assert isinstance(trigger, RetryingTrigger)
    assert trigger.retry_policy.max_attempts == 7


@pytest.mark.parametrize("kind", sorted(TABLES))
def test_http_path_must_be_a_url_path(kind: str, tmp_path: Path) -> None:
    context = TriggerContext(manifest_path=str(tmp_path / "wasmgate.toml"),
                             field=f"trigger.{kind}[0]", brokers=BROKERS,
                             state_dir=str(tmp_path / ".wasmgate"))
    factory = factory_for(kind, manifest_path=context.manifest_path)
    with pytest.raises(ConfigError) as info:
        factory({"component": "c", "http-path": "events", **TABLES[kind]}, context=context)
    assert f"trigger.{kind}[0].http-path" in str(info.value)
    assert "starting with `/`" in str(info.value)


@pytest.mark.parametrize(("kind", "field"), [("kafka", "attempts-store"),
                                             ("cron", "claim-store")])
def test_a_store_field_naming_no_declared_store_says_which_and_where(
        kind: str, field: str, tmp_path: Path) -> None:
    def stores(name: str) -> Any:
        raise ConfigError(f"no key-value store named {name!r} (known stores: default); "
                          f"declare it with [key-value.{name}]", path="wasmgate.toml")

    context = TriggerContext(manifest_path=str(tmp_path / "wasmgate.toml"),
                             field=f"trigger.{kind}[0]", brokers=BROKERS,
                             state_dir=str(tmp_path / ".wasmgate"), key_value=stores)
    factory = factory_for(kind, manifest_path=context.manifest_path)
    with pytest.raises(ConfigError) as info:
        factory({"component": "c", field: "shraed", **TABLES[kind]}, context=context)
    assert info.value.field == f"trigger.{kind}[0].{field}"
    assert "no key-value store named 'shraed'" in str(info.value)
    assert "[key-value.shraed]" in str(info.value)


# Every built-in kind, on broker addresses nothing listens at: a check opens no connection.
_EVERY_KIND = """
[application]
name = "checked"
[key-value.default]
path = "kv.sqlite"
[brokers.k]
kind = "kafka"
url = "kafka://127.0.0.1:1"
[brokers.n]
kind = "nats"
url = "nats://127.0.0.1:1"
[brokers.a]
kind = "amqp"
url = "amqp://guest:guest@127.0.0.1:1/"
[brokers.r]
kind = "redis"
url = "redis://127.0.0.1:1"
[component.c]
source = "x.wasm"
[[trigger.cron]]
component = "c"
schedule = "* * * * * *"
[[trigger.http]]
component = "c"
route = "/x"
[[trigger.kafka]]
component = "c"
broker = "k"
topics = ["t"]
group = "g"
[[trigger.nats]]
component = "c"
broker = "n"
subject = "s"
[[trigger.nats-jetstream]]
component = "c"
broker = "n"
stream = "S"
consumer = "C"
[[trigger.amqp]]
component = "c"
broker = "a"
queue = "q"
[[trigger.redis]]
component = "c"
broker = "r"
channels = ["ch"]
[[trigger.redis-streams]]
component = "c"
broker = "r"
stream = "st"
group = "g"
"""


def test_checking_a_manifest_starts_nothing_and_logs_no_stop(tmp_path: Path) -> None:
    # `wasmgate build` checks the manifest by building every trigger; it logged "cron
    # trigger stopped" (runs 0), six more "... stopped" lines and NATS close errors.
    (tmp_path / "x.wasm").write_bytes(b"\0asm")
    (tmp_path / "wasmgate.toml").write_text(_EVERY_KIND)
    with capture_logs() as logs:
        check_manifest(tmp_path / "wasmgate.toml")
    assert [entry["event"] for entry in logs] == []
