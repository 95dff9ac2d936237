"""`wasmgate new`: every template becomes a project that really builds and answers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bindings import TEMPLATES_DIR
from gateway.cli import main

# What each template's sample event.json gets back: the response body, as JSON.
EXPECTED = {
    "python-http": {"message": "hello, Ada!"},
    "python-queue": {"id": "o-1", "total": 8.0},
    "python-cron": {"runs": 1, "scheduled": "2025-01-01T00:00:00+00:00"},
    "js-http": {"message": "hello, Ada!"},
    "python-webhook": {"event": "push", "ref": "refs/heads/main"},
    "python-wasi-http": {"message": "hello, Ada!"},
    "js-wasi-http": {"message": "hello, Ada!"},
}


def _invoke(name: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["invoke", name, "--event", f"{name}/event.json",
                 "--manifest", f"{name}/wasmgate.toml"])
    return code, capsys.readouterr().out


def test_every_template_has_an_expected_response() -> None:
    shipped = {p.parent.name for p in TEMPLATES_DIR.glob("*/template.toml")}
    assert shipped == set(EXPECTED)


def test_new_without_arguments_lists_templates(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["new"]) == 0
    out = capsys.readouterr().out
    for name in EXPECTED:
        assert name in out
    assert "HTTP endpoint in Python" in out


@pytest.mark.wasm
@pytest.mark.parametrize("template", sorted(EXPECTED))
def test_new_project_builds_and_answers(template: str, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["new", template, "my-app"]) == 0
    created = capsys.readouterr().out
    assert "my-app/wasmgate.toml" in created
    assert (tmp_path / "my-app" / ".gitignore").exists()
    assert "{{name}}" not in (tmp_path / "my-app" / "wasmgate.toml").read_text()

    assert main(["build", "my-app/wasmgate.toml"]) == 0
    assert (tmp_path / "my-app" / "build" / "my-app.wasm").exists()
    capsys.readouterr()

    code, out = _invoke("my-app", capsys)
    assert code == 0, out
    assert out.startswith("status: 200\n")
    assert "content-type: application/json" in out
    assert json.loads(out.split("\n\n", 1)[1]) == EXPECTED[template]
    if template == "python-queue":
        # A redelivered message is acknowledged with the stored result, not reprocessed.
        code, again = _invoke("my-app", capsys)
        assert code == 0
        assert json.loads(again.split("\n\n", 1)[1]) == EXPECTED[template]


def test_unknown_template_lists_the_available_ones(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["new", "python-htp", "x"]) == 2
    err = capsys.readouterr().err
    assert "unknown template 'python-htp'" in err
    assert "python-http" in err
    assert not (tmp_path / "x").exists()


def test_new_never_overwrites(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "app.py").write_text("mine")
    assert main(["new", "python-http", "x"]) == 2
    assert "already exists and is not empty" in capsys.readouterr().err
    assert (tmp_path / "x" / "app.py").read_text() == "mine"


def test_bad_project_name_says_what_is_allowed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["new", "python-http", "My App"]) == 2
    assert "lowercase letters, digits and dashes" in capsys.readouterr().err


def test_missing_name_shows_the_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["new", "python-http"]) == 2
    assert "wasmgate new python-http <name>" in capsys.readouterr().err
