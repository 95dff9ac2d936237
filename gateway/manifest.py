"""The ``wasmgate.toml`` manifest: its msgspec schema, loading and validation.

Example::

    [application]
    name = "demo"
    version = "0.1.0"

    [variables]
    greeting = { default = "hello" }
    token = { required = true, secret = true }      # from WASMGATE_VAR_TOKEN

    [key-value.default]
    backend = "sqlite"
    path = ".wasmgate/kv.sqlite"                    # relative to this file's directory

    [component.hello]
    source = "build/hello.wasm"
    isolation = "pooled"                            # or "fresh"
    max-instances = 8
    timeout-ms = 5000
    key-value-stores = ["default"]
    variables = { greeting = "hi" }

    [component.hello.build]
    command = "componentize-py -d ../../wit -w handler componentize app -o ../build/hello.wasm"
    workdir = "handlers/hello"
    watch = ["handlers/hello/*.py"]

    [[trigger.http]]
    route = "/hello"
    component = "hello"

Loading happens in three steps, each failing with a :class:`~gateway.errors.ConfigError`
that names the file and the field:

1. TOML parse.
2. ``${VAR}`` / ``${VAR:-default}`` interpolation of every string value from the
   environment (``$${`` is a literal ``${``; a default may nest: ``${A:-${B}}``).
3. Schema decode (unknown fields get a "did you mean" hint), then cross checks: trigger
   components exist, key-value grants name declared stores, component names are valid.

``[[trigger.<kind>]]`` tables stay raw here; each trigger adapter decodes its own.
Relative paths are resolved against the manifest's directory by :class:`LoadedManifest`.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import tomllib
import types
import typing
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from gateway.errors import ConfigError
from gateway.grants import parse_allowed_host, parse_publish_grant
from gateway.redaction import redact_url

MANIFEST_FILENAME = "wasmgate.toml"
DEFAULT_STORE = "default"

_COMPONENT_NAME = re.compile(r"^[a-z][a-z0-9-]*$")

# Upper bounds are what the native executor, wasmtime and SQLite can hold (u64, i32, bytes
# in a u64): past them, loading failed with a raw OverflowError instead of naming the field.
_U63 = 2**63 - 1
_I32 = 2**31 - 1
Positive = Annotated[int, msgspec.Meta(ge=1, le=_U63)]
NonNegative = Annotated[int, msgspec.Meta(ge=0, le=_U63)]
PositiveI32 = Annotated[int, msgspec.Meta(ge=1, le=_I32)]
NonNegativeI32 = Annotated[int, msgspec.Meta(ge=0, le=_I32)]
# Megabytes whose byte count fits a u64.
Megabytes = Annotated[int, msgspec.Meta(ge=1, le=2**44 - 1)]


class _Table(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, rename="kebab"):
    """Base of every manifest table: kebab-case keys, unknown keys rejected."""


class Application(_Table):
    """``[application]``."""

    name: str
    version: str | None = None
    description: str = ""
    # A TOML file of `name = "value"` pairs for variables marked `secret = true`, so secrets
    # need not sit in the environment. Relative to the manifest's directory.
    secrets_file: str | None = None
    # Size limit of the compile cache (gateway/cache.py); WASMGATE_CACHE_MAX_MB overrides it.
    compile_cache_max_mb: Positive | None = None


class VariableSpec(_Table):
    """One ``[variables]`` entry. Its value comes from ``WASMGATE_VAR_<NAME>`` or ``default``."""

    default: str | None = None
    required: bool = False
    secret: bool = False


class KeyValueStoreSpec(_Table):
    """``[key-value.<store>]``: SQLite (``path``, relative to the manifest's directory) or
    Redis (``url``; keys live under ``prefix``, default ``wasmgate:<app>:<store>:``)."""

    backend: Literal["sqlite", "redis"] = "sqlite"
    path: str | None = None  # sqlite; default: .wasmgate/<store>.sqlite
    url: str | None = None  # redis, e.g. redis://127.0.0.1:6379/0
    prefix: str | None = None  # redis
    # Limits (docs/security.md): one value, and the whole store (keys + values, bytes).
    max_value_bytes: Positive = 1024 * 1024
    max_total_bytes: Positive = 64 * 1024 * 1024


class SqlDatabaseSpec(_Table):
    """``[sql.<name>]``: SQLite (``path``) or PostgreSQL (``url``)."""

    backend: Literal["sqlite", "postgres"] = "sqlite"
    path: str | None = None  # sqlite; default: .wasmgate/<name>.db
    url: str | None = None  # postgres, e.g. postgresql://user:${PGPASSWORD}@127.0.0.1/app
    max_connections: Positive = 4
    # Limits on one query's result (docs/security.md); SQLite also refuses to build any
    # single value larger than max-result-bytes.
    max_rows: Positive = 10_000
    max_result_bytes: PositiveI32 = 16 * 1024 * 1024


BrokerKind = Literal["kafka", "nats", "amqp", "redis"]


class TlsSpec(_Table):
    """``[brokers.<name>.tls]``: verify the broker with ``ca-file``; present a client cert."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    insecure_skip_verify: bool = False


class BrokerSpec(_Table):
    """``[brokers.<name>]``: one broker connection, declared once and referenced by triggers
    (``broker = "<name>"``). Credentials come from the environment through ``${VAR}``.

    ``url`` is the client's own URL form: ``kafka://host:9092[,host2:9092]``,
    ``nats://host:4222``, ``amqp://host:5672/vhost``, ``redis://host:6379/0``.
    """

    kind: BrokerKind
    url: str
    username: str | None = None
    password: str | None = None
    tls: TlsSpec | None = None
    connect_timeout_ms: Positive = 5000
    # Reconnect backoff after a connection loss: exponential from min to max, forever.
    reconnect_min_ms: Positive = 100
    reconnect_max_ms: Positive = 5000


class BuildSpec(_Table):
    """``[component.<name>.build]``: how ``wasmgate build`` produces the component."""

    command: str
    workdir: str = "."
    watch: list[str] = msgspec.field(default_factory=list)
    # A build that hangs (a prompt, a lock, a network wait) must not hold `wasmgate build`
    # or `watch` forever; a cold componentize-py build takes about a minute on 2 cores.
    timeout_s: PositiveI32 = 600


class ComponentSpec(_Table):
    """``[component.<name>]``: one WebAssembly component and its limits and grants."""

    source: str
    isolation: Literal["pooled", "fresh"] = "pooled"
    max_instances: PositiveI32 = 8
    max_uses: Positive = 1000
    memory_mb: Megabytes = 128
    timeout_ms: Positive = 5000
    fuel: Positive | None = None
    admission_timeout_ms: NonNegative = 30_000
    # With isolation = "fresh": instances kept instantiated ahead of need, so an event does
    # not wait for instantiation (each holds memory; see docs/executor.md).
    spare_instances: NonNegativeI32 = 0
    # "inherit": what the guest writes to stderr (tracebacks, runtime errors) goes into the
    # gateway's log, one record a line with the component and event id; "discard" drops
    # it. Nothing else of the host is reachable either way.
    guest_stderr: Literal["inherit", "discard"] = "inherit"
    # Per call, stderr past this many bytes is counted, not logged.
    stderr_max_bytes: NonNegative = 16 * 1024
    # Per call, `log.emit` messages past this many bytes (UTF-8) are counted, not logged.
    log_emit_max_bytes: NonNegative = 64 * 1024
    key_value_stores: list[str] = msgspec.field(default_factory=list)
    variables: dict[str, str] = msgspec.field(default_factory=dict)
    # Deny by default, as in Spin: only what is listed here is reachable.
    sql_databases: list[str] = msgspec.field(default_factory=list)
    # "https://api.example.com", "http://127.0.0.1:8080", "https://*.example.com"; a missing
    # port means the scheme's default; "*://*:*" allows everything (say so in review).
    allowed_outbound_hosts: list[str] = msgspec.field(default_factory=list)
    outbound_timeout_ms: Positive = 10_000
    outbound_max_response_bytes: Positive = 10 * 1024 * 1024
    # What one response may carry (gateway/responses.py); more is answered 502, not sent.
    # The executor checks both as soon as it has lifted the response, before a byte of it
    # becomes a Python object. 16 MiB (body plus header names and values) is far above an
    # API reply and bounds the host memory one call can hold; 100 headers is ample.
    max_response_headers: Positive = 100
    max_response_bytes: Positive = 16 * 1024 * 1024
    # "<broker>:<destination pattern>", e.g. "events:orders.*". Matched per token like NATS:
    # `*` is exactly one non-empty token, `>` (last) one or more; tokens split at "." (Kafka,
    # NATS), ":" (Redis), "<exchange>/<word>.<word>" (AMQP). docs/capabilities.md#publish.
    publish: list[str] = msgspec.field(default_factory=list)
    # A `wasi:http/proxy` component receives broker and cron events as a CloudEvents POST
    # to this path (docs/wasi-http.md); HTTP requests keep their own path.
    http_path: str = "/"
    build: BuildSpec | None = None


class Manifest(_Table):
    """The whole ``wasmgate.toml`` document."""

    application: Application
    variables: dict[str, VariableSpec] = msgspec.field(default_factory=dict)
    key_value: dict[str, KeyValueStoreSpec] = msgspec.field(default_factory=dict)
    brokers: dict[str, BrokerSpec] = msgspec.field(default_factory=dict)
    sql: dict[str, SqlDatabaseSpec] = msgspec.field(default_factory=dict)
    component: dict[str, ComponentSpec] = msgspec.field(default_factory=dict)
    trigger: dict[str, list[dict[str, Any]]] = msgspec.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class LoadedManifest:
    """A decoded manifest plus where it came from; resolves relative paths against ``root``."""

    path: Path  # the manifest file (absolute)
    root: Path  # its directory
    spec: Manifest

    @property
    def application(self) -> Application:
        return self.spec.application

    @property
    def components(self) -> dict[str, ComponentSpec]:
        return self.spec.component

    @property
    def triggers(self) -> dict[str, list[dict[str, Any]]]:
        return self.spec.trigger

    def resolve(self, relative: str | Path) -> Path:
        """``relative`` resolved against the manifest's directory (absolute paths pass through)."""
        p = Path(relative).expanduser()
        return p if p.is_absolute() else self.root / p

    def component(self, name: str) -> ComponentSpec:
        """The component called ``name``, or a ConfigError listing the known names."""
        try:
            return self.spec.component[name]
        except KeyError:
            raise ConfigError(
                f"no component named {name!r}; known components: {_names(self.spec.component)}",
                path=str(self.path),
            ) from None

    def source_path(self, name: str) -> Path:
        """Absolute path of component ``name``'s ``.wasm`` file."""
        return self.resolve(self.component(name).source)

    def build_workdir(self, name: str) -> Path | None:
        """Absolute working directory of component ``name``'s build, or None without a build."""
        build = self.component(name).build
        return None if build is None else self.resolve(build.workdir)

    @property
    def brokers(self) -> dict[str, BrokerSpec]:
        return self.spec.brokers

    @property
    def key_value_stores(self) -> dict[str, KeyValueStoreSpec]:
        """Declared stores plus the implicit ``default`` sqlite store when not declared."""
        stores = dict(self.spec.key_value)
        stores.setdefault(DEFAULT_STORE, KeyValueStoreSpec())
        return stores

    def store_grants(self) -> dict[str, list[str]]:
        """Each key-value store's name -> the components granted it (`key-value-stores`)."""
        grants: dict[str, list[str]] = {}
        for name, component in self.spec.component.items():
            for store in component.key_value_stores:
                grants.setdefault(store, []).append(name)
        return grants

    def kv_path(self, store: str) -> Path:
        """Absolute path of ``store``'s SQLite file."""
        try:
            spec = self.key_value_stores[store]
        except KeyError:
            raise ConfigError(
                f"no key-value store named {store!r}; known stores: "
                f"{_names(self.key_value_stores)}",
                path=str(self.path),
            ) from None
        return self.resolve(spec.path or f".wasmgate/{store}.sqlite")

    def redis_prefix(self, store: str) -> str:
        """The key prefix of Redis store ``store``: its ``prefix``, or one of its own."""
        return (self.key_value_stores[store].prefix
                or f"wasmgate:{self.application.name}:{store}:")

    @property
    def sql_databases(self) -> dict[str, SqlDatabaseSpec]:
        return self.spec.sql

    def sql_path(self, name: str) -> Path:
        """Absolute path of SQLite database ``name``."""
        return self.resolve(self.spec.sql[name].path or f".wasmgate/{name}.db")


# --------------------------------------------------------------------------------------------
# loading


def load_manifest(path: str | Path, env: Mapping[str, str] | None = None) -> LoadedManifest:
    """Read, interpolate, decode and cross-check a manifest.

    ``path`` may also be a directory holding a ``wasmgate.toml``. ``env`` (default
    ``os.environ``) feeds ``${VAR}`` interpolation. Every failure is a ConfigError naming
    the file and, where there is one, the field.
    """
    file = Path(path).expanduser()
    if file.is_dir():
        file = file / MANIFEST_FILENAME
    file = file.absolute()
    where = str(file)
    if not file.is_file():
        raise ConfigError(
            "manifest not found; run from the app's directory or pass the manifest's path: "
            "`wasmgate up path/to/wasmgate.toml`",
            path=where,
        )
    try:
        text = file.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not valid UTF-8 ({exc})", path=where) from exc
    except OSError as exc:
        raise ConfigError(f"cannot read manifest: {exc.strerror or exc}", path=where) from exc
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # tomllib's message already says "(at line N, column M)".
        raise ConfigError(f"invalid TOML: {exc}", path=where) from exc

    document = _interpolate(raw, "", os.environ if env is None else env, where)
    spec = _decode(document, where)
    _cross_check(spec, where)
    loaded = LoadedManifest(path=file, root=file.parent, spec=spec)
    _check_stores_apart(loaded)
    return loaded


def _check_stores_apart(manifest: LoadedManifest) -> None:
    """No two stores or databases share their data: a grant of one would reach the other.

    A Redis store whose key prefix starts with another's (``a`` and ``a:b`` under the
    default prefixes) has its keys inside that store's: a component granted ``a`` read and
    deleted ``a:b``'s keys as ``b:<key>``. Two SQLite stores or databases on one file
    likewise (a SQL grant on the key-value store's file reads it as a table).
    """
    where = str(manifest.path)
    prefixes = {name: manifest.redis_prefix(name)
                for name, spec in manifest.key_value_stores.items() if spec.backend == "redis"}
    for inner, inner_prefix in prefixes.items():
        for outer, outer_prefix in prefixes.items():
            if outer != inner and inner_prefix.startswith(outer_prefix):
                raise ConfigError(
                    f"the keys of key-value store `{inner}` (prefix {inner_prefix!r}) lie "
                    f"inside those of `{outer}` (prefix {outer_prefix!r}): a component "
                    f"granted `{outer}` would reach them; give `{inner}` a `prefix` of its own"
                    + (" or a name without ':'" if ":" in inner else ""),
                    path=where, field=f"key-value.{inner}.prefix")
    files: dict[str, str] = {}
    sqlite = [(f"key-value.{name}", manifest.kv_path(name))
              for name, spec in manifest.key_value_stores.items() if spec.backend == "sqlite"]
    sqlite += [(f"sql.{name}", manifest.sql_path(name))
               for name, spec in manifest.sql_databases.items() if spec.backend == "sqlite"]
    for table, file in sqlite:
        try:
            key = str(file.resolve())
        except (OSError, ValueError, RuntimeError):
            continue  # opening it fails later with an error naming the field
        if key in files:
            raise ConfigError(
                f"[{table}] and [{files[key]}] are the same SQLite file {key!r}: a grant of "
                f"one would reach the other's data; give [{table}] a `path` of its own",
                path=where, field=f"{table}.path")
        files[key] = table


# --------------------------------------------------------------------------------------------
# interpolation

def _interpolate(value: Any, field: str, env: Mapping[str, str], where: str) -> Any:
    """Copy of ``value`` with ``${VAR}`` / ``${VAR:-default}`` replaced in every string."""
    if isinstance(value, str):
        return _interpolate_str(value, field, env, where)
    if isinstance(value, dict):
        return {
            k: _interpolate(v, _join(field, k), env, where) for k, v in value.items()
        }
    if isinstance(value, list):
        return [_interpolate(v, f"{field}[{i}]", env, where) for i, v in enumerate(value)]
    return value


_VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# `${A:-${B:-${C}}}` is fine; a default nested deeper than this is surely a mistake, and the
# bound keeps a pathological value from exhausting the parser's recursion.
_MAX_NESTING = 8


def _interpolate_str(text: str, field: str, env: Mapping[str, str], where: str) -> str:
    if "${" not in text:
        return text
    return _Interpolation(text, field, env, where).expand()


# A parsed value: literal text, or a reference `(name, default parts or None)`.
_Reference = tuple[str, "list[_Part] | None"]
_Part = str | _Reference


class _Interpolation:
    """A recursive-descent parser for one string value::

        text      := (literal | "$${" | reference)*
        reference := "${" NAME "}" | "${" NAME ":-" text "}"

    A default may itself hold references (``${A:-${B}}``). The whole value is parsed before
    anything is looked up, so a syntax error is reported as one; a default is only looked
    up when it is used, so ``${A:-${B}}`` with ``A`` set does not need ``B``.
    """

    def __init__(self, text: str, field: str, env: Mapping[str, str], where: str) -> None:
        self.text, self.field, self.env, self.where = text, field, env, where

    def expand(self) -> str:
        parts, _ = self._parse(0, depth=0)
        return self._evaluate(parts)

    def _error(self, message: str) -> ConfigError:
        return ConfigError(message, path=self.where, field=self.field)

    def _malformed(self, detail: str) -> ConfigError:
        return self._error(
            f"malformed interpolation in {self.text!r}: {detail}; write ${{VAR}} or "
            "${VAR:-default} (a default may hold ${OTHER}), or $${ for a literal ${")

    def _parse(self, i: int, *, depth: int) -> tuple[list[_Part], int]:
        """Parts from ``i`` to the end, or (inside a default) to its closing ``}``; returns
        them and the index of that ``}`` (or the end)."""
        text = self.text
        parts: list[_Part] = []
        literal: list[str] = []
        while i < len(text):
            if text.startswith("$${", i):
                literal.append("${")
                i += 3
            elif text.startswith("${", i):
                parts.append("".join(literal))
                literal = []
                reference, i = self._reference(i + 2, depth=depth)
                parts.append(reference)
            elif depth and text[i] == "}":
                parts.append("".join(literal))
                return parts, i
            else:
                literal.append(text[i])
                i += 1
        if depth:
            raise self._malformed("a default is missing its closing `}`")
        parts.append("".join(literal))
        return parts, i

    def _reference(self, i: int, *, depth: int) -> tuple[_Reference, int]:
        """The reference whose name starts at ``i``, and the index after its ``}``."""
        match = _VARIABLE_NAME.match(self.text, i)
        if match is None:
            raise self._malformed("`${` must be followed by a variable name")
        name, i = match.group(), match.end()
        if self.text.startswith("}", i):
            return (name, None), i + 1
        if not self.text.startswith(":-", i):
            raise self._malformed(f"expected `}}` or `:-` after `${{{name}`")
        if depth >= _MAX_NESTING:
            raise self._malformed(f"defaults nested more than {_MAX_NESTING} deep")
        default, i = self._parse(i + 2, depth=depth + 1)
        return (name, default), i + 1

    def _evaluate(self, parts: list[_Part]) -> str:
        out: list[str] = []
        for part in parts:
            if isinstance(part, str):
                out.append(part)
                continue
            name, default = part
            current = self.env.get(name)
            if current is not None and (current != "" or default is None):
                out.append(current)
            elif default is not None:
                out.append(self._evaluate(default))
            else:
                raise self._error(
                    f"environment variable {name!r} is not set; set it in the environment or "
                    "give a default with ${VAR:-default}")
        return "".join(out)


# --------------------------------------------------------------------------------------------
# schema decode with precise error paths

_AT = " - at `"
_SEGMENT = re.compile(r"\.(?P<field>[^.\[`]+)|\[(?P<index>\d+)\]|(?P<key>\[\.\.\.\])")
_UNKNOWN = re.compile(r"^Object contains unknown field `(?P<name>.*)`$")
_MISSING = re.compile(r"^Object missing required field `(?P<name>.*)`$")


def _decode(document: dict[str, Any], where: str) -> Manifest:
    try:
        return msgspec.convert(document, Manifest)
    except msgspec.ValidationError as exc:
        raise _config_error(document, exc, where) from exc


def _config_error(document: Any, exc: msgspec.ValidationError, where: str) -> ConfigError:
    return schema_error(document, Manifest, exc, path=where)


def schema_error(document: Any, schema: Any, exc: msgspec.ValidationError, *, path: str,
                 field: str = "") -> ConfigError:
    """The ConfigError for ``exc``, raised converting ``document`` to ``schema``: the field
    path written from ``field`` on (a trigger table's ``trigger.cron[0]``), an unknown field
    with "did you mean" and the known fields. Trigger adapters decode their tables with it."""
    where = path
    parts, message, tp = _locate(document, schema, exc)

    def _render(names: list[str]) -> str:  # below ``field``, which is written as given
        tail = _render_parts(names)
        return f"{field}.{tail}" if field and tail else field or tail

    if m := _UNKNOWN.match(message):
        name = m.group("name")
        known = _field_names(tp)
        text = f"unknown field `{name}`"
        close = difflib.get_close_matches(name, known, n=1)
        if close:
            text += f"; did you mean `{close[0]}`?"
        if known:
            text += f" (known fields: {', '.join(known)})"
        return ConfigError(text, path=where, field=_render([*parts, name]))
    if m := _MISSING.match(message):
        name = m.group("name")
        return ConfigError(
            f"missing required field `{name}`", path=where, field=_render([*parts, name])
        )
    for pattern, meaning in _PATTERN_MEANINGS.items():
        message = message.replace(f"matching regex {pattern!r}", meaning)
    return ConfigError(message, path=where, field=_render(parts) or None)


# What a schema's regex constraints mean, for the messages a user reads.
_PATTERN_MEANINGS = {
    r"^/\S*$": "that is a URL path: starting with `/`, without spaces (e.g. \"/events\")",
}


def _locate(raw: Any, tp: Any, exc: msgspec.ValidationError) -> tuple[list[str], str, Any]:
    """Turn msgspec's ``$.component[...].x`` into ``["component", "hello", "x"]``.

    msgspec does not name the dict key that failed, so at each ``[...]`` the entries are
    converted one by one to find it. Returns (path parts, bare message, type at the path).
    """
    message, _, location = str(exc).partition(_AT)
    location = location.rstrip("`").removeprefix("$")
    parts: list[str] = []
    for seg in _SEGMENT.finditer(location):
        tp = _unwrap(tp)
        if seg.group("field") is not None:
            name = seg.group("field")
            parts.append(name)
            tp = _field_type(tp, name)
            raw = raw.get(name) if isinstance(raw, dict) else None
        elif seg.group("index") is not None:
            index = int(seg.group("index"))
            parts.append(f"[{index}]")
            tp = _item_type(tp, list)
            raw = raw[index] if isinstance(raw, list) and index < len(raw) else None
        else:
            value_tp = _item_type(tp, dict)
            if isinstance(raw, dict) and value_tp is not None:
                for key, value in raw.items():
                    try:
                        msgspec.convert(value, value_tp)
                    except msgspec.ValidationError as inner:
                        sub_parts, sub_message, sub_tp = _locate(value, value_tp, inner)
                        return [*parts, str(key), *sub_parts], sub_message, sub_tp
            parts.append("[...]")  # could not pin the key down; keep msgspec's marker
            tp, raw = value_tp, None
    return parts, message, _unwrap(tp)


def _unwrap(tp: Any) -> Any:
    """Strip ``Annotated`` and ``X | None`` down to ``X``."""
    while typing.get_origin(tp) is Annotated:
        tp = typing.get_args(tp)[0]
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        options = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(options) == 1:
            return _unwrap(options[0])
    return tp


def _field_type(tp: Any, encode_name: str) -> Any:
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        for f in msgspec.structs.fields(tp):
            if f.encode_name == encode_name:
                return f.type
    return None


def _item_type(tp: Any, container: type) -> Any:
    if typing.get_origin(tp) is container:
        args = typing.get_args(tp)
        return args[-1] if args else None
    return None


def _field_names(tp: Any) -> list[str]:
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        return [f.encode_name for f in msgspec.structs.fields(tp)]
    return []


_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _join(field: str, key: str) -> str:
    rendered = key if _BARE_KEY.match(key) else f'"{key}"'
    return f"{field}.{rendered}" if field else rendered


def _render_parts(parts: list[str]) -> str:
    out = ""
    for part in parts:
        out = out + part if part.startswith("[") else _join(out, part)
    return out


# --------------------------------------------------------------------------------------------
# cross checks


def _names(mapping: Mapping[str, Any]) -> str:
    return ", ".join(f"`{n}`" for n in sorted(mapping)) or "(none)"


# The URL schemes each client accepts; anything else fails later, inside the client, with
# an error that names neither the file nor the field (redis-py: a bare ValueError).
_URL_SCHEMES: Mapping[str, tuple[str, ...]] = {
    "kafka": ("kafka",), "nats": ("nats", "tls", "ws", "wss"), "amqp": ("amqp", "amqps"),
    "redis": ("redis", "rediss", "unix"),
}
_URL_EXAMPLES: Mapping[str, str] = {
    "kafka": "kafka://127.0.0.1:9092", "nats": "nats://127.0.0.1:4222",
    "amqp": "amqp://guest:guest@127.0.0.1:5672/", "redis": "redis://127.0.0.1:6379/0",
}


def _check_url(url: str, kind: str, where: str, field: str) -> None:
    shown = redact_url(url)  # a password interpolated from the environment stays out
    # NATS takes a comma-separated server list, each with its own scheme.
    for server in url.split(",") if kind == "nats" else [url]:
        scheme, sep, rest = server.strip().partition("://")
        if not sep or scheme.lower() not in _URL_SCHEMES[kind] or not rest:
            schemes = ", ".join(f"{s}://" for s in _URL_SCHEMES[kind])
            raise ConfigError(f"{shown!r} is not a {kind} URL: it must start with one of "
                              f"{schemes} (e.g. {_URL_EXAMPLES[kind]!r})",
                              path=where, field=field)
        if kind == "kafka":
            continue  # a server list of its own form, checked by gateway.brokers.kafka
        try:
            urllib.parse.urlsplit(server.strip()).port  # noqa: B018 - parsing is the check
        except ValueError as exc:
            # "Port out of range 0-65535", "Invalid IPv6 URL", a port that is not a number
            raise ConfigError(f"invalid {kind} URL {shown!r}: {exc} (e.g. "
                              f"{_URL_EXAMPLES[kind]!r})", path=where, field=field) from None


def _cross_check(spec: Manifest, where: str) -> None:
    for name, broker in spec.brokers.items():
        _check_url(broker.url, broker.kind, where, _join(_join("brokers", name), "url"))
    for store, kv in spec.key_value.items():
        if kv.backend == "redis" and not kv.url:
            raise ConfigError('a redis key-value store needs `url`, e.g. '
                              '"redis://127.0.0.1:6379/0"', path=where,
                              field=_join(_join("key-value", store), "url"))
        if kv.backend == "redis" and kv.url:
            _check_url(kv.url, "redis", where, _join(_join("key-value", store), "url"))
    for db, sql in spec.sql.items():
        if sql.backend == "postgres" and not sql.url:
            raise ConfigError('a postgres database needs `url`, e.g. '
                              '"postgresql://app@127.0.0.1:5432/app"', path=where,
                              field=_join(_join("sql", db), "url"))
    for name, component in spec.component.items():
        if not _COMPONENT_NAME.match(name):
            raise ConfigError(
                f"invalid component name {name!r}: use lowercase letters, digits and '-', "
                "starting with a letter (e.g. `hello-world`)",
                path=where,
                field=_join("component", name),
            )
        stores = set(spec.key_value) | {DEFAULT_STORE}
        for grant in component.key_value_stores:
            if grant not in stores:
                hint = difflib.get_close_matches(grant, sorted(stores), n=1)
                did_you_mean = f"did you mean `{hint[0]}`? " if hint else ""
                raise ConfigError(
                    f"key-value store {grant!r} is not declared; {did_you_mean}declare it with "
                    f"[key-value.{grant}] (known stores: {_names(dict.fromkeys(stores))})",
                    path=where,
                    field=_join(_join("component", name), "key-value-stores"),
                )

        if not component.http_path.startswith("/") or any(
                c.isspace() for c in component.http_path):
            raise ConfigError(
                f"`http-path` must be a URL path starting with '/' and without spaces, got "
                f"{component.http_path!r} (e.g. \"/events\")",
                path=where, field=_join(_join("component", name), "http-path"))

        _check_spares(name, component, where)
        _check_grants(spec, name, component, where)

    for kind, tables in spec.trigger.items():
        for index, table in enumerate(tables):
            _check_broker_reference(spec, kind, index, table, where)
            field = f"{_join('trigger', kind)}[{index}].component"
            target = table.get("component")
            if target is None and kind == "http" and "enqueue" in table:
                continue  # accept-and-enqueue: the broker's consumer runs the component
            if target is None:
                raise ConfigError(
                    "missing required field `component`: the name of a [component.<name>] "
                    f"table (known components: {_names(spec.component)})",
                    path=where,
                    field=field,
                )
            if not isinstance(target, str) or target not in spec.component:
                hint = (
                    difflib.get_close_matches(target, sorted(spec.component), n=1)
                    if isinstance(target, str)
                    else []
                )
                did_you_mean = f"; did you mean `{hint[0]}`?" if hint else ""
                raise ConfigError(
                    f"unknown component {target!r}{did_you_mean} "
                    f"(known components: {_names(spec.component)})",
                    path=where,
                    field=field,
                )


def _check_spares(name: str, component: ComponentSpec, where: str) -> None:
    """Spares are instances held ready for ``fresh`` events. At most ``max-instances`` events
    run at once, so spares past that only hold memory, and a large number made the pool
    instantiate until the process ran out of address space."""
    spares = component.spare_instances
    if not spares:
        return
    field = _join(_join("component", name), "spare-instances")
    if component.isolation != "fresh":
        raise ConfigError(
            f"`spare-instances` = {spares} applies to isolation = \"fresh\" only (pooled "
            "instances stay warm by themselves); remove it or set isolation = \"fresh\"",
            path=where, field=field)
    if spares > component.max_instances:
        raise ConfigError(
            f"`spare-instances` = {spares} is more than max-instances = "
            f"{component.max_instances}: at most that many events run at once, so more spares "
            "only hold memory; lower it, or raise `max-instances`",
            path=where, field=field)


def _check_grants(spec: Manifest, name: str, component: ComponentSpec, where: str) -> None:
    """sql, publish and outbound grants must name declared things in a valid form."""
    base = _join("component", name)
    for db in component.sql_databases:
        if db not in spec.sql:
            raise ConfigError(
                f"sql database {db!r} is not declared; declare it with [sql.{db}] "
                f"(known databases: {_names(spec.sql)})",
                path=where, field=_join(base, "sql-databases"))
    for grant in component.publish:
        broker, sep, pattern = grant.partition(":")
        if not sep or not pattern:
            raise ConfigError(
                f"publish grant {grant!r} must read `<broker>:<destination pattern>`, "
                'e.g. "events:orders.*"', path=where, field=_join(base, "publish"))
        if broker not in spec.brokers:
            raise ConfigError(
                f"publish grant {grant!r} names undeclared broker {broker!r}; declare it with "
                f"[brokers.{broker}] (known brokers: {_names(spec.brokers)})",
                path=where, field=_join(base, "publish"))
        try:
            parse_publish_grant(grant, spec.brokers[broker].kind)
        except ValueError as exc:
            raise ConfigError(str(exc), path=where, field=_join(base, "publish")) from None
    for allowed in component.allowed_outbound_hosts:
        try:
            parse_allowed_host(allowed)
        except ValueError as exc:
            raise ConfigError(str(exc), path=where,
                              field=_join(base, "allowed-outbound-hosts")) from None


def _check_broker_reference(spec: Manifest, kind: str, index: int, table: dict[str, Any],
                            where: str) -> None:
    """A trigger's ``broker = "<name>"`` must name a declared broker of a fitting kind."""
    if "broker" not in table:
        return
    field = f"{_join('trigger', kind)}[{index}].broker"
    name = table["broker"]
    if not isinstance(name, str) or name not in spec.brokers:
        hint = (difflib.get_close_matches(name, sorted(spec.brokers), n=1)
                if isinstance(name, str) else [])
        did_you_mean = f"did you mean `{hint[0]}`? " if hint else ""
        raise ConfigError(
            f"unknown broker {name!r}; {did_you_mean}declare it with [brokers.{name}] "
            f"(known brokers: {_names(spec.brokers)})",
            path=where, field=field,
        )
    broker_kind = spec.brokers[name].kind
    # `nats-jetstream` and `redis-streams` triggers use `nats` / `redis` brokers.
    if kind.split("-", 1)[0] != broker_kind:
        raise ConfigError(
            f"broker `{name}` is a {broker_kind} broker; a [[trigger.{kind}]] needs a "
            f"{kind.split('-', 1)[0]} broker",
            path=where, field=field,
        )


__all__ = [
    "DEFAULT_STORE",
    "MANIFEST_FILENAME",
    "Application",
    "BrokerSpec",
    "BuildSpec",
    "ComponentSpec",
    "KeyValueStoreSpec",
    "LoadedManifest",
    "Manifest",
    "SqlDatabaseSpec",
    "TlsSpec",
    "VariableSpec",
    "load_manifest",
    "schema_error",
]
