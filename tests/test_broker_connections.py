"""gateway.brokers: one connection module per broker kind, checked at load."""

from __future__ import annotations

import pytest

from gateway import brokers
from gateway.brokers.kafka import client_options
from gateway.brokers.nats import connect_options
from gateway.errors import ConfigError
from gateway.manifest import BrokerSpec, TlsSpec

URLS = {"kafka": "kafka://h:9092", "nats": "nats://h:4222", "amqp": "amqp://h:5672/",
        "redis": "redis://h:6379/0"}


@pytest.mark.parametrize("kind", sorted(URLS))
def test_a_missing_ca_file_is_a_config_error_naming_the_field_for_every_broker(
        kind: str) -> None:
    spec = BrokerSpec(kind=kind, url=URLS[kind],  # type: ignore[arg-type]
                      tls=TlsSpec(ca_file="/nonexistent/ca.pem"))
    with pytest.raises(ConfigError) as caught:
        brokers.check({"b": spec}, path="wasmgate.toml")
    message = str(caught.value)
    assert message.startswith("wasmgate.toml: at `brokers.b.tls.ca-file`: ")
    assert "/nonexistent/ca.pem" in message


@pytest.mark.parametrize(("kind", "url"), [("kafka", "http://h:9092"), ("nats", "h:4222"),
                                           ("amqp", "http://h/"), ("redis", "h:6379")])
def test_a_url_in_the_wrong_form_names_the_url_field(kind: str, url: str) -> None:
    spec = BrokerSpec(kind=kind, url=url)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"at `brokers\.b\.url`"):
        brokers.check({"b": spec})


def test_kafka_options_carry_sasl_mechanism_and_every_bootstrap_server() -> None:
    spec = BrokerSpec(kind="kafka", url="kafka://a:9092,b:9093?sasl-mechanism=scram-sha-512",
                      username="u", password="p")
    options = client_options("b", spec)
    assert options["bootstrap_servers"] == ["a:9092", "b:9093"]
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert options["security_protocol"] == "SASL_PLAINTEXT"


def test_nats_options_split_a_server_list() -> None:
    spec = BrokerSpec(kind="nats", url="nats://a:4222, nats://b:4222", username="u")
    options = connect_options("b", spec)
    assert options["servers"] == ["nats://a:4222", "nats://b:4222"]
    assert (options["user"], options["password"]) == ("u", "")
