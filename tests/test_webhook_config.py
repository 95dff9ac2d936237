"""Bad webhook configuration fails at load with the file, the field and what to do."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from gateway.app import App
from gateway.check import check_manifest
from gateway.errors import ConfigError
from gateway.manifest import load_manifest
from gateway.webhooks.secrets import secret_resolver
from tests.fixtures.build import WAT_ECHO

_HEAD = """
[application]
name = "hooks"
secrets-file = "secrets.toml"

[variables]
gh-secret = { secret = true }
plain = { default = "x" }
inline = { secret = true, default = "oops" }
unset = { secret = true }

[brokers.events]
kind = "redis"
url = "redis://127.0.0.1:6379/0"

[brokers.bus]
kind = "nats"
url = "nats://127.0.0.1:4222"

[[trigger.http]]
route = "/ingest"
"""

_ENQUEUE = """
[trigger.http.enqueue]
broker = "events"
destination = "stream:hooks"
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _load(tmp_path: Path, webhook: str, enqueue: str = _ENQUEUE) -> App:
    (tmp_path / "secrets.toml").write_text('gh-secret = "s3cret-value"\n')
    (tmp_path / "wasmgate.toml").write_text(_HEAD + webhook + enqueue)
    return App.load(tmp_path / "wasmgate.toml", listen=f"127.0.0.1:{_free_port()}")


@pytest.mark.parametrize(("webhook", "field", "says"), [
    ('[trigger.http.webhook]\nscheme = "gitlab"\nsecrets = ["gh-secret"]\n',
     "trigger.http[0].webhook.scheme", 'unknown webhook scheme \'gitlab\'; known schemes: '
     '"github", "stripe", "standard-webhooks", "hmac-sha256"'),
    ('[trigger.http.webhook]\nscheme = "github"\nsecrets = []\n',
     "trigger.http[0].webhook.secrets", "no secret named"),
    ('[trigger.http.webhook]\nscheme = "github"\n',
     "trigger.http[0].webhook.secrets", "missing required field `secrets`"),
    ('[trigger.http.webhook]\nscheme = "github"\nsecrets = ["nope"]\n',
     "trigger.http[0].webhook.secrets[0]", "secret 'nope' is not declared"),
    ('[trigger.http.webhook]\nscheme = "github"\nsecrets = ["plain"]\n',
     "trigger.http[0].webhook.secrets[0]", "not marked `secret = true`"),
    ('[trigger.http.webhook]\nscheme = "github"\nsecrets = ["inline"]\n',
     "variables.inline.default", "never written in the manifest"),
    ('[trigger.http.webhook]\nscheme = "github"\nsecrets = ["unset"]\n',
     "trigger.http[0].webhook.secrets[0]",
     "secret 'unset' has no value; add `unset = \"...\"` to the secrets file 'secrets.toml'"),
    ('[trigger.http.webhook]\nscheme = "stripe"\nsecrets = ["gh-secret"]\ntolerance-s = 0\n',
     "trigger.http[0].webhook.tolerance-s", "must be more than 0 seconds"),
    ('[trigger.http.webhook]\nscheme = "hmac-sha256"\nsecrets = ["gh-secret"]\n',
     "trigger.http[0].webhook.header", "needs `header`"),
    ('[trigger.http.webhook]\nscheme = "standard-webhooks"\nsecrets = ["gh-secret"]\n',
     "trigger.http[0].webhook.secrets[0]", "`whsec_` followed by base64"),
    ('[trigger.http.webhook]\nscheme = "hmac-sha256"\nheader = "x-sig"\n'
     'secrets = ["gh-secret"]\n[trigger.http.webhook.idempotency]\n',
     "trigger.http[0].webhook.idempotency", "set `id-header`"),
    # Longer than a key-value TTL can be: every "done" was refused at run time (logged),
    # so every retry ran the handler again.
    ('[trigger.http.webhook]\nscheme = "github"\nsecrets = ["gh-secret"]\n'
     '[trigger.http.webhook.idempotency]\nwindow-s = 10000000000\n',
     "trigger.http[0].webhook.idempotency.window-s", "3153600000"),
    ('[trigger.http.webhook]\nscheme = "github"\nsecrets = ["gh-secret"]\nencoding = "hex"\n'
     'tolerance = 10\n', "trigger.http[0].webhook.tolerance",
     "unknown field `tolerance`; did you mean `tolerance-s`?"),
])
def test_bad_webhook_config_names_file_and_field(tmp_path: Path, webhook: str, field: str,
                                                 says: str) -> None:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, webhook)
    assert info.value.path == str(tmp_path / "wasmgate.toml")
    assert info.value.field == field
    assert says in str(info.value)
    assert "s3cret-value" not in str(info.value)


@pytest.mark.parametrize(("enqueue", "field", "says"), [
    ('[trigger.http.enqueue]\nbroker = "nope"\ndestination = "stream:x"\n',
     "trigger.http[0].enqueue.broker", "unknown broker 'nope'; declare it with [brokers.nope]"),
    ("", "trigger.http[0].component", "missing required field `component`"),
    ('component = "x"\n' + _ENQUEUE, "trigger.http[0].component",
     "unknown component 'x'"),
    # At-most-once destinations: a pub/sub channel or a core NATS subject with nobody
    # subscribed drops the message, yet the provider would get its 202 and never retry.
    ('[trigger.http.enqueue]\nbroker = "events"\ndestination = "hooks"\n',
     "trigger.http[0].enqueue.destination",
     "Redis pub/sub channel 'hooks' keeps no message"),
    ('[trigger.http.enqueue]\nbroker = "bus"\ndestination = "hooks.github"\n',
     "trigger.http[0].enqueue.destination",
     'write "js:hooks.github" to enqueue durably'),
])
def test_bad_enqueue_config(tmp_path: Path, enqueue: str, field: str, says: str) -> None:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, "", enqueue)
    assert info.value.field == field
    assert says in str(info.value)


def test_secret_from_the_environment_wins_over_the_file(tmp_path: Path) -> None:
    (tmp_path / "secrets.toml").write_text('gh-secret = "from-file"\n')
    (tmp_path / "wasmgate.toml").write_text(_HEAD + _ENQUEUE)
    manifest = load_manifest(tmp_path / "wasmgate.toml")
    resolve = secret_resolver(manifest, env={"WASMGATE_VAR_GH_SECRET": "from-env"})
    assert resolve("gh-secret", "f") == "from-env"
    assert secret_resolver(manifest, env={})("gh-secret", "f") == "from-file"


def test_a_json_delivery_id_is_a_string_or_an_integer_not_a_boolean() -> None:
    from gateway.webhooks.gate import DeliveryId

    by_field = DeliveryId(field=("data", "id"))
    assert by_field.find({}, b'{"data": {"id": "evt_1"}}') == "evt_1"
    assert by_field.find({}, b'{"data": {"id": 42}}') == "42"
    # true would be the id "True" for every such delivery: after the first, every other
    # one would be answered "already processed" and never run.
    assert by_field.find({}, b'{"data": {"id": true}}') is None
    assert by_field.find({}, b'{"data": {"id": 1.5}}') is None
    assert by_field.find({}, b"\xff not json") is None


_IDEMPOTENT = ('[trigger.http.webhook]\nscheme = "github"\nsecrets = ["gh-secret"]\n'
               '[trigger.http.webhook.idempotency]\nstore = "{store}"\n')


def _component(grant: str) -> str:
    return (f'\n[component.handler]\nsource = "{WAT_ECHO}"\n'
            f'key-value-stores = ["{grant}"]\n')


@pytest.mark.parametrize("check", ["load", "build"])
def test_a_component_granted_the_delivery_id_store_is_refused(tmp_path: Path,
                                                              check: str) -> None:
    """A handler granted the store could write `webhook:<route>:<id>`: mark a delivery done
    that never ran, or free one that is running, so it runs twice."""
    webhook = _IDEMPOTENT.format(store="default")
    with pytest.raises(ConfigError) as info:
        if check == "load":
            _load(tmp_path, webhook, _ENQUEUE + _component("default"))
        else:
            (tmp_path / "secrets.toml").write_text('gh-secret = "s3cret-value"\n')
            (tmp_path / "wasmgate.toml").write_text(
                _HEAD + webhook + _ENQUEUE + _component("default"))
            check_manifest(tmp_path / "wasmgate.toml")
    assert info.value.path == str(tmp_path / "wasmgate.toml")
    assert info.value.field == "trigger.http[0].webhook.idempotency.store"
    assert "`key-value-stores` of [component.handler] grants it" in str(info.value)


def test_a_delivery_id_store_no_component_is_granted_loads(tmp_path: Path) -> None:
    webhook = _IDEMPOTENT.format(store="deliveries")
    app = _load(tmp_path, "[key-value.deliveries]\n" + webhook,
                _ENQUEUE + _component("default"))
    asyncio.run(app.stop())


@pytest.mark.parametrize("check", ["load", "build"])
def test_an_unknown_delivery_id_store_names_the_field(tmp_path: Path, check: str) -> None:
    webhook = _IDEMPOTENT.format(store="nope")
    with pytest.raises(ConfigError) as info:
        if check == "load":
            _load(tmp_path, webhook)
        else:
            (tmp_path / "secrets.toml").write_text('gh-secret = "s3cret-value"\n')
            (tmp_path / "wasmgate.toml").write_text(_HEAD + webhook + _ENQUEUE)
            check_manifest(tmp_path / "wasmgate.toml")
    assert info.value.field == "trigger.http[0].webhook.idempotency.store"
    assert "no key-value store named 'nope'" in str(info.value)
