"""The import graph has a bottom and one composition root, checked from the source:

* the bottom (errors, deadlines, secret masking, grant syntax, the manifest schema) imports
  nothing else of the project, so anything may import it;
* above it, the broker connections (one module per broker, and TLS), which triggers and
  ``publish`` share;
* ``bindings`` (the host side of the WIT imports) imports only itself, the connections and
  the bottom;
* the call path (dispatcher → router → pool) never calls back into the App; only the CLI
  (``up``, ``watch``, ``up --workers``) imports the App, the composition root.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("gateway", "triggers", "bindings")
BOTTOM = frozenset({"gateway.errors", "gateway.deadline", "gateway.redaction", "gateway.grants",
                    "gateway.manifest"})
CONNECTIONS = frozenset({"gateway.tls", "gateway.brokers", "gateway.brokers.amqp",
                         "gateway.brokers.kafka", "gateway.brokers.nats",
                         "gateway.brokers.redis"})
APP_IMPORTERS = frozenset({"gateway.cli", "gateway.watch", "gateway.workers", "gateway.app"})


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _sources() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            if "templates" in path.parts or "sdk" in path.parts:
                continue  # guest-side code, built into components
            found[_module_name(path)] = path
    return found


SOURCES = _sources()
MODULES = frozenset(SOURCES)


def _project_imports(path: Path) -> set[str]:
    """Every project module ``path`` imports, at the top or inside a function."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            submodules = {f"{node.module}.{alias.name}" for alias in node.names} & MODULES
            # `from gateway import deadline` imports gateway.deadline, not all of gateway.
            names.update(submodules or {node.module})
    return {n for n in names if n in MODULES}




@pytest.mark.parametrize("name", sorted(BOTTOM))
def test_the_bottom_imports_only_the_bottom(name: str) -> None:
    above = _project_imports(SOURCES[name]) - BOTTOM
    assert not above, f"{name} is at the bottom of the graph but imports {sorted(above)}"


@pytest.mark.parametrize("name", sorted(CONNECTIONS))
def test_the_connections_import_only_themselves_and_the_bottom(name: str) -> None:
    above = _project_imports(SOURCES[name]) - BOTTOM - CONNECTIONS
    assert not above, f"{name} is a broker connection module but imports {sorted(above)}"


@pytest.mark.parametrize("name", sorted(n for n in SOURCES if n.startswith("bindings")))
def test_bindings_import_only_bindings_connections_and_the_bottom(name: str) -> None:
    above = {n for n in _project_imports(SOURCES[name])
             if not n.startswith("bindings") and n not in BOTTOM | CONNECTIONS}
    assert not above, f"{name} imports {sorted(above)}, above bindings in the graph"


def test_only_the_cli_and_watch_import_the_app() -> None:
    importers = {name for name, path in SOURCES.items()
                 if "gateway.app" in _project_imports(path)}
    assert importers <= APP_IMPORTERS, \
        f"the App is the composition root; {sorted(importers - APP_IMPORTERS)} import it"


def test_the_call_path_never_reaches_back_into_the_app() -> None:
    for name in ("gateway.dispatch", "gateway.router", "gateway.executor", "triggers.delivery"):
        assert "gateway.app" not in _project_imports(SOURCES[name]), name
