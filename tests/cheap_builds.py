"""Apps whose build commands are cheap shell commands instead of componentize-py (~50 s a
component here): each "build" writes the WAT echo component (tests/fixtures/wat/echo.wat,
which wasmtime compiles in milliseconds) with its reply prefix taken from the handler's
``prefix.txt`` (4 characters, the size of the fixture's ``echo``), so a test can tell
versions apart by the reply (``<prefix>:<data>``).

Every build also appends its component's name to ``builds.log`` and ends its output with its
name and the time it ran, so, like componentize-py's, two builds of the same inputs never
give the same bytes: a rebuild that should not have happened shows as a new compile-cache entry.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from tests.fixtures.build import WAT_ECHO

FAILING = "FAIL"  # a prefix.txt holding this makes the build fail (exit 3)


def build_command(name: str, *, extra: str = "") -> str:
    """Return the shell build command of component ``name`` (run in handlers/<name>)."""
    out = f"../../build/{name}.wasm"
    steps = [
        f'{extra}p="$(cat prefix.txt)"',
        f'test "$p" != {FAILING} || {{ echo "prefix.txt says {FAILING}" >&2; exit 3; }}',
        f'mkdir -p ../../build && sed "s/\\"echo:\\"/\\"$p:\\"/" '
        f'{shlex.quote(str(WAT_ECHO))} > {out}.tmp',
        # The name too: two components built in the same clock tick (parallel builds, a
        # coarse clock) must still differ, or they share one compile-cache entry.
        f'echo ";; built {name} $(date +%s%N)" >> {out}.tmp && mv {out}.tmp {out}',
        f"echo {name} >> ../../builds.log",
    ]
    return f"{steps[0]}; " + " && ".join(steps[1:])


def write_app(root: Path, names: list[str], *, extra_toml: str = "", extra_command: str = "",
              http: bool = False) -> Path:
    """Write an app in ``root`` with one cheap-build component per name; return its manifest."""
    lines = ['[application]', 'name = "cheap"', '']
    for name in names:
        handler = root / "handlers" / name
        handler.mkdir(parents=True, exist_ok=True)
        (handler / "prefix.txt").write_text("v001")
        command = build_command(name, extra=extra_command)
        command = command.replace("\\", "\\\\").replace('"', '\\"')  # a TOML string
        lines += [f'[component.{name}]', f'source = "build/{name}.wasm"',
                  f'[component.{name}.build]', f'command = "{command}"',
                  f'workdir = "handlers/{name}"', '']
        if http:
            lines += ['[[trigger.http]]', f'route = "/{name}"', f'component = "{name}"', '']
    manifest = root / "wasmgate.toml"
    manifest.write_text("\n".join(lines) + extra_toml)
    return manifest


def builds(root: Path) -> list[str]:
    """Return the components built so far, in order."""
    log = root / "builds.log"
    return log.read_text().split() if log.exists() else []
