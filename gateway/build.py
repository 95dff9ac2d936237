"""Building components: ``wasmgate build`` (every component's build command, when its
inputs changed, then compiling it into the cache) and ``wasmgate componentize``
(componentize-py with the wasmgate WIT and guest SDK).

What counts as a change is :mod:`gateway.build_state`'s job; where compiled artifacts go
and how many stay is :mod:`gateway.cache`'s.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import structlog

from bindings import SDK_DIR, WIT_DIR, WIT_WASI_HTTP_DIR, WIT_WASI_HTTP_WORLD, WIT_WORLD
from gateway.build_state import BuildState, file_sha256, input_digest
from gateway.cache import CompileCache, compile_cache_dir, max_cache_bytes
from gateway.check import check_manifest
from gateway.engine import engine_for
from gateway.errors import BuildError, ConfigError
from gateway.manifest import LoadedManifest
from gateway.progress import is_interactive, progress

log = structlog.get_logger("wasmgate.build")

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


@dataclasses.dataclass
class BuildReport:
    """What ``wasmgate build`` did to each component."""

    built: list[str] = dataclasses.field(default_factory=list)
    up_to_date: list[str] = dataclasses.field(default_factory=list)  # inputs unchanged
    compiled: list[str] = dataclasses.field(default_factory=list)
    already_compiled: list[str] = dataclasses.field(default_factory=list)  # cache hit


def build_all(manifest: str | Path, *, compile_components: bool = True) -> BuildReport:
    """Check the whole manifest, build every component whose inputs changed (independent
    components in parallel, at most one per CPU), then compile every component into the
    compile cache so ``up`` and ``invoke`` start without compiling.

    Raises ConfigError for a bad manifest before any build runs, and :class:`BuildError`
    naming the component, the command and its directory when a build fails or does not
    write the component's ``source``.
    """
    loaded = check_manifest(manifest)
    _check_prebuilt_sources(loaded)
    state = BuildState.load(loaded)
    report = BuildReport()
    stale: list[tuple[str, str]] = []
    for name, spec in loaded.components.items():
        if spec.build is None:
            continue
        inputs = input_digest(loaded, name)
        if state.is_current(name, inputs, loaded.source_path(name)):
            report.up_to_date.append(name)
        else:
            stale.append((name, inputs))
    if report.up_to_date:
        log.info("up to date, not rebuilt", components=report.up_to_date)
    report.built = _build_parallel(loaded, state, stale)
    if compile_components:
        _compile_all(loaded, state, report)
    return report


def build_component(loaded: LoadedManifest, name: str, state: BuildState) -> bool:
    """Build component ``name`` if its inputs changed since its last build; return whether
    it ran the build command. Raises :class:`BuildError` as :func:`build_all` does."""
    inputs = input_digest(loaded, name)
    if state.is_current(name, inputs, loaded.source_path(name)):
        return False
    _build_one(loaded, name, inputs, state, show_progress=True)
    return True


def _check_prebuilt_sources(loaded: LoadedManifest) -> None:
    # A component without a build command must already be there: say so before building
    # the others, not after minutes of componentize-py.
    for name, spec in loaded.components.items():
        source = loaded.source_path(name)
        if spec.build is None and not source.is_file():
            raise ConfigError(f"{source} does not exist and component `{name}` has no "
                              f"[component.{name}.build] to make it; build it, fix `source` "
                              "or add a build command", path=str(loaded.path),
                              field=f"component.{name}.source")


def _build_parallel(loaded: LoadedManifest, state: BuildState,
                    stale: list[tuple[str, str]]) -> list[str]:
    if not stale:
        return []
    if len(stale) == 1:
        name, inputs = stale[0]
        _build_one(loaded, name, inputs, state, show_progress=True)
        return [name]
    names = [name for name, _ in stale]
    # One spinner line for the batch on a terminal (several would overwrite each other);
    # elsewhere each build logs its own start and end lines.
    batch = is_interactive()
    failures: list[BuildError] = []
    workers = min(len(stale), os.cpu_count() or 1)
    shown = (progress(f"building {len(stale)} components ({', '.join(names)}), "
                      f"{workers} at a time") if batch else contextlib.nullcontext())
    with shown, ThreadPoolExecutor(workers, thread_name_prefix="wasmgate-build") as pool:
        futures = [pool.submit(_build_one, loaded, name, inputs, state,
                               show_progress=not batch, always_capture=True)
                   for name, inputs in stale]
        for future in futures:
            try:
                future.result()
            except BuildError as exc:
                failures.append(exc)
    if len(failures) == 1:
        raise failures[0]
    if failures:
        raise BuildError(f"{len(failures)} of {len(stale)} component builds failed:\n"
                         + "\n".join(f"- {exc}" for exc in failures))
    return names


def _build_one(loaded: LoadedManifest, name: str, inputs: str, state: BuildState, *,
               show_progress: bool, always_capture: bool = False) -> None:
    spec = loaded.component(name)
    assert spec.build is not None  # callers pass only components with a build command
    workdir = loaded.resolve(spec.build.workdir)
    command = spec.build.command
    _run(command, cwd=workdir, shell=True, label=f"building component {name}",
         failure=f"build of component `{name}` in {loaded.path} failed",
         fix=f"run `{command}` in {workdir} to see the whole output, fix it, then "
             "`wasmgate build` again",
         show_progress=show_progress, always_capture=always_capture, output_label=name,
         timeout=(spec.build.timeout_s, f"component.{name}.build.timeout-s"))
    source = loaded.source_path(name)
    if not source.is_file():
        raise BuildError(f"the build of component `{name}` (`{command}` in {workdir}) "
                         f"succeeded but did not write {source}, its `source` in "
                         f"{loaded.path} (field component.{name}.source); make the command "
                         "write that file or point `source` at the file it writes")
    state.record_build(name, inputs, source)


def _compile_all(loaded: LoadedManifest, state: BuildState, report: BuildReport) -> None:
    cache = CompileCache(compile_cache_dir(loaded))
    # The same engine as the app's, so the artifacts' keys match.
    engine = engine_for(loaded, cache.directory)
    used: list[str] = []
    try:
        for name in loaded.components:
            source = loaded.source_path(name)
            before = cache.names()
            engine.load_component(source, name=name)  # shows progress when it compiles
            added = sorted(cache.names() - before)
            source_digest = file_sha256(source) or ""
            if added:
                report.compiled.append(name)
                state.record_artifact(name, source_digest, added[0])
                used.append(added[0])
            else:
                report.already_compiled.append(name)
                artifact = state.artifact(name, source_digest)
                if artifact is not None:
                    used.append(artifact)
    finally:
        engine.close()
    cache.touch(used)
    cache.evict(max_cache_bytes(loaded), keep=used)


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


def componentize(app: str, output: Path, *, cwd: Path, paths: list[Path],
                 world: str = "wasmgate") -> None:
    """Build the Python module ``app`` (found in ``cwd``) into the component ``output``.

    Runs componentize-py against the wasmgate WIT world with ``cwd``, ``paths`` and the guest
    SDK (``wasmgate_sdk``) on the module path; with ``world="wasi-http"``, against the
    standard ``wasi:http/proxy`` world instead (no SDK: such a component runs on any
    wasi:http host).
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
    wit, wit_world = ((WIT_WASI_HTTP_DIR, WIT_WASI_HTTP_WORLD) if world == "wasi-http"
                      else (WIT_DIR, WIT_WORLD))
    command = [find_componentize_py(), "-d", str(wit), "-w", wit_world, "componentize", app,
               "-p", str(cwd)]
    for path in paths:
        command += ["-p", str(path)]
    if world != "wasi-http":
        # The SDK goes last so a handler's own module of the same name would win.
        command += ["-p", str(SDK_DIR)]
    command += ["-o", str(output)]
    _run(command, cwd=cwd, shell=False, label=f"componentizing {app} -> {output.name}",
         failure=f"componentize-py could not build `{app}` in {cwd}",
         fix="fix the error above in the handler (an import error usually means a missing "
             "package: add its directory with -p)")


def _run(command: str | list[str], *, cwd: Path | None, shell: bool, label: str,
         failure: str, fix: str, show_progress: bool = True, always_capture: bool = False,
         output_label: str | None = None, timeout: tuple[int, str] | None = None) -> None:
    """Run one build step; ``timeout`` is (seconds, the manifest field that sets them)."""
    # On a terminal the output is captured so it does not tear the spinner line, and shown
    # only when the step fails; elsewhere it streams through, between the two log lines.
    # Parallel builds always capture: interleaved outputs would be unreadable.
    capture = always_capture or is_interactive()
    result: subprocess.CompletedProcess[str] | None = None
    try:
        with progress(label) if show_progress else contextlib.nullcontext():
            result = _run_bounded(command, shell=shell, cwd=cwd, capture=capture,
                                  timeout_s=timeout[0] if timeout else None)
            if result is None:
                assert timeout is not None
                raise BuildError(f"{failure}: it ran past {timeout[0]} s and was stopped; "
                                 f"{fix}, or raise `{timeout[1]}` if it needs longer")
            if result.returncode != 0:
                raise BuildError(f"{failure} (exit {result.returncode}); {fix}")
    except BuildError:
        if result is not None and capture:
            header = f"--- end of the output of {output_label}'s build ---\n" if output_label \
                else ""
            sys.stderr.write(header + _tail((result.stdout or "") + (result.stderr or "")))
        raise
    except FileNotFoundError as exc:  # the workdir, or the executable when shell=False
        raise BuildError(f"{failure}: {exc}; {fix}") from exc


def _run_bounded(command: str | list[str], *, shell: bool, cwd: Path | None, capture: bool,
                 timeout_s: int | None) -> subprocess.CompletedProcess[str] | None:
    """The finished command, or None when it ran past ``timeout_s`` (then it and everything
    it started are killed: a shell's children would otherwise keep running, and keep the
    output pipes open)."""
    pipe = subprocess.PIPE if capture else None
    # No stdin: a build that prompts fails at once instead of waiting for its timeout.
    process = subprocess.Popen(command, shell=shell, cwd=cwd, env=build_env(),
                               stdin=subprocess.DEVNULL, stdout=pipe, stderr=pipe, text=True,
                               start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _kill_group(process)
        return None
    except BaseException:  # Ctrl-C: its own session would not get the terminal's signal
        _kill_group(process)
        raise
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def _kill_group(process: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.communicate()


def _tail(output: str) -> str:
    lines = output.rstrip().splitlines()
    shown = lines[-_OUTPUT_TAIL_LINES:]
    prefix = [f"... ({len(lines) - len(shown)} earlier lines)"] if len(shown) < len(lines) else []
    return "\n".join([*prefix, *shown]) + "\n" if lines else ""


__all__ = ["BuildReport", "build_all", "build_component", "build_env", "componentize",
           "find_componentize_py"]
