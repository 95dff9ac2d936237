"""What a component's build depends on, and what the last build of it produced.

componentize-py's output is not byte-for-byte reproducible, so rebuilding unchanged sources
gives a new wasm digest, a compile-cache miss and ~35 MB more cache every run. Like make or
cargo, ``wasmgate build`` therefore rebuilds a component only when the digest of its inputs
changed, or when its output is gone or was replaced since. The inputs:

- its files: the ``watch`` globs of ``[component.<name>.build]`` (relative to the manifest),
  or else every file under its ``workdir``, leaving out hidden directories (``.wasmgate``,
  ``.git``, ``.venv``), ``__pycache__``, ``node_modules`` and the directory its ``source``
  is written to (a build must not depend on its own output);
- the guest SDK (``bindings/sdk``), the WIT (``bindings/wit``) and, where installed, the
  JavaScript toolchain's lock file;
- the build command, its workdir, the componentize-py version, this interpreter, and the
  value of every environment variable the command names (``$VAR`` or ``${VAR}``).

The last build of each component is kept in ``<app>/.wasmgate/build-state.json``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import threading
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import structlog

from bindings import SDK_DIR, WIT_DIR
from gateway.manifest import LoadedManifest

log = structlog.get_logger("wasmgate.build")

STATE_FILE = "build-state.json"
# Bumped when the digest's recipe changes, so older states rebuild once instead of lying.
_RECIPE = "wasmgate-build-inputs-v1"
_SKIPPED_DIRS = frozenset({"__pycache__", "node_modules"})
_ENV_REFERENCE = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)")
_JS_LOCK = Path(__file__).resolve().parent.parent / "bindings" / "js" / "package-lock.json"


def input_files(manifest: LoadedManifest, name: str) -> list[Path]:
    """Return the files component ``name``'s build reads (see the module docstring), sorted.

    A component without a build command has none.
    """
    build = manifest.component(name).build
    if build is None:
        return []
    output = manifest.source_path(name)
    if build.watch:
        found = {p for pattern in build.watch for p in manifest.root.glob(pattern)
                 if p.is_file() and p != output}
        return sorted(found)
    workdir = manifest.resolve(build.workdir)
    # The output's directory is left out unless it is the workdir itself.
    output_dir = output.parent if output.parent != workdir else None
    return sorted(p for p in _walk(workdir, skip=output_dir) if p != output)


def _walk(directory: Path, *, skip: Path | None) -> Iterator[Path]:
    if not directory.is_dir():
        return
    for root, dirs, files in os.walk(directory):
        here = Path(root)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in _SKIPPED_DIRS
                         and here / d != skip)
        for file in files:
            yield here / file


def _toolchain_files() -> list[Path]:
    files = sorted([*SDK_DIR.glob("*.py"), *WIT_DIR.glob("*.wit")])
    return [*files, _JS_LOCK] if _JS_LOCK.is_file() else files


def fingerprint(manifest: LoadedManifest, name: str) -> dict[str, tuple[int, int]]:
    """Return (mtime in ns, size) of every input file of ``name``, and of its ``source``
    when it has no build command: a cheap way to notice an edit (``wasmgate watch``)."""
    files = input_files(manifest, name) or [manifest.source_path(name)]
    seen: dict[str, tuple[int, int]] = {}
    for path in [*files, *_toolchain_files()]:
        try:
            stat = path.stat()
        except FileNotFoundError:
            continue
        seen[str(path)] = (stat.st_mtime_ns, stat.st_size)
    return seen


def input_digest(manifest: LoadedManifest, name: str) -> str:
    """Return the digest of everything component ``name``'s build depends on."""
    build = manifest.component(name).build
    if build is None:
        raise ValueError(f"component {name!r} has no build command")
    digest = hashlib.sha256(_RECIPE.encode())

    def add(label: str, value: str | bytes) -> None:
        data = value.encode() if isinstance(value, str) else value
        # Length-prefixed, so no two different input lists hash alike.
        digest.update(f"{label}:{len(data)}:".encode() + data)

    add("command", build.command)
    add("workdir", build.workdir)
    add("python", sys.executable)
    add("componentize-py", _version("componentize-py"))
    for var in sorted(set(_ENV_REFERENCE.findall(build.command))):
        add(f"env {var}", os.environ.get(var, "\0unset"))
    for path in input_files(manifest, name):
        shown = path.relative_to(manifest.root) if path.is_relative_to(manifest.root) else path
        add(f"file {shown}", _file_digest(path))
    for path in _toolchain_files():
        add(f"toolchain {path.name}", _file_digest(path))
    return digest.hexdigest()


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


def _file_digest(path: Path) -> bytes:
    try:
        with path.open("rb") as f:
            return hashlib.file_digest(f, "sha256").digest()
    except OSError as exc:  # vanished or unreadable meanwhile: still a change
        return f"unreadable: {exc.strerror}".encode()


def file_sha256(path: Path) -> str | None:
    """Return the sha256 of ``path``, or None when it cannot be read."""
    try:
        with path.open("rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except OSError:
        return None


class BuildState:
    """The recorded last build of each component, and the cache artifact it compiled to."""

    def __init__(self, path: Path, data: dict[str, Any]) -> None:
        self.path = path
        self._builds: dict[str, dict[str, str]] = data.get("builds", {})
        self._artifacts: dict[str, dict[str, str]] = data.get("artifacts", {})
        self._lock = threading.Lock()  # builds finish on several threads

    @classmethod
    def load(cls, manifest: LoadedManifest) -> BuildState:
        """Return the state next to ``manifest`` (empty if missing or unreadable)."""
        path = manifest.root / ".wasmgate" / STATE_FILE
        try:
            data = json.loads(path.read_text())
            if not isinstance(data, dict) or data.get("recipe") != _RECIPE:
                data = {}
        except FileNotFoundError:
            data = {}
        except (OSError, ValueError) as exc:
            # Only a cache of what was built: losing it costs one rebuild, nothing more.
            log.warning("ignoring unreadable build state; every component will be rebuilt",
                        path=str(path), error=str(exc))
            data = {}
        return cls(path, data)

    def is_current(self, name: str, inputs: str, output: Path) -> bool:
        """Return whether ``name`` was last built from ``inputs`` and its output is still
        the file that build produced."""
        with self._lock:
            last = self._builds.get(name)
        if last is None or last.get("inputs") != inputs:
            return False
        return file_sha256(output) == last.get("output")

    def record_build(self, name: str, inputs: str, output: Path) -> None:
        """Remember that ``name`` was built from ``inputs`` into ``output``; save at once,
        so a later failure of another component does not forget this one."""
        output_digest = file_sha256(output) or ""
        with self._lock:
            self._builds[name] = {"inputs": inputs, "output": output_digest}
            self._save()

    def artifact(self, name: str, source_sha256: str) -> str | None:
        """Return the cache artifact ``name`` compiled to, if it was compiled from a source
        with this digest."""
        with self._lock:
            last = self._artifacts.get(name)
        if last is None or last.get("source") != source_sha256:
            return None
        return last.get("artifact")

    def record_artifact(self, name: str, source_sha256: str, artifact: str) -> None:
        """Remember which cache artifact ``name``'s source compiled to."""
        with self._lock:
            self._artifacts[name] = {"source": source_sha256, "artifact": artifact}
            self._save()

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_text(json.dumps({"recipe": _RECIPE, "builds": self._builds,
                                   "artifacts": self._artifacts}, indent=2, sort_keys=True))
        tmp.replace(self.path)  # atomic: a crash never leaves half a file


__all__ = ["STATE_FILE", "BuildState", "file_sha256", "fingerprint", "input_digest",
           "input_files"]
