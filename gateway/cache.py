"""The on-disk compile cache: where it is, how big it may grow, and showing or clearing it.

The engine writes one ``<key>.cwasm`` artifact per compiled component (atomically, via a
``*.tmp`` file and a rename); this module never decides what goes in, only how much stays.
Past the size limit the entries compiled longest ago go first, except the ones the current
manifest uses (``wasmgate build`` refreshes their modification time, so "oldest" means
"not used by a build for the longest").

The limit: ``WASMGATE_CACHE_MAX_MB`` in the environment, else ``compile-cache-max-mb`` in
``[application]``, else :data:`DEFAULT_MAX_MB`.
"""

from __future__ import annotations

import dataclasses
import os
import re
import time
from collections.abc import Iterable
from pathlib import Path

import structlog

from gateway.errors import ConfigError
from gateway.manifest import LoadedManifest

log = structlog.get_logger("wasmgate.cache")

CACHE_DIR_ENV = "WASMGATE_CACHE_DIR"
MAX_MB_ENV = "WASMGATE_CACHE_MAX_MB"
# A componentize-py handler compiles to ~35 MB: room for a few dozen of them.
DEFAULT_MAX_MB = 1024
# Only the names the engine writes (native/src/engine.rs: `<sha256>.cwasm`, written through
# `<sha256>.<pid>.tmp`) are the cache's: WASMGATE_CACHE_DIR may point at a directory shared
# with other files (/tmp, a cache of `wasmtime compile` outputs), which must survive
# eviction and `wasmgate cache clear`.
_ARTIFACT_NAME = re.compile(r"[0-9a-f]{64}\.cwasm")
_TMP_NAME = re.compile(r"[0-9a-f]{64}\.[0-9]+\.tmp")
# A tmp file this old belongs to a compile that died; a live one is seconds old.
_STALE_TMP_SECONDS = 3600


def compile_cache_dir(manifest: LoadedManifest) -> Path:
    """Return the compile cache directory of ``manifest``'s app.

    ``WASMGATE_CACHE_DIR`` shares compiled artifacts between apps (tests, CI, several apps
    on one host); by default each app keeps its own next to its manifest.
    """
    shared = os.environ.get(CACHE_DIR_ENV)
    directory = Path(shared) if shared else manifest.root / ".wasmgate" / "cache"
    if directory.exists() and not directory.is_dir():
        where = f"{CACHE_DIR_ENV}={directory}" if shared else str(directory)
        raise ConfigError(f"{where} is not a directory; point {CACHE_DIR_ENV} at a directory "
                          "(it is created if missing) or remove the file")
    return directory


def max_cache_bytes(manifest: LoadedManifest | None) -> int:
    """Return the size limit of the compile cache in bytes (see the module docstring)."""
    raw = os.environ.get(MAX_MB_ENV)
    if raw is not None:
        try:
            mb = int(raw)
            if mb < 1:
                raise ValueError(mb)
        except ValueError:
            raise ConfigError(f"{MAX_MB_ENV}={raw!r} is not a positive whole number of "
                              f"megabytes; set it like {MAX_MB_ENV}=2048 or unset it") from None
        return mb << 20
    configured = manifest.application.compile_cache_max_mb if manifest is not None else None
    return (configured or DEFAULT_MAX_MB) << 20


@dataclasses.dataclass(frozen=True)
class CacheEntry:
    """One compiled artifact."""

    path: Path
    size: int
    mtime: float


class CompileCache:
    """The artifacts in one cache directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def entries(self) -> list[CacheEntry]:
        """Return every artifact, oldest first."""
        found: list[CacheEntry] = []
        for path in self._files(_ARTIFACT_NAME):
            try:
                stat = path.stat()
            except FileNotFoundError:  # evicted or cleared by another process meanwhile
                continue
            found.append(CacheEntry(path, stat.st_size, stat.st_mtime))
        return sorted(found, key=lambda e: (e.mtime, e.path.name))

    def names(self) -> set[str]:
        """Return the file names of every artifact (to tell what a compile added)."""
        return {p.name for p in self._files(_ARTIFACT_NAME)}

    def total_bytes(self) -> int:
        """Return the size of every artifact together."""
        return sum(e.size for e in self.entries())

    def touch(self, names: Iterable[str]) -> None:
        """Mark the artifacts ``names`` as just used, so eviction takes them last."""
        now = time.time()
        for name in names:
            try:
                os.utime(self.directory / name, (now, now))
            except FileNotFoundError:
                continue

    def evict(self, max_bytes: int, *, keep: Iterable[str] = ()) -> list[Path]:
        """Delete the oldest artifacts (never one named in ``keep``) until the cache is at
        most ``max_bytes``; also delete tmp files left by compiles that died. Return what
        was deleted."""
        protected = set(keep)
        deleted = self._remove_stale_tmp()
        entries = self.entries()
        total = sum(e.size for e in entries)
        for entry in entries:
            if total <= max_bytes:
                break
            if entry.path.name in protected:
                continue
            if _unlink(entry.path):
                deleted.append(entry.path)
            total -= entry.size
        if deleted:
            log.info("compile cache trimmed", directory=str(self.directory),
                     deleted=len(deleted), bytes=total, max_bytes=max_bytes)
        return deleted

    def clear(self) -> list[Path]:
        """Delete every artifact and tmp file; return what was deleted."""
        deleted = [e.path for e in self.entries() if _unlink(e.path)]
        deleted += [p for p in self._files(_TMP_NAME) if _unlink(p)]
        return deleted

    def _remove_stale_tmp(self) -> list[Path]:
        cutoff = time.time() - _STALE_TMP_SECONDS
        stale: list[Path] = []
        for path in self._files(_TMP_NAME):
            try:
                old = path.stat().st_mtime < cutoff
            except FileNotFoundError:
                continue
            if old and _unlink(path):
                stale.append(path)
        return stale

    def _files(self, name: re.Pattern[str]) -> list[Path]:
        if not self.directory.is_dir():
            return []
        return [p for p in self.directory.iterdir() if name.fullmatch(p.name) and p.is_file()]


def _unlink(path: Path) -> bool:
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


def format_size(size: int) -> str:
    """Return ``size`` bytes for people: ``35.2 MB``."""
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


__all__ = ["CACHE_DIR_ENV", "DEFAULT_MAX_MB", "MAX_MB_ENV", "CacheEntry", "CompileCache",
           "compile_cache_dir", "format_size", "max_cache_bytes"]
