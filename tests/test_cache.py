"""The compile cache stays under its size limit, and `wasmgate cache` shows and clears it."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from gateway.build import build_all
from gateway.cache import DEFAULT_MAX_MB, CompileCache, max_cache_bytes
from gateway.cli import main
from gateway.errors import ConfigError
from gateway.manifest import load_manifest
from tests.cheap_builds import write_app

MB = 1 << 20


def _key(name: str) -> str:
    """An artifact key of the engine's form (a SHA-256 in hex) standing for ``name``."""
    return hashlib.sha256(name.encode()).hexdigest()


def _entry(directory: Path, name: str, size: int, age_s: float) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{_key(name)}.cwasm"
    path.write_bytes(b"\0" * size)
    then = time.time() - age_s
    os.utime(path, (then, then))
    return path


def test_eviction_deletes_oldest_first_until_under_the_limit(tmp_path: Path) -> None:
    oldest = _entry(tmp_path, "a", MB, age_s=300)
    older = _entry(tmp_path, "b", MB, age_s=200)
    newer = _entry(tmp_path, "c", MB, age_s=100)
    deleted = CompileCache(tmp_path).evict(2 * MB)
    assert deleted == [oldest]
    assert older.exists() and newer.exists()


def test_eviction_spares_entries_in_use(tmp_path: Path) -> None:
    in_use = _entry(tmp_path, "a", MB, age_s=300)
    other = _entry(tmp_path, "b", MB, age_s=200)
    _entry(tmp_path, "c", MB, age_s=100)
    CompileCache(tmp_path).evict(2 * MB, keep=[in_use.name])
    assert in_use.exists()
    assert not other.exists()


def test_eviction_removes_tmp_files_of_dead_compiles_only(tmp_path: Path) -> None:
    stale = tmp_path / f"{_key('x')}.123.tmp"
    live = tmp_path / f"{_key('y')}.456.tmp"
    stale.write_bytes(b"1")
    live.write_bytes(b"1")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    CompileCache(tmp_path).evict(100 * MB)
    assert not stale.exists()
    assert live.exists()  # a compile may be writing it right now


def test_files_the_engine_did_not_write_survive_eviction_and_clear(tmp_path: Path) -> None:
    # WASMGATE_CACHE_DIR may be a directory shared with other files.
    others = [tmp_path / "notes.tmp", tmp_path / "mine.cwasm", tmp_path / "x.cwasm.1.tmp"]
    for path in others:
        path.write_bytes(b"\0" * MB)
        os.utime(path, (time.time() - 7200, time.time() - 7200))
    ours = _entry(tmp_path, "a", MB, age_s=300)
    cache = CompileCache(tmp_path)
    assert cache.evict(0) == [ours]
    assert cache.total_bytes() == 0
    _entry(tmp_path, "b", MB, age_s=300)
    assert len(cache.clear()) == 1
    assert all(path.exists() for path in others)


def test_limit_from_environment_then_manifest_then_default(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WASMGATE_CACHE_MAX_MB", raising=False)
    plain = tmp_path / "plain.toml"
    plain.write_text('[application]\nname = "x"\n')
    sized = tmp_path / "sized.toml"
    sized.write_text('[application]\nname = "x"\ncompile-cache-max-mb = 64\n')
    assert max_cache_bytes(load_manifest(plain)) == DEFAULT_MAX_MB * MB
    assert max_cache_bytes(load_manifest(sized)) == 64 * MB
    monkeypatch.setenv("WASMGATE_CACHE_MAX_MB", "8")
    assert max_cache_bytes(load_manifest(sized)) == 8 * MB
    monkeypatch.setenv("WASMGATE_CACHE_MAX_MB", "lots")
    with pytest.raises(ConfigError, match="WASMGATE_CACHE_MAX_MB='lots'"):
        max_cache_bytes(load_manifest(sized))


def test_build_keeps_the_cache_under_its_limit_and_keeps_what_the_app_uses(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("WASMGATE_CACHE_DIR", str(cache))
    monkeypatch.setenv("WASMGATE_CACHE_MAX_MB", "1")
    old = [_entry(cache, f"old{i}", 400_000, age_s=1000 + 10 * i) for i in range(3)]
    manifest = write_app(tmp_path / "app", ["alpha"])
    assert build_all(manifest).compiled == ["alpha"]
    left = CompileCache(cache)
    assert left.total_bytes() <= MB
    assert not old[2].exists()  # the oldest went first
    assert old[0].exists()  # the newest old one fits
    # alpha's own artifact stayed, though it too is over the limit with the rest: the next
    # build (and `up`) load it without compiling.
    assert build_all(manifest).compiled == []


def test_cache_command_shows_and_clears(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("WASMGATE_CACHE_DIR", str(cache))
    monkeypatch.delenv("WASMGATE_CACHE_MAX_MB", raising=False)
    manifest = write_app(tmp_path / "app", ["alpha", "beta"])
    build_all(manifest)
    capsys.readouterr()

    assert main(["cache", str(manifest)]) == 0
    shown = capsys.readouterr().out
    assert str(cache) in shown
    assert "2 entries" in shown
    assert f"of {DEFAULT_MAX_MB}.0 MB" in shown or "of 1.0 GB" in shown

    assert main(["cache", "clear", str(manifest)]) == 0
    assert "deleted 2 files" in capsys.readouterr().out
    assert CompileCache(cache).entries() == []
    assert main(["cache", "show", str(manifest)]) == 0
    assert "0 entries" in capsys.readouterr().out


def test_cache_command_refuses_an_unknown_action(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    manifest = tmp_path / "wasmgate.toml"
    manifest.write_text('[application]\nname = "x"\n')
    assert main(["cache", "purge", str(manifest)]) == 2
    assert "unknown cache action 'purge'" in capsys.readouterr().err


def test_a_cache_dir_that_is_a_file_is_a_clear_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    # It was shown as an empty cache, and every compile warned "File exists (os error 17)".
    not_a_dir = tmp_path / "cache"
    not_a_dir.write_text("")
    monkeypatch.setenv("WASMGATE_CACHE_DIR", str(not_a_dir))
    manifest = write_app(tmp_path / "app", ["alpha"])
    for command in (["cache", str(manifest)], ["build", str(manifest)]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert f"WASMGATE_CACHE_DIR={not_a_dir} is not a directory" in err, err
