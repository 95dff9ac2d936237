"""The `wasmgate` command line: up, watch, build, invoke, cache, componentize, new."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from pathlib import Path

import structlog

from bindings.types import Event, event_from_cloudevent_json
from gateway.app import App
from gateway.build import BuildReport, build_all, componentize
from gateway.cache import CompileCache, compile_cache_dir, format_size, max_cache_bytes
from gateway.check import check_manifest
from gateway.dead_letters import cli as dead_letters_cli
from gateway.errors import ConfigError, InvalidEvent, WasmgateError
from gateway.logs import configure_logging
from gateway.manifest import load_manifest
from gateway.redaction import redact_secrets
from gateway.templates import create_project, list_templates
from gateway.watch import ComponentWatcher
from gateway.workers import run_workers
from triggers.http import LOG_REQUESTS_ENV


async def _up(manifest: str, listen: str, *, watch: bool = False) -> None:
    app = App.load(manifest, listen=listen)
    await app.start()
    stop = asyncio.Event()
    watcher = asyncio.create_task(ComponentWatcher(app).run(stop)) if watch else None
    loop = asyncio.get_running_loop()
    signals = 0

    def on_signal() -> None:
        nonlocal signals
        signals += 1
        if signals > 1:  # a second signal exits at once; unsettled work is redelivered
            os_exit = __import__("os")._exit
            os_exit(130)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    await stop.wait()
    if watcher is not None:
        await watcher  # a rebuild under way ends first, so no pool is swapped in after stop
    structlog.get_logger("wasmgate").info("shutting down: stopping intake, finishing in-flight")
    await app.stop()


def _watch(manifest: str, listen: str) -> None:
    try:
        _print_build(build_all(manifest))
    except WasmgateError as exc:
        # Like `spin watch`: serve what was built before and rebuild on the next edit. A
        # component that was never built makes `up` fail below with a clear message.
        structlog.get_logger("wasmgate").error(
            "build failed; serving the previous build: fix the error and save to rebuild",
            error=str(exc))
    asyncio.run(_up(manifest, listen, watch=True))


def _print_build(report: BuildReport) -> None:
    def names(items: list[str]) -> str:
        return ", ".join(items) if items else "none"

    print(f"built: {names(report.built)}; unchanged, not rebuilt: {names(report.up_to_date)}")
    print(f"compiled: {names(report.compiled)}; "
          f"already compiled: {names(report.already_compiled)}")


def _cache(action: str, manifest: str | None) -> int:
    if action not in ("show", "clear"):
        if manifest is not None:
            raise ConfigError(f"unknown cache action {action!r}; use `wasmgate cache show` "
                              "or `wasmgate cache clear`, then the manifest")
        action, manifest = "show", action  # `wasmgate cache path/to/app`
    loaded = check_manifest(manifest or "wasmgate.toml")
    cache = CompileCache(compile_cache_dir(loaded))
    if action == "clear":
        deleted = cache.clear()
        print(f"deleted {len(deleted)} files from {cache.directory}")
        return 0
    limit = max_cache_bytes(loaded)  # a bad WASMGATE_CACHE_MAX_MB fails before any output
    entries = cache.entries()
    total = sum(e.size for e in entries)
    print(f"compile cache: {cache.directory}")
    print(f"{len(entries)} entries, {format_size(total)} of {format_size(limit)} (oldest are "
          "evicted past that)")
    for entry in entries:
        print(f"  {entry.path.name[:16]}…  {format_size(entry.size):>9}")
    return 0


def _read_event(event_file: str) -> Event:
    """The event in ``event_file`` (``-``: stdin), or a ConfigError naming the file."""
    if event_file == "-":
        raw = sys.stdin.buffer.read()
    else:
        try:
            raw = Path(event_file).read_bytes()
        except FileNotFoundError:
            raise ConfigError("event file does not exist; pass a CloudEvents JSON file "
                              "(`wasmgate new` writes a sample event.json) or - for stdin",
                              path=event_file) from None
        except OSError as exc:
            raise ConfigError(f"cannot read the event file: {exc.strerror or exc}",
                              path=event_file) from None
    try:
        return event_from_cloudevent_json(raw)
    except InvalidEvent as exc:
        raise ConfigError(f"not a CloudEvents JSON event: {exc}", path=event_file) from exc


async def _invoke(manifest: str, component: str, event_file: str) -> int:
    # The event first: a typo in its path should not wait for every component to compile.
    event = _read_event(event_file)
    # Then the name, listing the known ones, before anything compiles.
    load_manifest(manifest).component(component)
    app = App.load(manifest)
    app.capabilities.start()  # no trigger starts, but `publish` hands its sends to this loop
    outcome = await app.dispatcher.dispatch(component, event)
    await app.stop()
    if outcome.response is None:
        print(f"error ({outcome.error_kind}): {redact_secrets(outcome.error or '')}",
              file=sys.stderr)
        return 1
    print(f"status: {outcome.response.status}")
    for k, v in outcome.response.headers:
        print(f"{k}: {v}")
    print()
    sys.stdout.buffer.write(outcome.response.body + b"\n")
    return 0


def _new(template: str | None, name: str | None) -> int:
    templates = list_templates()
    if template is None:
        width = max((len(t.name) for t in templates), default=0)
        print("templates (wasmgate new <template> <name>):")
        for t in templates:
            print(f"  {t.name:<{width}}  {t.description}")
        return 0
    if name is None:
        raise ConfigError(f"missing the project name: wasmgate new {template} <name>")
    dest = Path(name)
    written = create_project(template, name, dest)
    for path in written:
        print(f"created {path}")
    print(f"\nnext: cd {dest} && wasmgate build && wasmgate invoke {name} --event event.json")
    return 0


_DESCRIPTION = """\
Run WebAssembly components on events from HTTP, cron and message brokers.

Every event becomes one typed call, handle(event) -> result<response, string>, into a
sandboxed component described by a wasmgate.toml manifest.
"""

_EPILOG = """\
a first project:
  wasmgate new python-http hello      # a handler, its manifest and a sample event
  cd hello && wasmgate build          # app.py -> build/hello.wasm
  wasmgate invoke hello --event event.json
  wasmgate up                         # then: curl 127.0.0.1:3000/hello?name=Ada

`wasmgate <command> --help` describes each command.
"""


class _HelpFormatter(argparse.HelpFormatter):
    # Wide enough that `componentize` and `-o FILE, --output FILE` keep their help on one line.
    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=28)


class _TopHelpFormatter(_HelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Keeps the line breaks of the top-level description and example epilog."""

    def add_argument(self, action: argparse.Action) -> None:
        super().add_argument(action)
        # argparse measures subcommand names at the group's indent, but prints them one level
        # deeper, so `componentize` would push its help onto a line of its own.
        if isinstance(action, argparse._SubParsersAction):
            longest = max((len(name) for name in action.choices), default=0)
            self._action_max_length = max(self._action_max_length,
                                          longest + self._current_indent + self._indent_increment)


_MANIFEST_HELP = "path to wasmgate.toml or its directory (default: ./wasmgate.toml)"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wasmgate", description=_DESCRIPTION, epilog=_EPILOG,
                                     formatter_class=_TopHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, title="commands",
                                metavar="<command>")

    up = sub.add_parser(
        "up", formatter_class=_HelpFormatter,
        help="run an app: compile its components, start its triggers",
        description="Load the manifest, compile its components (cached in .wasmgate/cache "
                    "after the first start) and serve its triggers until Ctrl-C. A first "
                    "Ctrl-C stops intake and finishes events in flight; a second exits at once.")
    up.add_argument("manifest", nargs="?", default="wasmgate.toml",
                    help=_MANIFEST_HELP)
    up.add_argument("--listen", default="127.0.0.1:3000", metavar="HOST:PORT",
                    help="address of the HTTP trigger (default: 127.0.0.1:3000)")
    up.add_argument("--workers", type=int, default=1, metavar="N",
                    help="worker processes sharing the port and the brokers' work "
                         "(default: 1; one process is GIL-bound at a few thousand calls/s)")
    up.add_argument("--log-requests", action="store_true",
                    help="log one line per HTTP request: method, path, status, duration, "
                         "component")

    watch = sub.add_parser(
        "watch", formatter_class=_HelpFormatter,
        help="build, run, and rebuild a component when its files change",
        description="Build what changed (as `wasmgate build`), serve the app (as `wasmgate "
                    "up`), then rebuild a component whenever its files change and swap it in "
                    "without dropping events: calls in flight finish on the old version, new "
                    "events go to the new one. A failed build keeps the old version serving "
                    "and prints the error. Edits to wasmgate.toml need a restart.")
    watch.add_argument("manifest", nargs="?", default="wasmgate.toml", help=_MANIFEST_HELP)
    watch.add_argument("--listen", default="127.0.0.1:3000", metavar="HOST:PORT",
                       help="address of the HTTP trigger (default: 127.0.0.1:3000)")
    watch.add_argument("--log-requests", action="store_true",
                       help="log one line per HTTP request (as in `up`)")

    build = sub.add_parser(
        "build", formatter_class=_HelpFormatter,
        help="build the components that changed and compile them",
        description="Check the whole manifest (trigger tables included), run each "
                    "[component.<name>.build] command whose inputs changed since its last "
                    "build (its files, the SDK, the WIT, the command and the environment "
                    "variables it names), independent components in parallel, with this "
                    "installation's wasmgate and componentize-py first on PATH; then compile "
                    "every component into the compile cache, so `up` and `invoke` start "
                    "without compiling.")
    build.add_argument("manifest", nargs="?", default="wasmgate.toml",
                       help=_MANIFEST_HELP)

    cache = sub.add_parser(
        "cache", formatter_class=_HelpFormatter,
        help="show or clear the compile cache",
        description="Show the compile cache of an app (WASMGATE_CACHE_DIR, else "
                    ".wasmgate/cache next to the manifest): its entries and size against "
                    "its limit (WASMGATE_CACHE_MAX_MB, else [application] "
                    "compile-cache-max-mb, else 1024). `wasmgate cache clear` deletes it.")
    cache.add_argument("action", nargs="?", default="show", metavar="show|clear",
                       help="show (the default) or clear")
    cache.add_argument("manifest", nargs="?", default=None, help=_MANIFEST_HELP)

    invoke = sub.add_parser(
        "invoke", formatter_class=_HelpFormatter,
        help="send one CloudEvents event to a component, print the reply",
        description="Send one event to a component without starting triggers, and print the "
                    "status, headers and body. The event is CloudEvents 1.0 JSON: `data` as "
                    "JSON or `data_base64`, plus wasmgate's `subject`, `headers`, `metadata` "
                    "and `key`. Exits 1 when the handler fails.")
    invoke.add_argument("component", help="component name from the manifest")
    invoke.add_argument("--event", required=True, metavar="FILE",
                        help="CloudEvents JSON file, or - for stdin")
    invoke.add_argument("--manifest", default="wasmgate.toml",
                        help=_MANIFEST_HELP)

    componentize = sub.add_parser(
        "componentize", formatter_class=_HelpFormatter,
        help="build a Python handler into a component (componentize-py)",
        description="Run componentize-py against the wasmgate:handler WIT world with the "
                    "current directory and the wasmgate_sdk module on the module path. Use it "
                    "as a component's build command: "
                    "command = \"wasmgate componentize app -o build/hello.wasm\".")
    componentize.add_argument("app", nargs="?", default="app",
                              help="the handler's Python module (default: app, i.e. app.py)")
    componentize.add_argument("-o", "--output", required=True, metavar="FILE",
                              help="where to write the component, e.g. build/hello.wasm")
    componentize.add_argument("-p", "--path", action="append", default=[], metavar="DIR",
                              help="one more directory of Python modules to bundle "
                                   "(repeatable; e.g. a vendored dependency)")
    componentize.add_argument("--world", choices=("wasmgate", "wasi-http"), default="wasmgate",
                              help="wasmgate: the wasmgate:handler world with wasmgate_sdk; "
                                   "wasi-http: the standard wasi:http/proxy world (runs on "
                                   "wasmtime serve and Spin too; docs/wasi-http.md)")

    new = sub.add_parser(
        "new", formatter_class=_HelpFormatter,
        help="create a handler project from a template; alone, list them",
        description="Create ./<name>/ with a handler, a wasmgate.toml and a sample event.json, "
                    "ready for `wasmgate build`. Without arguments, list the templates.")
    new.add_argument("template", nargs="?", help="template name, e.g. python-http")
    new.add_argument("name", nargs="?",
                     help="project name: the directory, the component and the HTTP route")
    dead_letters_cli.add_parser(sub, _HelpFormatter)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    configure_logging()
    if getattr(args, "log_requests", False):
        # The environment, so that worker processes (`--workers N`) log requests too.
        os.environ[LOG_REQUESTS_ENV] = "1"
    try:
        if args.command == "up" and args.workers > 1:
            return run_workers(args.manifest, args.listen, args.workers)
        if args.command == "up":
            asyncio.run(_up(args.manifest, args.listen))
        elif args.command == "watch":
            _watch(args.manifest, args.listen)
        elif args.command == "build":
            _print_build(build_all(args.manifest))
        elif args.command == "cache":
            return _cache(args.action, args.manifest)
        elif args.command == "componentize":
            componentize(args.app, Path(args.output), cwd=Path.cwd(),
                         paths=[Path(p).resolve() for p in args.path], world=args.world)
        elif args.command == "new":
            return _new(args.template, args.name)
        elif args.command == "dead-letters":
            return dead_letters_cli.run(args)
        else:
            return asyncio.run(_invoke(args.manifest, args.component, args.event))
    except WasmgateError as exc:
        # A message may quote a secret (a handler's error, a URL); the App has told the
        # redaction which values are secret by the time anything can fail with one.
        print(f"wasmgate: {redact_secrets(str(exc))}", file=sys.stderr)
        return 2
    return 0


__all__ = ["main"]


if __name__ == "__main__":
    sys.exit(main())
