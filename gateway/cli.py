"""The `wasmgate` command line: up, build, invoke."""

from __future__ import annotations

import argparse
import asyncio
import signal
import subprocess
import sys
from pathlib import Path

import msgspec
import structlog

from bindings.types import event_from_cloudevent_json
from gateway.app import App
from gateway.errors import BuildError, ConfigError, WasmgateError
from gateway.manifest import load_manifest


def _configure_logging() -> None:
    renderer = (structlog.dev.ConsoleRenderer() if sys.stderr.isatty()
                else structlog.processors.JSONRenderer())
    structlog.configure(processors=[
        structlog.contextvars.merge_contextvars, structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso"), renderer,
    ], logger_factory=structlog.PrintLoggerFactory(sys.stderr))


async def _up(manifest: str, listen: str) -> None:
    app = App.load(manifest, listen=listen)
    await app.start()
    stop = asyncio.Event()
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
    structlog.get_logger("wasmgate").info("shutting down: stopping intake, finishing in-flight")
    await app.stop()


def _build(manifest: str) -> None:
    loaded = load_manifest(manifest)
    for name, spec in loaded.components.items():
        if spec.build is None:
            continue
        workdir = loaded.build_workdir(name)
        print(f"building {name}: {spec.build.command}", file=sys.stderr)
        result = subprocess.run(spec.build.command, shell=True, cwd=workdir, check=False)
        if result.returncode != 0:
            raise BuildError(f"build of component `{name}` failed (exit {result.returncode}); "
                             f"command: {spec.build.command} in {workdir}")


async def _invoke(manifest: str, component: str, event_file: str) -> int:
    app = App.load(manifest)
    raw = sys.stdin.buffer.read() if event_file == "-" else Path(event_file).read_bytes()
    try:
        event = event_from_cloudevent_json(raw)
    except (msgspec.ValidationError, msgspec.DecodeError, ValueError) as exc:
        raise ConfigError(f"not a CloudEvents JSON event: {exc}", path=event_file) from exc
    outcome = await app.dispatcher.dispatch(component, event)
    await app.stop()
    if outcome.response is None:
        print(f"error ({outcome.error_kind}): {outcome.error}", file=sys.stderr)
        return 1
    print(f"status: {outcome.response.status}")
    for k, v in outcome.response.headers:
        print(f"{k}: {v}")
    print()
    sys.stdout.buffer.write(outcome.response.body + b"\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="wasmgate",
        description="Run WebAssembly components on events from HTTP, cron and message brokers.")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="run the app described by a manifest")
    up.add_argument("manifest", nargs="?", default="wasmgate.toml",
                    help="path to wasmgate.toml or its directory (default: ./wasmgate.toml)")
    up.add_argument("--listen", default="127.0.0.1:3000", help="HTTP address, HOST:PORT")
    build = sub.add_parser("build", help="run every component's build command")
    build.add_argument("manifest", nargs="?", default="wasmgate.toml")
    invoke = sub.add_parser("invoke", help="run one CloudEvents JSON event through a component")
    invoke.add_argument("component", help="component name from the manifest")
    invoke.add_argument("--event", required=True, help="CloudEvents JSON file, or - for stdin")
    invoke.add_argument("--manifest", default="wasmgate.toml")
    args = parser.parse_args(argv)
    _configure_logging()
    try:
        if args.command == "up":
            asyncio.run(_up(args.manifest, args.listen))
        elif args.command == "build":
            _build(args.manifest)
        else:
            return asyncio.run(_invoke(args.manifest, args.component, args.event))
    except WasmgateError as exc:
        print(f"wasmgate: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
