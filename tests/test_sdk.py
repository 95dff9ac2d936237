"""The guest SDK (bindings/sdk/wasmgate_sdk.py) inside a real componentize-py component,
called through the executor: JSON in and out, headers, metadata, kv/config/log wrappers and
the exception -> status / err mapping.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest

from bindings.host.imports import HostImports
from bindings.host.kv import SqliteKeyValue
from bindings.types import Event
from gateway.engine import WasmEngine
from gateway.errors import HandlerReturnedError
from gateway.executor import InstancePool
from gateway.manifest import ComponentSpec
from tests.fixtures.build import build_handler

pytestmark = pytest.mark.wasm


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WasmEngine]:
    eng = WasmEngine(tmp_path_factory.mktemp("cache"))
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def pool(engine: WasmEngine, tmp_path_factory: pytest.TempPathFactory) -> InstancePool:
    wasm = build_handler("sdk")
    spec = msgspec.convert({"source": str(wasm)}, ComponentSpec)
    kv = SqliteKeyValue(tmp_path_factory.mktemp("kv") / "kv.sqlite")
    host = HostImports("sdk", {"default": kv}, {"greeting": "hallo"})
    return InstancePool("sdk", spec, engine, engine.load_component(wasm), host)


def _ev(mode: str, data: bytes = b"", **fields: Any) -> Event:
    return Event(id="ev-1", source="test", type="t", subject=f"/sdk/{mode}", data=data, **fields)


async def test_json_in_json_out(pool: InstancePool) -> None:
    response = await pool.call(_ev("json", b'{"name": "Ada"}', content_type="application/json"))
    assert response.status == 201
    assert ("content-type", "application/json") in response.headers
    assert json.loads(response.body) == {"hello": "Ada", "attempt": 1}


async def test_request_exposes_headers_case_insensitively_and_metadata(pool: InstancePool) -> None:
    event = _ev("request", "grüße".encode(), key=b"k-7",
                headers=[("Content-Type", "text/plain"), ("x-tag", "a"), ("X-TAG", "b")],
                metadata=[("method", "POST"), ("path", "/sdk/request"),
                          ("query", "a=1&b=two%20words&a=3"), ("partition", "4"),
                          ("offset", "99"), ("attempt", "3")])
    response = await pool.call(event)
    assert response.status == 200
    assert ("X-Handler", "sdk") in response.headers
    assert json.loads(response.body) == {
        "method": "POST", "path": "/sdk/request", "query": {"a": "1", "b": "two words"},
        "content-type": "text/plain", "x-tag": ["a", "b"], "has-x-tag": True,
        "partition": 4, "offset": 99, "attempt": 3, "key": "k-7", "text": "grüße",
        "id": "ev-1", "type": "t", "source": "test",
    }


async def test_missing_metadata_reads_as_none_and_defaults(pool: InstancePool) -> None:
    body = json.loads((await pool.call(_ev("request"))).body)
    assert body["method"] is None
    assert body["query"] == {}
    assert body["partition"] is None
    assert body["attempt"] == 1


async def test_body_helpers(pool: InstancePool) -> None:
    text = await pool.call(_ev("text"))
    assert text.body == b"hallo / fallback"
    assert ("content-type", "text/plain; charset=utf-8") in text.headers
    binary = await pool.call(_ev("binary"))
    assert binary.body == bytes(range(256))
    assert binary.headers == [("content-type", "application/x-test")]
    empty = await pool.call(_ev("empty"))
    assert (empty.status, empty.body) == (204, b"")


async def test_invalid_json_is_a_400_not_a_retry(pool: InstancePool) -> None:
    response = await pool.call(_ev("json", b"{not json"))
    assert response.status == 400
    assert b"body is not valid JSON" in response.body


async def test_http_error_becomes_its_status(pool: InstancePool) -> None:
    response = await pool.call(_ev("not-found"))
    assert (response.status, response.body) == (404, b"no such thing\n")


async def test_retry_becomes_err_with_the_message(pool: InstancePool) -> None:
    with pytest.raises(HandlerReturnedError, match="database busy"):
        await pool.call(_ev("retry"))


async def test_unexpected_exception_is_err_and_its_traceback_is_logged(
        pool: InstancePool, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(HandlerReturnedError, match="KeyError: 'nope'"):
        await pool.call(_ev("crash"))
    # The host's guest logger was bound when the pool was made, so the line goes through
    # structlog's default (stdout) renderer rather than a capture set up in this test.
    logged = capsys.readouterr().out
    assert "handler handle failed: KeyError: 'nope'" in logged
    assert "Traceback" in logged
    assert "app.py" in logged
    assert "component=sdk" in logged
    # The pool recycles the failed instance and keeps serving.
    assert (await pool.call(_ev("empty"))).status == 204


async def test_returning_something_else_names_the_fix(pool: InstancePool) -> None:
    with pytest.raises(HandlerReturnedError, match=r"returned str; return a wasmgate_sdk.Response"):
        await pool.call(_ev("wrong-return"))


async def test_kv_wrappers(pool: InstancePool) -> None:
    first = json.loads((await pool.call(_ev("kv"))).body)
    second = json.loads((await pool.call(_ev("kv"))).body)
    assert first == {"n": 1, "last": {"n": 1}, "text": "héllo", "exists": True, "keys": ["last"]}
    assert second["n"] == 2


async def test_ungranted_store_raises_host_error_naming_the_fix(pool: InstancePool) -> None:
    response = await pool.call(_ev("forbidden"))
    assert response.status == 403
    assert b"kv exists secret/x" in response.body
    assert b"add it to `key-value-stores`" in response.body
