"""A compile cache entry whose bytes were damaged after it was written (disk corruption, a
copy cut short, a hand edit) must be recompiled or refused, never loaded and run.

Truncated or random files are refused by wasmtime's own checks (the ELF and engine headers)
and recompiled. An artifact with intact headers but damaged machine code is not: wasmtime
trusts a deserialized artifact's code, so it runs; so does another component's artifact copied
under this one's name (a shared WASMGATE_CACHE_DIR). The run is in a child process: the
damaged code kills whatever process runs it.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.build import WAT_ECHO

REPO = Path(__file__).resolve().parent.parent


def _invoke(app: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "WASMGATE_CACHE_DIR": str(app / "cache")}
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "invoke", "echo", "--event", "event.json"],
        cwd=app, env=env, capture_output=True, text=True, timeout=120, check=False)


def _fill_text_section(artifact: Path, byte: int) -> None:
    """Overwrite the `.text` section of an ELF64 artifact, leaving every header intact."""
    data = bytearray(artifact.read_bytes())
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    names_at = struct.unpack_from("<Q", data, shoff + shstrndx * shentsize + 0x18)[0]
    for i in range(shnum):
        header = shoff + i * shentsize
        name_offset, = struct.unpack_from("<I", data, header)
        name = bytes(data[names_at + name_offset:]).split(b"\0", 1)[0]
        if name == b".text":
            offset, size = struct.unpack_from("<QQ", data, header + 0x18)
            data[offset:offset + size] = bytes([byte]) * size
            artifact.write_bytes(bytes(data))
            return
    raise AssertionError(f"no .text section in {artifact}")


@pytest.fixture
def app(tmp_path: Path) -> Path:
    (tmp_path / "echo.wat").write_text(WAT_ECHO.read_text())
    (tmp_path / "wasmgate.toml").write_text(
        '[application]\nname = "c"\n[component.echo]\nsource = "echo.wat"\n')
    (tmp_path / "event.json").write_text(
        '{"specversion": "1.0", "id": "1", "source": "t", "type": "t", "subject": "s", '
        '"data": "hi"}')
    first = _invoke(tmp_path)
    assert first.returncode == 0, first.stderr
    return tmp_path


def test_a_truncated_entry_is_recompiled(app: Path) -> None:
    artifact, = (app / "cache").glob("*.cwasm")
    artifact.write_bytes(artifact.read_bytes()[:4096])
    again = _invoke(app)
    assert again.returncode == 0, again.stderr
    assert "echo:" in again.stdout
    assert "discarded damaged cache entry" in again.stderr


def test_an_entry_with_damaged_code_is_not_run(app: Path) -> None:
    artifact, = (app / "cache").glob("*.cwasm")
    _fill_text_section(artifact, 0xCC)  # int3 everywhere: SIGTRAP if it runs
    again = _invoke(app)
    assert again.returncode == 0, f"exit status {again.returncode}: {again.stderr[-2000:]}"
    assert "echo:" in again.stdout


def test_an_entry_of_another_component_under_this_ones_name_is_not_run(app: Path) -> None:
    artifact, = (app / "cache").glob("*.cwasm")
    other = app / "other.wat"
    other.write_text(WAT_ECHO.read_text().replace('"echo:"', '"evil:"'))
    (app / "wasmgate.toml").write_text(
        '[application]\nname = "c"\n[component.echo]\nsource = "other.wat"\n')
    assert "evil:" in _invoke(app).stdout
    evil, = (p for p in (app / "cache").glob("*.cwasm") if p != artifact)
    artifact.write_bytes(evil.read_bytes())  # a shared cache: anyone may write a file
    (app / "wasmgate.toml").write_text(
        '[application]\nname = "c"\n[component.echo]\nsource = "echo.wat"\n')
    again = _invoke(app)
    assert "echo:" in again.stdout, again.stdout
