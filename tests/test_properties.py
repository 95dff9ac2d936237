"""Property tests of the two parsers a user feeds directly: the manifest loader and the
CloudEvents JSON reader of ``wasmgate invoke``.

Whatever the input, the outcome is one of two: it loads, or it fails with a WasmgateError whose
message names where (the manifest or secrets file, and the field). A raw ``ValueError``,
``OSError`` or ``sqlite3`` error escaping means a user sees a traceback instead of a fix.

The manifest strategy is structure-aware: it starts from a valid manifest that uses every
table and trigger kind (brokers on ports nothing listens on: loading connects to none), then
sets, deletes or adds keys at random depths, with values of any type, long strings, existing
directories, URLs without a scheme and interpolation syntax.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import io
import json
import logging
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
import structlog
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from bindings.types import Event, event_from_cloudevent_json
from gateway.app import App
from gateway.cli import main
from gateway.errors import WasmgateError
from tests.fixtures.build import WAT_ECHO

# A few hundred examples keep the suite fast; WASMGATE_FUZZ_EXAMPLES=10000 digs deeper.
_SETTINGS = settings(max_examples=int(os.environ.get("WASMGATE_FUZZ_EXAMPLES", "300")),
                     deadline=None, suppress_health_check=[HealthCheck.too_slow])

DIRECTORY = "<a directory>"  # replaced by an existing directory when the manifest is written

VALID: dict[str, Any] = {
    "application": {"name": "fuzz", "description": "property test"},
    "variables": {"greeting": {"default": "hi"},
                  "token": {"secret": True, "default": "tok-secret-1"}},
    "key-value": {"default": {"backend": "sqlite", "path": ".wasmgate/kv.sqlite"},
                  "cache": {"backend": "redis", "url": "redis://127.0.0.1:9/0"}},
    "sql": {"local": {"backend": "sqlite", "path": "data/app.db"},
            "pg": {"backend": "postgres", "url": "postgresql://app@127.0.0.1:9/app"}},
    "brokers": {"k": {"kind": "kafka", "url": "kafka://127.0.0.1:9"},
                "n": {"kind": "nats", "url": "nats://127.0.0.1:9"},
                "r": {"kind": "redis", "url": "redis://127.0.0.1:9/0"},
                "a": {"kind": "amqp", "url": "amqp://guest:guest@127.0.0.1:9/"}},
    "component": {"echo": {
        "source": str(WAT_ECHO), "key-value-stores": ["default", "cache"],
        "sql-databases": ["local", "pg"], "publish": ["n:orders.*"],
        "allowed-outbound-hosts": ["https://example.com"], "variables": {"greeting": "hey"},
    }},
    "trigger": {
        "http": [{"route": "/echo", "component": "echo"}],
        "cron": [{"schedule": "*/5 * * * *", "timezone": "UTC", "component": "echo",
                  "claim-store": "default"}],
        "kafka": [{"component": "echo", "broker": "k", "topics": ["t"]}],
        "nats": [{"component": "echo", "broker": "n", "subject": "s"}],
        "nats-jetstream": [{"component": "echo", "broker": "n", "stream": "S",
                            "consumer": "c"}],
        "redis": [{"component": "echo", "broker": "r", "channels": ["c"]}],
        "redis-streams": [{"component": "echo", "broker": "r", "stream": "s"}],
        "amqp": [{"component": "echo", "broker": "a", "queue": "q"}],
    },
}

_TRICKY_STRINGS = [
    "", " ", "x" * 256, "é" * 300, "a/" * 200, DIRECTORY, "/", ".", "..", "/dev/null",
    "127.0.0.1:6379", "localhost", "redis:/x", "://", "redis://", "postgresql://",
    "http://[::1", "nats://:99999", "amqp://h:port/", "kafka://", "*://*:*",
    "${UNSET}", "${A:-${B}}", "${UNSET:-${HOME}}", "$${", "${", "${A:-", "}",
    "Europe/Nowhere", "../../etc/passwd", "\x00", "UTC\n", "*/5 * * * *", "@yearly",
    "echo", "default", "n:orders.*", "n:", "kafka", "sqlite", "redis", "postgres", "\ud800",
]

# Text TOML can hold (a lone surrogate cannot be written in TOML at all; one case of it is
# enough, and it is in _TRICKY_STRINGS).
_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=30)
_leaf = st.one_of(
    st.sampled_from(_TRICKY_STRINGS),
    _text,
    st.integers(),
    st.integers(min_value=-2, max_value=2),
    st.booleans(),
    st.floats(),
)
_value = st.recursive(
    _leaf,
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.sampled_from(["component", "url", "path", "x", "source"])
                      | _text, inner, max_size=3),
    max_leaves=6,
)
# What the fuzzing that found the raw exceptions used: weighted up, so a few hundred
# examples meet them.
_HOSTILE = [DIRECTORY, "x" * 256, "127.0.0.1:6379", "Europe/" + "x" * 256, "", "/dev/null",
            "${A:-${B}}", "http://[::1"]
_string = st.sampled_from(_HOSTILE) | st.sampled_from(_TRICKY_STRINGS) | _text


def _replacement(old: Any) -> st.SearchStrategy[Any]:
    # Mostly a value of the same type, so more mutants get past the schema to the code that
    # opens files, parses URLs and timezones, where the raw exceptions were.
    if isinstance(old, str):
        return st.one_of(_string, _string, _value)
    if isinstance(old, bool):
        return st.booleans() | _value
    if isinstance(old, int):
        # Past u32, i32, u64 too: what the native side cannot hold must still name the field.
        return st.integers(-1, 2**64) | st.sampled_from([2**31, 2**32, 2**53, 2**63, 2**64]) \
            | _value
    return _value


_new_key = st.sampled_from(["url", "path", "source", "timezone", "secrets-file", "backend",
                            "kind", "route", "schedule", "broker", "workdir", "build",
                            "command", "claim-store", "tls", "ca-file", "prefix"]) \
    | _text.filter(bool)


def _places(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key and list index in ``node``, as paths from the root."""
    items = node.items() if isinstance(node, dict) else enumerate(node) \
        if isinstance(node, list) else ()
    out = []
    for key, child in items:
        out.append((*path, key))
        out += _places(child, (*path, key))
    return out


def _at(document: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        document = document[part]
    return document


def _mutate(data: st.DataObject, document: dict[str, Any]) -> None:
    """Set, delete or add one entry anywhere in ``document``, every place equally likely, so
    a value deep in a table (a component's `source`, a store's `path`) is as likely a target
    as a whole table."""
    places = _places(document)
    path = data.draw(st.sampled_from(places)) if places else ()
    *parents, key = path or ("application",)
    container: Any = document
    for part in parents:
        container = container[part]
    action = data.draw(st.sampled_from(["set", "set", "set", "delete", "add"]))
    if action == "add" and isinstance(container[key], dict):
        container[key][data.draw(_new_key)] = data.draw(_value)
    elif action == "delete" and isinstance(container, dict):
        del container[key]
    else:
        container[key] = data.draw(_replacement(container.get(key) if isinstance(
            container, dict) else container[key]))


def _toml_value(value: Any, directory: str) -> str:
    """``value`` in TOML's inline syntax (strings as JSON strings, which TOML accepts)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return repr(value) if math.isfinite(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, str):
        return json.dumps(directory if value == DIRECTORY else value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v, directory) for v in value) + "]"
    items = (f"{json.dumps(k)} = {_toml_value(v, directory)}" for k, v in value.items())
    return "{" + ", ".join(items) + "}"


def _toml(document: dict[str, Any], directory: str) -> str:
    return "".join(f"{json.dumps(k)} = {_toml_value(v, directory)}\n"
                   for k, v in document.items())


async def _load_and_release(path: Path) -> None:
    # As `wasmgate up` does it (inside the loop), minus starting the triggers; so the
    # triggers are not stopped either (a NATS trigger never started cannot be), only what
    # loading opened is released.
    app = App.load(path)
    for pool in app.pools.values():
        pool.close()
    await app.capabilities.close()
    app.engine.close()


def _assert_loads_or_names_where(path: Path) -> None:
    try:
        asyncio.run(_load_and_release(path))
    except WasmgateError as exc:
        event(type(exc).__name__)  # --hypothesis-show-statistics: how often each outcome
        assert str(path.parent) in str(exc), f"the error does not say where: {exc}"
        if "no key-value store named" in str(exc):  # a `claim-store` (it named no field)
            assert "at `trigger." in str(exc), f"the error does not name the field: {exc}"
    else:
        event("loaded")


def test_the_unmutated_manifest_loads(tmp_path: Path) -> None:
    path = tmp_path / "wasmgate.toml"
    path.write_text(_toml(VALID, str(tmp_path)))
    asyncio.run(_load_and_release(path))


@_SETTINGS
@given(data=st.data(), mutations=st.integers(1, 4))
def test_any_mutated_manifest_loads_or_names_where(data: st.DataObject, mutations: int) -> None:
    document = copy.deepcopy(VALID)
    for _ in range(mutations):
        _mutate(data, document)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "a-directory").mkdir()
        path = root / "wasmgate.toml"
        path.write_text(_toml(document, str(root / "a-directory")), encoding="utf-8")
        _assert_loads_or_names_where(path)


_LEAVES = [p for p in _places(VALID) if not isinstance(_at(VALID, p), dict | list)]


@_SETTINGS
@given(place=st.sampled_from(_LEAVES), value=st.sampled_from(_HOSTILE))
def test_one_hostile_value_anywhere_loads_or_names_where(place: tuple[Any, ...],
                                                         value: str) -> None:
    """The smaller space the raw exceptions lived in (one long name, directory or
    scheme-less URL in any one place), so a few hundred examples cover most of it."""
    document = copy.deepcopy(VALID)
    *parents, key = place
    _at(document, tuple(parents))[key] = value
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "a-directory").mkdir()
        path = root / "wasmgate.toml"
        path.write_text(_toml(document, str(root / "a-directory")), encoding="utf-8")
        _assert_loads_or_names_where(path)


@pytest.mark.parametrize(("table", "field", "value"), [
    ("key-value", "cache", {"backend": "redis", "url": "127.0.0.1:6379"}),
    ("brokers", "r", {"kind": "redis", "url": "127.0.0.1:6379"}),
    ("sql", "local", {"backend": "sqlite", "path": DIRECTORY}),
    ("key-value", "default", {"backend": "sqlite", "path": DIRECTORY}),
    ("component", "echo", {"source": DIRECTORY}),
    ("component", "echo", {"source": "x" * 256}),
])
def test_fuzzing_finds_are_config_errors_naming_the_field(tmp_path: Path, table: str,
                                                          field: str, value: Any) -> None:
    """The raw exceptions fuzzing found: each is now a ConfigError naming file and field."""
    document = copy.deepcopy(VALID)
    document[table][field] = value
    path = tmp_path / "wasmgate.toml"
    path.write_text(_toml(document, str(tmp_path)))
    with pytest.raises(WasmgateError) as info:
        asyncio.run(_load_and_release(path))
    assert str(path) in str(info.value)
    assert f"{table}.{field}" in str(info.value)


_ECHO = {"source": str(WAT_ECHO)}


@pytest.mark.parametrize(("place", "value", "field"), [
    # Integers past what the native executor, wasmtime or SQLite hold (OverflowError).
    (("component", "echo"), {**_ECHO, "fuel": 2**64}, "component.echo.fuel"),
    (("component", "echo"), {**_ECHO, "stderr-max-bytes": 2**64},
     "component.echo.stderr-max-bytes"),
    (("component", "echo"), {**_ECHO, "max-instances": 2**31},
     "component.echo.max-instances"),
    (("component", "echo"), {**_ECHO, "spare-instances": 2**31},
     "component.echo.spare-instances"),
    (("component", "echo"), {**_ECHO, "memory-mb": 2**53}, "component.echo.memory-mb"),
    (("sql", "local"), {"max-result-bytes": 2**31}, "sql.local.max-result-bytes"),
    # A NUL in the secrets file's name (ValueError).
    (("application", "secrets-file"), "a\x00b", "application.secrets-file"),
    # Broker URLs whose port or IPv6 host cannot parse (ValueError from yarl for AMQP; the
    # others loaded and failed only when the trigger connected).
    (("brokers", "a"), {"kind": "amqp", "url": "amqp://u:pw-in-url@h:99999/"},
     "brokers.a.url"),
    (("brokers", "a"), {"kind": "amqp", "url": "amqp://[::1/"}, "brokers.a.url"),
    (("brokers", "n"), {"kind": "nats", "url": "nats://h:4222,nats://h:99999"},
     "brokers.n.url"),
    (("brokers", "r"), {"kind": "redis", "url": "redis://h:port/0"}, "brokers.r.url"),
])
def test_values_past_what_the_host_can_hold_name_the_field(
        tmp_path: Path, place: tuple[str, str], value: Any, field: str) -> None:
    document = copy.deepcopy(VALID)
    document[place[0]][place[1]] = value
    path = tmp_path / "wasmgate.toml"
    path.write_text(_toml(document, str(tmp_path)))
    with pytest.raises(WasmgateError) as info:
        asyncio.run(_load_and_release(path))
    assert str(path) in str(info.value)
    assert field in str(info.value)
    assert "pw-in-url" not in str(info.value)


def test_the_largest_values_the_manifest_takes_load(tmp_path: Path) -> None:
    """At the bounds the schema allows, loading works (the engine's slot count, a u32
    product on the native side, is capped rather than overflowing)."""
    document = copy.deepcopy(VALID)
    document["component"]["echo"].update({
        # No spare-instances: they need isolation = "fresh" and at most max-instances,
        # and that many spares would really be instantiated.
        "max-instances": 2**31 - 1, "memory-mb": 2**44 - 1,
        "fuel": 2**63 - 1, "timeout-ms": 2**63 - 1, "stderr-max-bytes": 2**63 - 1})
    path = tmp_path / "wasmgate.toml"
    path.write_text(_toml(document, str(tmp_path)))
    asyncio.run(_load_and_release(path))


def test_a_url_without_its_scheme_does_not_show_its_password(tmp_path: Path) -> None:
    document = copy.deepcopy(VALID)
    document["brokers"]["a"]["url"] = "guest:hunter2-pw@127.0.0.1:5672/"
    path = tmp_path / "wasmgate.toml"
    path.write_text(_toml(document, str(tmp_path)))
    with pytest.raises(WasmgateError) as info:
        asyncio.run(_load_and_release(path))
    assert "brokers.a.url" in str(info.value)
    assert "hunter2" not in str(info.value) and "guest:***@127.0.0.1" in str(info.value)


def test_a_timezone_too_long_for_a_file_name_names_the_trigger_field(tmp_path: Path) -> None:
    document = copy.deepcopy(VALID)
    document["trigger"]["cron"][0]["timezone"] = "Europe/" + "x" * 256
    path = tmp_path / "wasmgate.toml"
    path.write_text(_toml(document, str(tmp_path)))
    with pytest.raises(WasmgateError) as info:
        asyncio.run(_load_and_release(path))
    assert "trigger.cron[0].timezone" in str(info.value)


# -- CloudEvents ---------------------------------------------------------------------------

_timestamps = st.one_of(
    st.datetimes().map(lambda d: d.isoformat()),
    st.datetimes().map(lambda d: d.isoformat() + "Z"),
    st.sampled_from(["1969-12-31T23:59:59Z", "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59Z",
                     "1970-01-01T00:00:00Z", "not a time", "", "2026-13-01T00:00:00Z"]),
    st.text(max_size=30),
)
_json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) \
    | st.text(max_size=20)
_json = st.recursive(_json_scalars, lambda inner: st.lists(inner, max_size=3)
                     | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=8)
_attributes = st.fixed_dictionaries({}, optional={
    "specversion": st.just("1.0") | _json, "id": st.text(max_size=20) | _json,
    "source": st.text(max_size=20) | _json, "type": st.text(max_size=20) | _json,
    "subject": st.text(max_size=20) | _json, "time": _timestamps | _json,
    "datacontenttype": st.text(max_size=20) | _json, "data": _json,
    "data_base64": st.text(max_size=20) | st.binary(max_size=20).map(
        lambda b: __import__("base64").b64encode(b).decode()) | _json,
    "key": st.text(max_size=20) | _json,
    "headers": st.dictionaries(st.text(max_size=8), st.text(max_size=8)) | _json,
    "metadata": st.dictionaries(st.text(max_size=8), st.text(max_size=8)) | _json,
})
_LONE_SURROGATE = '"\\ud800"'


@_SETTINGS
@given(attributes=_attributes, surrogate_in=st.sampled_from([None, "id", "key", "data"]))
def test_any_cloudevent_parses_or_is_an_invalid_event(attributes: dict[str, Any],
                                                      surrogate_in: str | None) -> None:
    raw = json.dumps(attributes)
    if surrogate_in is not None:  # json.dumps cannot produce one from a Python str
        raw = raw[:-1] + (", " if attributes else "") + f'"{surrogate_in}": {_LONE_SURROGATE}}}'
    try:
        event = event_from_cloudevent_json(raw.encode())
    except WasmgateError as exc:
        assert str(exc), "an InvalidEvent says what is wrong"
        return
    assert isinstance(event, Event)
    # What the WIT can carry: u64 time, UTF-8 strings.
    assert 0 <= event.time < 2**64
    for text in (event.id, event.source, event.type, event.subject, event.content_type or "",
                 *(k + v for k, v in [*event.headers, *event.metadata])):
        text.encode("utf-8")


@_SETTINGS
@given(raw=st.binary(max_size=200))
def test_any_bytes_parse_or_are_an_invalid_event(raw: bytes) -> None:
    with contextlib.suppress(WasmgateError):  # anything else fails the test
        event_from_cloudevent_json(raw)


def test_a_time_before_1970_is_refused_naming_time() -> None:
    from gateway.errors import InvalidEvent

    with pytest.raises(InvalidEvent, match="`time` '1969-12-31T23:59:59Z' is before 1970"):
        event_from_cloudevent_json(b'{"time": "1969-12-31T23:59:59Z"}')


@pytest.mark.parametrize("data", ["1e999", '{"a": -1e400}', "[123456789e999999]"])
def test_a_number_past_a_doubles_range_in_data_is_passed_on_as_written(data: str) -> None:
    """Valid JSON a double cannot hold: msgspec's decode raised a raw ValidationError
    (`wasmgate invoke` printed a traceback); the data is passed on as written."""
    event = event_from_cloudevent_json(f'{{"id": "1", "data": {data}}}'.encode())
    assert event.data == data.encode()
    assert event.content_type == "application/json"


def test_a_json_string_in_data_is_the_payload_itself() -> None:
    event = event_from_cloudevent_json(b'{"data": "caf\\u00e9 \\"q\\""}')
    assert event.data == 'café "q"'.encode()


# -- CloudEvents through `wasmgate invoke` ----------------------------------------------------

# What the fuzzing that found the raw exceptions met: an `attempt` Python's str.isdigit()
# takes and int() refuses (superscripts), or that int() refuses past 4300 digits, and bytes
# that are not UTF-8 inside a JSON string.
_ATTEMPTS = st.sampled_from(["²", "1²", "٣", "1" * 5000, "-1", "0", "3", " 2", ""]) | _text
_NOT_UTF8 = [b"\xff", b"\xc3", b"\xed\xa0\x80", b"a\x80b"]


@pytest.fixture(scope="module")
def invoke_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    manifest = tmp_path_factory.mktemp("invoke") / "wasmgate.toml"
    manifest.write_text(f'[application]\nname = "fuzz"\n'
                        f'[component.echo]\nsource = "{WAT_ECHO}"\n')
    return manifest


def _invoke_quietly(manifest: Path, event_file: Path) -> tuple[int, str]:
    """``wasmgate invoke echo`` on ``event_file``: its exit code and what it wrote."""
    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    err = io.StringIO()
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(["invoke", "echo", "--event", str(event_file),
                         "--manifest", str(manifest)])
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
        structlog.reset_defaults()
    return code, err.getvalue()


@settings(_SETTINGS, max_examples=max(20, _SETTINGS.max_examples // 5))
@given(attributes=_attributes, attempt=st.none() | _ATTEMPTS,
       not_utf8_in=st.sampled_from([None, "data", "id", "subject", "metadata", "key"]),
       not_utf8=st.sampled_from(_NOT_UTF8))
def test_any_cloudevent_through_invoke_answers_or_says_what_is_wrong(
        invoke_manifest: Path, attributes: dict[str, Any], attempt: str | None,
        not_utf8_in: str | None, not_utf8: bytes) -> None:
    """No raw exception: an answer (0), a handler failure (1) or an error naming what is
    wrong with the event (2), never a traceback."""
    if attempt is not None:
        attributes = {**attributes, "metadata": {"attempt": attempt}}
    raw = json.dumps(attributes).encode()
    if not_utf8_in is not None:  # json.dumps cannot write bytes that are not UTF-8
        value = b'{"attempt": "' + not_utf8 + b'"}' if not_utf8_in == "metadata" \
            else b'"x' + not_utf8 + b'"'
        raw = raw[:-1] + (b", " if attributes else b"") + \
            f'"{not_utf8_in}": '.encode() + value + b"}"
    with tempfile.TemporaryDirectory() as directory:
        event_file = Path(directory) / "event.json"
        event_file.write_bytes(raw)
        code, err = _invoke_quietly(invoke_manifest, event_file)
    assert code in (0, 1, 2), err
    assert "Traceback" not in err, err
    if code == 2:
        assert err.startswith("wasmgate: ") and str(event_file) in err, err


@pytest.mark.parametrize("raw", [
    b'{"metadata": {"attempt": "\xc2\xb2"}}',  # the superscript two
    b'{"metadata": {"attempt": "' + b"1" * 5000 + b'"}}',
    b'{"data": "caf\xff"}',
])
def test_cloudevents_the_fuzzing_found_answer_without_a_traceback(
        invoke_manifest: Path, tmp_path: Path, raw: bytes) -> None:
    event_file = tmp_path / "event.json"
    event_file.write_bytes(raw)
    code, err = _invoke_quietly(invoke_manifest, event_file)
    assert code in (0, 2), err
    if code == 2:
        assert "`data` is not valid UTF-8" in err, err


# -- SQLite: the linear-time string functions answer as SQLite's own -----------------------------

_SQL_TEXT = st.text(alphabet="ab\x00é€😀 ", max_size=12)
_SQL_ARG = st.one_of(st.none(), st.integers(-300, 300), st.sampled_from([0.5, 1e20, -2.0, 3.25]),
                     _SQL_TEXT, _SQL_TEXT.map(lambda s: s.encode()))
_SQL_CALLS = {"instr": 2, "replace": 3, "trim": 2, "ltrim": 2, "rtrim": 2}


def _sqlite_answer(conn: Any, function: str, args: list[Any]) -> Any:
    import sqlite3

    marks = ", ".join("?" * len(args))
    try:
        value = conn.execute(f"SELECT {function}({marks})", args).fetchone()[0]
    except sqlite3.Error as exc:
        return ("error", type(exc).__name__)
    return (type(value).__name__, value)


@_SETTINGS
@given(function=st.sampled_from(sorted(_SQL_CALLS)), data=st.data())
def test_sqlite_string_functions_answer_as_sqlite_does(function: str,
                                                        data: st.DataObject) -> None:
    """instr, replace and trim are replaced on a database's connection by linear-time
    versions (a 16 MB instr ran 12 s in one VM step): on any small input they give what
    SQLite's own give, type included (text, blobs as UTF-8, numbers, NULL)."""
    import sqlite3

    from bindings.host.sqlite_functions import SqliteFunctions

    args = [data.draw(_SQL_ARG) for _ in range(_SQL_CALLS[function])]
    builtin = sqlite3.connect(":memory:")
    ours = sqlite3.connect(":memory:")
    functions = SqliteFunctions(1_000_000)
    functions.install(ours)
    try:
        assert _sqlite_answer(ours, function, args) == _sqlite_answer(builtin, function, args)
    finally:
        builtin.close()
        ours.close()
        functions.close()


# Arguments that make one call of a string function long: 16 MB of text, a 40 KB needle
# that almost matches it, a 16 MB blob, a big count, 8 MB of a two-character cycle.
_BIG_ARGS = ["printf('%.*c', 16000000, 'a')", "(printf('%.*c', 40000, 'a') || 'b')",
             "(printf('%.*c', 40000, 'b') || 'a')", "zeroblob(16000000)", "16000000",
             "replace(printf('%.*c', 4000000, 'a'), 'a', 'ab')", "'%'", "'$.a'"]
# Functions left out: those that build values of a given size (randomblob, printf...)
# only take as long as the size, bounded by max-result-bytes; the refused ones fail at
# once; LIKE and GLOB are SQLite's own, bounded by their pattern length (docs/security.md
# states what is left over: about 2.5 s for one call on 16 MiB).
_SLOW_BY_DESIGN = {"randomblob", "zeroblob", "printf", "format", "like", "glob",
                   "load_extension", "readfile", "writefile", "edit", "fts3_tokenizer"}


def _sqlite_functions() -> list[tuple[str, int]]:
    import sqlite3

    with contextlib.closing(sqlite3.connect(":memory:")) as conn:
        rows = conn.execute("SELECT DISTINCT name, narg FROM pragma_function_list "
                            "WHERE type = 's'").fetchall()
    return sorted((name, min(max(narg, 1), 3)) for name, narg in rows
                  if name not in _SLOW_BY_DESIGN)


_BIG_CALLS = st.sampled_from(_sqlite_functions()).flatmap(
    lambda call: st.tuples(st.just(call[0]), st.lists(st.sampled_from(_BIG_ARGS),
                                                      min_size=call[1], max_size=call[1])))


@settings(max_examples=int(os.environ.get("WASMGATE_FUZZ_EXAMPLES", "300")) // 10,
          deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(call=_BIG_CALLS)
# The calls that took 12 s to minutes in one step before they were replaced.
@example(call=("instr", [_BIG_ARGS[0], _BIG_ARGS[1]]))
@example(call=("replace", [_BIG_ARGS[0], _BIG_ARGS[1], "'x'"]))
@example(call=("trim", [_BIG_ARGS[0], _BIG_ARGS[2]]))
def test_any_sqlite_function_call_ends_by_the_deadline(call: tuple[str, list[str]]) -> None:
    """Any built-in scalar function on the largest arguments a statement can build ends
    by the event's deadline (plus a generous margin for a loaded machine): no single VM
    step outlasts it."""
    import time

    from bindings.host.sql import SqlError, SqliteDatabase
    from gateway import deadline
    from gateway.errors import DeadlineExceeded

    name, args = call
    with tempfile.TemporaryDirectory() as tmp:
        db = SqliteDatabase("fuzz", Path(tmp) / "fuzz.db")
        try:
            started = time.monotonic()
            with deadline.deadline_after(0.3), contextlib.suppress(SqlError,
                                                                    DeadlineExceeded):
                db.query(f"SELECT length({name}({', '.join(args)}))", [])
            took = time.monotonic() - started
        finally:
            db.close()
    assert took < 0.3 + 1.5, f"{name}({', '.join(args)}) ran {took:.1f} s"
