"""The CLI as a user meets it: invoke prints a response, bad manifests explain themselves."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.cli import main
from tests.fixtures.build import WAT_ECHO, build_handler


def _manifest(tmp_path: Path, component_table: str) -> Path:
    path = tmp_path / "wasmgate.toml"
    path.write_text(f'[application]\nname = "cli"\n\n[component.echo]\n{component_table}\n')
    return path


def test_invoke_prints_the_response(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = _manifest(tmp_path, f'source = "{build_handler("echo")}"')
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"specversion": "1.0", "id": "1", "source": "t", "type": "t",
                                 "subject": "hi", "data": "payload"}))
    code = main(["invoke", "echo", "--event", str(event), "--manifest", str(manifest)])
    out = capsys.readouterr().out
    assert code == 0
    assert "status: 200" in out
    assert "x-subject: hi" in out
    assert out.rstrip().endswith("echo:payload")


def test_typo_in_manifest_names_file_field_and_fix(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    manifest = _manifest(tmp_path, 'source = "x.wasm"\nisolaton = "fresh"')
    assert main(["up", str(manifest)]) == 2
    err = capsys.readouterr().err
    assert str(manifest) in err
    assert "component.echo.isolaton" in err
    assert "did you mean `isolation`" in err


def test_missing_component_file_says_to_build(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    manifest = _manifest(tmp_path, 'source = "build/missing.wasm"')
    assert main(["up", str(manifest)]) == 2
    err = capsys.readouterr().err
    assert "missing.wasm does not exist" in err
    assert "wasmgate build" in err


def test_not_a_component_is_a_clear_error(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "junk.wasm").write_bytes(b"\0asm junk")
    manifest = _manifest(tmp_path, 'source = "junk.wasm"')
    assert main(["up", str(manifest)]) == 2
    assert "is not a valid WebAssembly component" in capsys.readouterr().err


def test_bad_event_file_names_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = _manifest(tmp_path, f'source = "{build_handler("echo")}"')
    event = tmp_path / "event.json"
    event.write_text('{"subject": 42}')
    assert main(["invoke", "echo", "--event", str(event), "--manifest", str(manifest)]) == 2
    err = capsys.readouterr().err
    assert str(event) in err
    assert "$.subject" in err


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for command in ("up", "build", "invoke", "componentize", "new"):
        assert f"\n    {command} " in out, command
    for command in ("up", "build", "invoke", "componentize", "new"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert f"usage: wasmgate {command}" in capsys.readouterr().out


def test_failed_build_names_component_command_and_fix(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    manifest = _manifest(tmp_path, 'source = "build/echo.wasm"\n[component.echo.build]\n'
                                   'command = "echo compiler says no >&2; exit 3"')
    assert main(["build", str(manifest)]) == 2
    err = capsys.readouterr().err
    assert "build of component `echo`" in err
    assert "exit 3" in err
    assert "echo compiler says no >&2; exit 3" in err


def test_build_logs_start_and_end_with_duration_off_a_terminal(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = _manifest(tmp_path, 'source = "build/echo.wasm"\n[component.echo.build]\n'
                                   f'command = "mkdir -p build && cp {WAT_ECHO} build/echo.wasm"')
    assert main(["build", str(manifest)]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    # Then compiling lines, unless the shared compile cache already holds the component.
    lines = [line for line in lines if line["event"].startswith("building")]
    assert [line["event"] for line in lines] == ["building component echo",
                                                 "building component echo: done"]
    assert isinstance(lines[1]["seconds"], float)


def test_componentize_without_the_module_says_where_it_looked(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["componentize", "-o", "build/x.wasm"]) == 2
    err = capsys.readouterr().err
    assert f"no module `app` (app.py or app/__init__.py) in {tmp_path}" in err
    assert "wasmgate componentize handler -o" in err


def test_a_missing_event_file_is_named_before_the_app_loads(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The component is not even built: the event file is checked first, without a traceback.
    manifest = _manifest(tmp_path, 'source = "build/not-built.wasm"')
    missing = tmp_path / "missing.json"
    assert main(["invoke", "echo", "--event", str(missing), "--manifest", str(manifest)]) == 2
    err = capsys.readouterr().err
    assert f"wasmgate: {missing}: event file does not exist" in err
    assert "not-built.wasm" not in err
    assert "Traceback" not in err


def test_an_event_before_1970_names_the_file_and_time(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = _manifest(tmp_path, f'source = "{build_handler("echo")}"')
    event = tmp_path / "event.json"
    event.write_text('{"id": "1", "time": "1969-07-20T20:17:40Z"}')
    assert main(["invoke", "echo", "--event", str(event), "--manifest", str(manifest)]) == 2
    err = capsys.readouterr().err
    assert str(event) in err
    assert "`time` '1969-07-20T20:17:40Z' is before 1970" in err


def test_an_unknown_component_is_a_cli_error_listing_the_names_before_anything_compiles(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The component is not even built: a typo in the name must not wait for compiles.
    manifest = _manifest(tmp_path, 'source = "build/not-built.wasm"')
    event = tmp_path / "event.json"
    event.write_text('{"specversion": "1.0", "id": "1", "source": "t", "type": "t"}')
    assert main(["invoke", "ecoh", "--event", str(event), "--manifest", str(manifest)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"wasmgate: {manifest}: no component named 'ecoh'")
    assert "known components: `echo`" in err
    assert "not-built.wasm" not in err


FORGED = "2026-01-01T00:00:00Z [error    ] gateway shutting down"


@pytest.mark.parametrize("tty", [True, False])
def test_a_log_emit_message_cannot_print_a_line_of_its_own(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        tty: bool) -> None:
    """On a terminal the console renderer prints the event text (a log.emit message) as it
    is: a line break or a terminal escape in it must not reach the terminal raw."""
    path = tmp_path / "wasmgate.toml"
    path.write_text(f'[application]\nname = "cli"\n\n[component.caps]\n'
                    f'source = "{build_handler("caps")}"\n')
    event = tmp_path / "event.json"
    message = f"ok\n{FORGED}\r\x1b[2Jcleared"
    event.write_text(json.dumps({"specversion": "1.0", "id": "1", "source": "t", "type": "t",
                                 "data": json.dumps({"op": "log", "message": message})}))
    monkeypatch.setattr(__import__("sys").stderr, "isatty", lambda: tty)
    assert main(["invoke", "caps", "--event", str(event), "--manifest", str(path)]) == 0
    err = capsys.readouterr().err
    (line,) = [x for x in err.splitlines() if "ok" in x and "cleared" in x]
    assert FORGED in line  # the whole message stays on the record's own line
    assert not any(x.startswith(FORGED) for x in err.splitlines())
    # Not `"\r" not in err`: with a cold compile cache, the terminal shows the compile
    # spinner, which redraws its line with \r; the message's own \r must not reach it raw.
    assert "\x1b[2J" not in err and f"{FORGED}\r" not in err
