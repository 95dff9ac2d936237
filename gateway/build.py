"""Building components: ``wasmgate build`` (every component's build command) and
``wasmgate componentize`` (componentize-py with the wasmgate WIT and guest SDK).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from bindings import SDK_DIR, WIT_DIR, WIT_WORLD
from gateway.errors import BuildError
from gateway.manifest import load_manifest
from gateway.progress import is_interactive, progress

# How much of a failed build's output to repeat in the error (the end is where the cause is).
_OUTPUT_TAIL_LINES = 30


def build_env() -> dict[str, str]:
    """Return the environment for build commands: this interpreter's bin directory first.

    Build commands call ``wasmgate componentize`` and ``componentize-py``; putting the running
    interpreter's scripts first finds the same installation even when its virtualenv is not
    activated (``.venv/bin/wasmgate build``).
    """
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def build_all(manifest: str | Path) -> list[str]:
    """Run the build command of every component that has one; return their names.

    Raises :class:`BuildError` naming the component, the command and its directory.
    """
    loaded = load_manifest(manifest)
    built: list[str] = []
    for name, spec in loaded.components.items():
        if spec.build is None:
            continue
        workdir = loaded.build_workdir(name)
        command = spec.build.command
        _run(command, cwd=workdir, shell=True, label=f"building component {name}",
             failure=f"build of component `{name}` in {loaded.path} failed",
             fix=f"run `{command}` in {workdir} to see the whole output, fix it, then "
                 "`wasmgate build` again")
        built.append(name)
    return built


def find_componentize_py() -> str:
    """Return the componentize-py executable, preferring the one next to this interpreter."""
    sibling = Path(sys.executable).with_name("componentize-py")
    if sibling.exists():
        return str(sibling)
    found = shutil.which("componentize-py")
    if found is None:
        raise BuildError("componentize-py is not installed; install it with "
                         "`pip install 'wasmgate[build]'` (componentize-py==0.25.1)")
    return found


def componentize(app: str, output: Path, *, cwd: Path, paths: list[Path]) -> None:
    """Build the Python module ``app`` (found in ``cwd``) into the component ``output``.

    Runs componentize-py against the wasmgate WIT world with ``cwd``, ``paths`` and the guest
    SDK (``wasmgate_sdk``) on the module path.
    """
    top = app.split(".", 1)[0]
    search = [cwd, *paths]
    if not any((d / f"{top}.py").exists() or (d / top / "__init__.py").exists() for d in search):
        where = ", ".join(str(d) for d in search)
        raise BuildError(f"no module `{top}` ({top}.py or {top}/__init__.py) in {where}; "
                         "run this in the handler's directory or pass the module name, e.g. "
                         "`wasmgate componentize handler -o build/x.wasm`")
    output = cwd / output
    output.parent.mkdir(parents=True, exist_ok=True)
    command = [find_componentize_py(), "-d", str(WIT_DIR), "-w", WIT_WORLD, "componentize", app,
               "-p", str(cwd)]
    for path in paths:
        command += ["-p", str(path)]
    # The SDK goes last so a handler's own module of the same name would win.
    command += ["-p", str(SDK_DIR), "-o", str(output)]
    _run(command, cwd=cwd, shell=False, label=f"componentizing {app} -> {output.name}",
         failure=f"componentize-py could not build `{app}` in {cwd}",
         fix="fix the error above in the handler (an import error usually means a missing "
             "package: add its directory with -p)")


def _run(command: str | list[str], *, cwd: Path | None, shell: bool, label: str,
         failure: str, fix: str) -> None:
    # On a terminal the output is captured so it does not tear the spinner line, and shown
    # only when the step fails; elsewhere it streams through, between the two log lines.
    capture = is_interactive()
    result: subprocess.CompletedProcess[str] | None = None
    try:
        with progress(label):
            result = subprocess.run(command, shell=shell, cwd=cwd, env=build_env(),
                                    check=False, capture_output=capture, text=True)
            if result.returncode != 0:
                raise BuildError(f"{failure} (exit {result.returncode}); {fix}")
    except BuildError:
        if result is not None and capture:
            sys.stderr.write(_tail((result.stdout or "") + (result.stderr or "")))
        raise
    except FileNotFoundError as exc:  # the workdir, or the executable when shell=False
        raise BuildError(f"{failure}: {exc}; {fix}") from exc


def _tail(output: str) -> str:
    lines = output.rstrip().splitlines()
    shown = lines[-_OUTPUT_TAIL_LINES:]
    prefix = [f"... ({len(lines) - len(shown)} earlier lines)"] if len(shown) < len(lines) else []
    return "\n".join([*prefix, *shown]) + "\n" if lines else ""


__all__ = ["build_all", "build_env", "componentize", "find_componentize_py"]
