"""JavaScript handlers (componentize-js) through the real App, dispatcher and executor.

The fixture is tests/fixtures/handlers-js/echo/app.js, built with the pinned toolchain in
bindings/js; the modes mirror the Python echo fixture so both guest languages meet the same
contract: binary data and headers round-trip, `err` is a returned error, a trap recycles the
instance, host imports work when granted and return error values when not.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from bindings.types import Event, new_event_id
from gateway.app import App
from gateway.dispatch import Outcome, Verdict
from gateway.errors import HandlerReturnedError
from tests.fixtures.build import build_js_handler

pytestmark = pytest.mark.wasm

MakeApp = Callable[..., Awaitable[App]]


@pytest.fixture(scope="module")
def js_echo_wasm() -> Path:
    return build_js_handler("echo")


@pytest.fixture
async def make_app(tmp_path: Path, js_echo_wasm: Path) -> AsyncIterator[MakeApp]:
    apps: list[App] = []

    async def make(component_extra: str = "") -> App:
        path = tmp_path / f"{uuid.uuid4().hex[:8]}.toml"
        path.write_text(f"""
[application]
name = "js-{uuid.uuid4().hex[:8]}"

[variables]
greeting = {{ default = "hallo" }}

[component.echo]
source = "{js_echo_wasm}"
key-value-stores = ["default"]
{component_extra}
""")
        app = App.load(path)
        apps.append(app)
        return app

    yield make
    for app in apps:
        await app.stop()


def _ev(subject: str, data: bytes = b"", **fields: object) -> Event:
    return Event(id=new_event_id(), source="test", type="t", subject=subject, data=data,
                 **fields)  # type: ignore[arg-type]


async def _dispatch(app: App, event: Event) -> Outcome:
    return await app.dispatcher.dispatch("echo", event)


async def test_echo_round_trips_binary_data_headers_and_options(make_app: MakeApp) -> None:
    app = await make_app()
    data = bytes(range(256))  # every byte value, including NUL and invalid UTF-8
    event = _ev("/hi", data, key=b"\x00\xff", content_type="application/octet-stream",
                headers=[("x-trace", "abc"), ("accept", "*/*")], time=1_732_456_789_012_345)
    response = await app.invoke("echo", event)
    assert response.status == 200
    assert response.body == b"echo:" + data
    assert response.headers == [
        ("x-subject", "/hi"), ("x-content-type", "application/octet-stream"),
        ("x-key", "0,255"), ("x-time", "1732456789012345"),
        ("x-echo-x-trace", "abc"), ("x-echo-accept", "*/*"),
    ]
    # option<...> none arrives in JS as undefined.
    bare = await app.invoke("echo", _ev("plain"))
    assert ("x-content-type", "<none>") in bare.headers
    assert ("x-key", "<none>") in bare.headers
    assert bare.body == b"echo:"


async def test_thrown_string_is_a_returned_error_and_a_500_outcome(make_app: MakeApp) -> None:
    app = await make_app()
    with pytest.raises(HandlerReturnedError, match="returned an error: handler said no"):
        await app.invoke("echo", _ev("err"))
    outcome = await _dispatch(app, _ev("err"))
    assert outcome.error_kind == "returned-error"
    assert outcome.status == 500
    assert outcome.verdict is Verdict.RETRY


@pytest.mark.parametrize("isolation", ["pooled", "fresh"])
async def test_trap_recycles_the_instance_and_the_next_call_works(
        make_app: MakeApp, isolation: str) -> None:
    app = await make_app(f'isolation = "{isolation}"\nmax-instances = 1')
    pool = app.pools["echo"]
    assert (await app.invoke("echo", _ev("count"))).body == b"1"
    before = pool.instantiated
    outcome = await _dispatch(app, _ev("trap"))
    assert outcome.error_kind == "trap"
    assert outcome.status == 500
    after = await app.invoke("echo", _ev("/again", b"x"))
    assert after.body == b"echo:x"
    # Pooled: the trap call reused the warm instance and the next call needed a new one,
    # so the trapped instance was dropped, not returned. Fresh: one instance per call.
    assert pool.instantiated == before + (1 if isolation == "pooled" else 2)
    # Host state lives outside the instance and survives the recycle.
    assert (await app.invoke("echo", _ev("count"))).body == b"2"


async def test_kv_increment_and_config_through_host_imports(make_app: MakeApp) -> None:
    app = await make_app()
    assert (await app.invoke("echo", _ev("peek"))).body == b"<none>"
    assert (await app.invoke("echo", _ev("count"))).body == b"1"
    assert (await app.invoke("echo", _ev("count"))).body == b"2"
    assert (await app.invoke("echo", _ev("peek"))).body == b"2"
    assert (await app.invoke("echo", _ev("config"))).body == b"hallo"


async def test_denied_grant_is_an_error_value_the_handler_can_catch(make_app: MakeApp) -> None:
    app = await make_app()
    response = await app.invoke("echo", _ev("forbidden"))
    assert response.status == 403
    assert b"no grant for key-value store `secret`" in response.body
    # The instance is fine afterwards: a refused host call is not a trap.
    assert (await app.invoke("echo", _ev("count"))).body == b"1"


async def test_status_from_the_handler_drives_the_verdict(make_app: MakeApp) -> None:
    app = await make_app()
    assert (await _dispatch(app, _ev("status", b"404"))).verdict is Verdict.DEAD_LETTER
    assert (await _dispatch(app, _ev("status", b"503"))).verdict is Verdict.RETRY
    assert (await _dispatch(app, _ev("status", b"204"))).verdict is Verdict.ACK


async def test_endless_loop_times_out_and_the_pool_keeps_serving(make_app: MakeApp) -> None:
    app = await make_app("timeout-ms = 300")
    outcome = await _dispatch(app, _ev("loop"))
    assert outcome.error_kind == "timeout"
    assert (await app.invoke("echo", _ev("/ok", b"y"))).body == b"echo:y"
