"""The installed Python packages are the ones wasmgate supports and the lock names.

pyproject.toml states the ranges wasmgate supports (for people who install it into their own
environment); uv.lock pins the one set the suite passed with (what `make install` installs).
A venv that drifted from either fails here with the package, the version and what to do,
instead of as a confusing error somewhere in the suite.
"""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
LOCK = tomllib.loads((ROOT / "uv.lock").read_text())

# Libraries whose internals (not their public API) wasmgate's code depends on: each needs an
# upper bound, raised only after the suite passes on the new release (docs/development.md).
INTERNALS_USED = {
    "uvicorn": "triggers/http_protocol.py subclasses HttpToolsProtocol; triggers/http.py "
               "runs Server._serve",
}

# Installed by `python3 -m venv` itself, not by the lock; the same in every venv of one Python.
VENV_SEED = {"pip", "setuptools"}


def _declared() -> list[Requirement]:
    project = PYPROJECT["project"]
    texts = list(project["dependencies"])
    for extra in ("brokers", "dev", "build"):
        texts += project["optional-dependencies"][extra]
    return [Requirement(text) for text in texts]


def _locked_versions() -> dict[str, set[str]]:
    versions: dict[str, set[str]] = {}
    for package in LOCK["package"]:
        versions.setdefault(canonicalize_name(package["name"]), set()).add(package["version"])
    return versions


def _installed_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


@pytest.mark.parametrize("requirement", _declared(), ids=str)
def test_installed_version_is_within_the_supported_range(requirement: Requirement) -> None:
    if requirement.marker is not None and not requirement.marker.evaluate():
        pytest.skip(f"{requirement} does not apply to this Python or platform")
    installed = _installed_version(requirement.name)
    assert installed is not None, (
        f"{requirement.name} is not installed; pyproject.toml requires {requirement}. "
        f"Run `make install` (it installs uv.lock).")
    assert requirement.specifier.contains(installed, prereleases=True), (
        f"{requirement.name} {installed} is installed, but wasmgate supports {requirement} "
        f"(pyproject.toml). Run `make install` to get the locked versions; to move to a new "
        f"release, widen the range and follow docs/development.md.")


@pytest.mark.parametrize("name", sorted(INTERNALS_USED))
def test_a_library_whose_internals_we_use_has_an_upper_bound(name: str) -> None:
    requirement = next(r for r in _declared() if canonicalize_name(r.name) == name)
    upper = [spec for spec in requirement.specifier if spec.operator in ("<", "<=", "==", "~=")]
    assert upper, (f"pyproject.toml's {requirement} has no upper bound, but "
                   f"{INTERNALS_USED[name]}: a new release can break it without a commit")


def test_every_installed_package_is_the_locked_version() -> None:
    locked = _locked_versions()
    drift = []
    for dist in metadata.distributions():
        name = canonicalize_name(dist.metadata["Name"])
        if name in VENV_SEED or name == "wasmgate":
            continue
        if name not in locked:
            drift.append(f"{name} {dist.version} is installed but not in uv.lock")
        elif dist.version not in locked[name] and not any(
                Version(dist.version) == Version(v) for v in locked[name]):
            drift.append(f"{name} {dist.version} is installed; uv.lock pins "
                         f"{', '.join(sorted(locked[name]))}")
    assert not drift, ("the venv differs from uv.lock:\n  " + "\n  ".join(drift)
                       + "\nRun `make install` (uv sync --locked) to put it back.")


def test_the_uv_bootstrap_pin_is_the_locked_uv() -> None:
    bootstrap = (ROOT / "requirements" / "bootstrap.txt").read_text()
    pinned = re.search(r"^uv==(\S+)", bootstrap, re.MULTILINE)
    assert pinned is not None, "requirements/bootstrap.txt pins no uv version"
    assert {pinned.group(1)} == _locked_versions()["uv"], (
        "requirements/bootstrap.txt and uv.lock name different uv versions: "
        "run `make lock-upgrade`, which rewrites both")
    assert "--hash=sha256:" in bootstrap, "requirements/bootstrap.txt must carry hashes"


def test_every_locked_wheel_and_sdist_has_a_hash() -> None:
    unhashed = []
    for package in LOCK["package"]:
        files = [*package.get("wheels", []), *([package["sdist"]] if "sdist" in package else [])]
        unhashed += [f"{package['name']} {f.get('url', '?')}" for f in files if "hash" not in f]
    assert not unhashed, "uv.lock has files without a hash:\n  " + "\n  ".join(unhashed)
