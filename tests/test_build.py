"""`wasmgate build`: rebuild only what changed, in parallel, check the manifest first, fail
clearly on a missing output, and compile everything so `up` starts without compiling.

Builds here are cheap shell commands (tests/cheap_builds.py) whose output, like
componentize-py's, differs on every run: an unneeded rebuild shows up as a new build in
builds.log and a new compile-cache entry.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from gateway.app import App
from gateway.build import build_all
from gateway.cache import CompileCache
from gateway.cli import main
from gateway.errors import BuildError
from tests.cheap_builds import builds, write_app


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A compile cache of the test's own, so its entries can be counted."""
    directory = tmp_path / "cache"
    monkeypatch.setenv("WASMGATE_CACHE_DIR", str(directory))
    return directory


def test_second_build_rebuilds_and_compiles_nothing_and_up_compiles_nothing(
        tmp_path: Path, cache_dir: Path) -> None:
    manifest = write_app(tmp_path, ["alpha", "beta"])
    first = build_all(manifest)
    assert sorted(first.built) == ["alpha", "beta"]
    assert sorted(first.compiled) == ["alpha", "beta"]
    entries = CompileCache(cache_dir).names()
    assert len(entries) == 2

    second = build_all(manifest)
    assert second.built == []
    assert sorted(second.up_to_date) == ["alpha", "beta"]
    assert second.compiled == []
    assert sorted(second.already_compiled) == ["alpha", "beta"]
    assert sorted(builds(tmp_path)) == ["alpha", "beta"]  # each ran once

    app = App.load(manifest)
    try:
        assert CompileCache(cache_dir).names() == entries  # loaded, not compiled
    finally:
        app.engine.close()


def test_only_the_edited_component_is_rebuilt(tmp_path: Path, cache_dir: Path) -> None:
    manifest = write_app(tmp_path, ["alpha", "beta"])
    build_all(manifest)
    (tmp_path / "handlers" / "alpha" / "prefix.txt").write_text("v002")
    report = build_all(manifest)
    assert report.built == ["alpha"]
    assert report.up_to_date == ["beta"]
    assert report.compiled == ["alpha"]
    assert b'"v002:"' in (tmp_path / "build" / "alpha.wasm").read_bytes()


def test_a_new_file_in_the_workdir_or_a_changed_command_environment_rebuilds(
        tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = write_app(tmp_path, ["alpha"], extra_command=": $WG_TEST_FLAVOUR; ")
    monkeypatch.setenv("WG_TEST_FLAVOUR", "plain")
    build_all(manifest)
    (tmp_path / "handlers" / "alpha" / "helper.py").write_text("X = 1\n")
    assert build_all(manifest).built == ["alpha"]
    monkeypatch.setenv("WG_TEST_FLAVOUR", "spicy")  # the command names it: an input
    assert build_all(manifest).built == ["alpha"]
    monkeypatch.setenv("WG_UNRELATED", "x")  # the command does not: no rebuild
    assert build_all(manifest).built == []


def test_a_deleted_output_is_rebuilt(tmp_path: Path, cache_dir: Path) -> None:
    manifest = write_app(tmp_path, ["alpha"])
    build_all(manifest)
    (tmp_path / "build" / "alpha.wasm").unlink()
    assert build_all(manifest).built == ["alpha"]


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="parallel builds need 2 CPUs")
def test_independent_components_build_in_parallel(tmp_path: Path, cache_dir: Path) -> None:
    # Each build notes when it starts and ends, and waits long enough to overlap another.
    stamp = "date +%s%N >> ../../spans-$(basename $PWD)"
    manifest = write_app(tmp_path, ["alpha", "beta"],
                         extra_command=f"{stamp}; sleep 1; {stamp}; ")
    build_all(manifest, compile_components=False)
    spans = {name: [int(t) for t in (tmp_path / f"spans-{name}").read_text().split()]
             for name in ("alpha", "beta")}
    (a_start, a_end), (b_start, b_end) = spans["alpha"], spans["beta"]
    assert a_start < b_end and b_start < a_end  # the two builds ran at the same time


def test_a_build_that_does_not_write_source_names_it(tmp_path: Path, cache_dir: Path) -> None:
    manifest = tmp_path / "wasmgate.toml"
    (tmp_path / "handler").mkdir()
    manifest.write_text('[application]\nname = "x"\n[component.lazy]\n'
                        'source = "build/lazy.wasm"\n[component.lazy.build]\n'
                        'command = "echo pretending to build"\nworkdir = "handler"\n')
    with pytest.raises(BuildError) as failure:
        build_all(manifest)
    message = str(failure.value)
    assert str(tmp_path / "build" / "lazy.wasm") in message
    assert "component.lazy.source" in message
    assert "echo pretending to build" in message


def test_a_build_that_hangs_is_stopped_at_its_timeout_with_what_it_started(
        tmp_path: Path, cache_dir: Path) -> None:
    manifest = tmp_path / "wasmgate.toml"
    (tmp_path / "handler").mkdir()
    marker = tmp_path / "still-running"
    # The shell starts a child that would outlive it: it must be stopped too.
    manifest.write_text('[application]\nname = "x"\n[component.stuck]\n'
                        'source = "build/stuck.wasm"\n[component.stuck.build]\n'
                        f'command = "(sleep 3; touch {marker}) & sleep 60"\n'
                        'workdir = "handler"\ntimeout-s = 1\n')
    started = time.monotonic()
    with pytest.raises(BuildError) as failure:
        build_all(manifest)
    assert time.monotonic() - started < 30
    message = str(failure.value)
    assert "ran past 1 s" in message and "component.stuck.build.timeout-s" in message
    time.sleep(4)
    assert not marker.exists(), "the build's child kept running after the timeout"


def test_a_failed_build_names_component_and_command_and_keeps_the_others(
        tmp_path: Path, cache_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = write_app(tmp_path, ["alpha", "beta"])
    (tmp_path / "handlers" / "beta" / "prefix.txt").write_text("FAIL")
    assert main(["build", str(manifest)]) == 2
    err = capsys.readouterr().err
    assert "build of component `beta`" in err
    assert "prefix.txt says FAIL" in err  # the end of its output is shown
    # alpha's build was recorded: fixing beta rebuilds beta alone.
    (tmp_path / "handlers" / "beta" / "prefix.txt").write_text("v001")
    assert build_all(manifest).built == ["beta"]


def test_a_bad_cron_schedule_fails_before_any_build_runs(
        tmp_path: Path, cache_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = write_app(tmp_path, ["alpha"], extra_toml=(
        '[[trigger.cron]]\nschedule = "every tuesday"\ncomponent = "alpha"\n'))
    assert main(["build", str(manifest)]) == 2
    err = capsys.readouterr().err
    assert str(manifest) in err
    assert "trigger.cron[0]" in err
    assert "every tuesday" in err
    assert builds(tmp_path) == []


def test_a_prebuilt_component_that_is_missing_fails_before_any_build(
        tmp_path: Path, cache_dir: Path) -> None:
    manifest = write_app(tmp_path, ["alpha"], extra_toml=(
        '[component.ghost]\nsource = "prebuilt/ghost.wasm"\n'))
    with pytest.raises(Exception, match=r"component\.ghost\.source"):
        build_all(manifest)
    assert builds(tmp_path) == []


def test_build_prints_what_it_did(tmp_path: Path, cache_dir: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    manifest = write_app(tmp_path, ["alpha"])
    assert main(["build", str(manifest)]) == 0
    assert main(["build", str(manifest)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == ["built: alpha; unchanged, not rebuilt: none",
                   "compiled: alpha; already compiled: none",
                   "built: none; unchanged, not rebuilt: alpha",
                   "compiled: none; already compiled: alpha"]
