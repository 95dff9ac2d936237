"""Loading and validating wasmgate.toml."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from gateway.errors import ConfigError
from gateway.manifest import ComponentSpec, LoadedManifest, load_manifest
from gateway.variables import resolve_variables, secret_names

EXAMPLE = """
[application]
name = "demo"
version = "0.1.0"

[variables]
greeting = { default = "hello" }
token = { required = true, secret = true }

[key-value.default]
backend = "sqlite"
path = ".wasmgate/kv.sqlite"

[component.hello]
source = "build/hello.wasm"
key-value-stores = ["default"]
variables = { greeting = "hi" }

[component.hello.build]
command = "componentize-py -d ../../wit -w handler componentize app -o ../build/hello.wasm"
workdir = "handlers/hello"
watch = ["handlers/hello/*.py"]

[component.fresh-one]
source = "/abs/fresh.wasm"
isolation = "fresh"
max-instances = 2
fuel = 1000000

[[trigger.http]]
route = "/hello"
component = "hello"

[[trigger.cron]]
schedule = "*/5 * * * *"
component = "fresh-one"
"""


def write(tmp_path: Path, text: str, name: str = "wasmgate.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def load(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> LoadedManifest:
    return load_manifest(write(tmp_path, text), env=env or {})


MINIMAL = """
[application]
name = "demo"

[component.hello]
source = "build/hello.wasm"
"""


def test_example_parses_with_defaults(tmp_path: Path) -> None:
    m = load(tmp_path, EXAMPLE)
    assert m.path == tmp_path / "wasmgate.toml"
    assert m.root == tmp_path
    assert m.application.name == "demo"
    assert m.application.version == "0.1.0"
    assert m.application.description == ""

    hello = m.component("hello")
    assert isinstance(hello, ComponentSpec)
    assert hello.isolation == "pooled"
    assert hello.max_instances == 8
    assert hello.max_uses == 1000
    assert hello.memory_mb == 128
    assert hello.timeout_ms == 5000
    assert hello.fuel is None
    assert hello.admission_timeout_ms == 30_000
    assert hello.key_value_stores == ["default"]
    assert hello.build is not None
    assert hello.build.watch == ["handlers/hello/*.py"]

    fresh = m.components["fresh-one"]
    assert fresh.isolation == "fresh"
    assert fresh.max_instances == 2
    assert fresh.fuel == 1_000_000
    assert fresh.key_value_stores == []
    assert fresh.variables == {}
    assert fresh.build is None

    assert m.source_path("hello") == tmp_path / "build" / "hello.wasm"
    assert m.source_path("fresh-one") == Path("/abs/fresh.wasm")
    assert m.build_workdir("hello") == tmp_path / "handlers" / "hello"
    assert m.build_workdir("fresh-one") is None
    assert m.kv_path("default") == tmp_path / ".wasmgate" / "kv.sqlite"

    # trigger tables stay raw
    assert m.triggers["http"] == [{"route": "/hello", "component": "hello"}]
    assert m.triggers["cron"][0]["schedule"] == "*/5 * * * *"


def test_directory_path_finds_wasmgate_toml(tmp_path: Path) -> None:
    write(tmp_path, MINIMAL)
    assert load_manifest(tmp_path, env={}).application.name == "demo"


def test_implicit_default_store(tmp_path: Path) -> None:
    m = load(tmp_path, MINIMAL + 'key-value-stores = ["default"]\n')
    assert set(m.key_value_stores) == {"default"}
    assert m.key_value_stores["default"].backend == "sqlite"
    assert m.kv_path("default") == tmp_path / ".wasmgate" / "default.sqlite"


def test_build_workdir_defaults_to_root(tmp_path: Path) -> None:
    m = load(tmp_path, MINIMAL + '[component.hello.build]\ncommand = "make"\n')
    assert m.build_workdir("hello") == tmp_path


def test_typo_suggests_closest_field(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + 'isolaton = "fresh"\n')
    with pytest.raises(ConfigError) as info:
        load_manifest(path, env={})
    message = str(info.value)
    assert str(path) in message
    assert "component.hello.isolaton" in message
    assert "did you mean `isolation`?" in message
    assert info.value.field == "component.hello.isolaton"
    assert info.value.path == str(path)


def test_typo_in_nested_build_table(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, MINIMAL + '[component.hello.build]\ncommand = "make"\nworkdri = "x"\n')
    assert info.value.field == "component.hello.build.workdri"
    assert "did you mean `workdir`?" in str(info.value)


def test_typo_in_top_level_section(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, MINIMAL + '[key-valu.default]\nbackend = "sqlite"\n')
    assert info.value.field == "key-valu"
    assert "did you mean `key-value`?" in str(info.value)


def test_wrong_type_and_range_name_the_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, MINIMAL + 'max-instances = 0\n')
    assert info.value.field == "component.hello.max-instances"
    assert ">= 1" in str(info.value)

    with pytest.raises(ConfigError) as info:
        load(tmp_path, MINIMAL + 'variables = { greeting = 3 }\n')
    assert info.value.field == "component.hello.variables.greeting"

    with pytest.raises(ConfigError) as info:
        load(tmp_path, MINIMAL + 'isolation = "shared"\n')
    assert info.value.field == "component.hello.isolation"

    with pytest.raises(ConfigError) as info:
        load(tmp_path, MINIMAL + '[key-value.cache]\nbackend = "memcached"\n')
    assert info.value.field == "key-value.cache.backend"

    with pytest.raises(ConfigError) as info:
        load(tmp_path, MINIMAL + '[key-value.cache]\nbackend = "redis"\n')
    assert info.value.field == "key-value.cache.url"
    assert "redis://" in str(info.value)

    with pytest.raises(ConfigError) as info:
        load(tmp_path, MINIMAL + '[sql.main]\nbackend = "postgres"\n')
    assert info.value.field == "sql.main.url"


def test_missing_required_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, '[application]\nname = "x"\n[component.hello]\nmemory-mb = 64\n')
    assert info.value.field == "component.hello.source"
    assert "missing required field `source`" in str(info.value)


def test_env_interpolation(tmp_path: Path) -> None:
    text = """
    [application]
    name = "${APP_NAME}"
    description = "costs $${PRICE} in ${CURRENCY:-EUR}"

    [component.hello]
    source = "${BUILD_DIR:-build}/hello.wasm"
    """
    m = load(tmp_path, text, env={"APP_NAME": "shop"})
    assert m.application.name == "shop"
    assert m.application.description == "costs ${PRICE} in EUR"
    assert m.components["hello"].source == "build/hello.wasm"

    m = load(tmp_path, text, env={"APP_NAME": "shop", "BUILD_DIR": "out", "CURRENCY": "USD"})
    assert m.components["hello"].source == "out/hello.wasm"
    assert m.application.description == "costs ${PRICE} in USD"


def test_env_interpolation_in_trigger_tables(tmp_path: Path) -> None:
    m = load(
        tmp_path,
        MINIMAL + '[[trigger.http]]\nroute = "/${ROUTE}"\ncomponent = "hello"\n',
        env={"ROUTE": "hi"},
    )
    assert m.triggers["http"][0]["route"] == "/hi"


def test_env_interpolation_missing_variable(tmp_path: Path) -> None:
    text = MINIMAL.replace("build/hello.wasm", "${BUILD_DIR}/hello.wasm")
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text, env={})
    message = str(info.value)
    assert "component.hello.source" in message
    assert "BUILD_DIR" in message
    assert "set it in the environment or give a default with ${VAR:-default}" in message


def test_env_interpolation_malformed(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="malformed"):
        load(tmp_path, MINIMAL.replace("build/hello.wasm", "${oops"), env={})


def test_trigger_unknown_component(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, MINIMAL + '[[trigger.http]]\nroute = "/x"\ncomponent = "helo"\n')
    message = str(info.value)
    assert "trigger.http[0].component" in message
    assert "'helo'" in message
    assert "`hello`" in message  # the known names


def test_trigger_without_component(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, MINIMAL + '[[trigger.http]]\nroute = "/x"\n')
    assert info.value.field == "trigger.http[0].component"


def test_unknown_kv_store_grant(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, MINIMAL + 'key-value-stores = ["cache"]\n')
    message = str(info.value)
    assert "component.hello.key-value-stores" in message
    assert "'cache'" in message
    assert "[key-value.cache]" in message


def test_declared_kv_store_grant(tmp_path: Path) -> None:
    m = load(tmp_path, MINIMAL + 'key-value-stores = ["cache"]\n[key-value.cache]\n')
    assert m.kv_path("cache") == tmp_path / ".wasmgate" / "cache.sqlite"
    assert set(m.key_value_stores) == {"cache", "default"}


def test_invalid_component_name(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, MINIMAL.replace("component.hello", "component.Hello_World"))
    assert info.value.field == "component.Hello_World"


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "wasmgate.toml"
    with pytest.raises(ConfigError) as info:
        load_manifest(missing)
    message = str(info.value)
    assert str(missing) in message
    assert "wasmgate up path/to/wasmgate.toml" in message


def test_toml_syntax_error_names_line(tmp_path: Path) -> None:
    path = write(tmp_path, '[application]\nname = "demo"\nversion = \n')
    with pytest.raises(ConfigError) as info:
        load_manifest(path, env={})
    message = str(info.value)
    assert str(path) in message
    assert "line 3" in message


def test_resolve_variables(tmp_path: Path) -> None:
    m = load(tmp_path, EXAMPLE)
    env = {"WASMGATE_VAR_TOKEN": "s3cret", "WASMGATE_VAR_GREETING": "hey"}
    # the component's own value wins over env and default
    assert resolve_variables(m, "hello", env) == {"greeting": "hi", "token": "s3cret"}
    # env wins over the default
    assert resolve_variables(m, "fresh-one", env) == {"greeting": "hey", "token": "s3cret"}
    assert resolve_variables(m, "fresh-one", {"WASMGATE_VAR_TOKEN": "t"}) == {
        "greeting": "hello",
        "token": "t",
    }
    assert secret_names(m) == {"token"}


def test_required_variable_missing_names_env_var(tmp_path: Path) -> None:
    m = load(tmp_path, EXAMPLE)
    with pytest.raises(ConfigError) as info:
        resolve_variables(m, "hello", {})
    message = str(info.value)
    assert "variables.token" in message
    assert "WASMGATE_VAR_TOKEN" in message


def test_resolve_variables_unknown_component(tmp_path: Path) -> None:
    m = load(tmp_path, EXAMPLE)
    with pytest.raises(ConfigError, match="no component named 'nope'"):
        resolve_variables(m, "nope", {})


def test_env_interpolation_nested_default(tmp_path: Path) -> None:
    # Once `${A:-${B}}` gave "alpha}" and `${UNSET:-${B}}` a literal "${B}".
    text = MINIMAL.replace('"build/hello.wasm"', '"${A:-${B}}/${UNSET:-${B}}/${C:-${D:-deep}}"')
    m = load(tmp_path, text, env={"A": "alpha", "B": "beta"})
    assert m.components["hello"].source == "alpha/beta/deep"
    # A default that is not needed is not looked up: `${A:-${UNSET}}` with A set is fine.
    text = MINIMAL.replace('"build/hello.wasm"', '"${A:-${UNSET}}.wasm"')
    assert load(tmp_path, text, env={"A": "a"}).components["hello"].source == "a.wasm"


def test_env_interpolation_nested_default_errors_name_the_field(tmp_path: Path) -> None:
    text = MINIMAL.replace('"build/hello.wasm"', '"${UNSET:-${ALSO_UNSET}}"')
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text, env={})
    assert str(tmp_path / "wasmgate.toml") in str(info.value)
    assert "component.hello.source" in str(info.value)
    assert "'ALSO_UNSET' is not set" in str(info.value)
    for broken in ("${A:-${B}", "${A:-x", "${A", "${A:-${B:-${C:-${D:-${E:-${F:-${G:-${H:-"
                   "${I:-x}}}}}}}}}"):
        with pytest.raises(ConfigError, match="malformed interpolation") as info:
            load(tmp_path, MINIMAL.replace('"build/hello.wasm"', f'"{broken}"'), env={})
        assert "component.hello.source" in str(info.value)


def test_spare_instances_apply_to_fresh_only_and_not_past_max_instances(tmp_path: Path) -> None:
    # 100000 spares made the gateway instantiate until its address space ran out (MemoryError
    # tracebacks, no request served); with pooled they were silently ignored.
    with pytest.raises(ConfigError) as info:
        load(tmp_path, MINIMAL + 'isolation = "fresh"\nspare-instances = 100000\n')
    assert info.value.field == "component.hello.spare-instances"
    assert "max-instances = 8" in str(info.value)

    with pytest.raises(ConfigError) as info:
        load(tmp_path, MINIMAL + "spare-instances = 2\n")
    assert info.value.field == "component.hello.spare-instances"
    assert 'isolation = "fresh"' in str(info.value)

    fine = load(tmp_path, MINIMAL + 'isolation = "fresh"\nmax-instances = 4\nspare-instances = 4\n')
    assert fine.components["hello"].spare_instances == 4
