"""One standard wasi:http hello component, served four ways, under one load generator:
req/s, latency and server CPU µs per request.

- ``wasmtime serve``: the reference host (Rust, a fresh instance per request), when the
  wasmtime CLI 48.0.8 is installed (``WASMTIME`` or ~/.cache/wasmgate/tools/bin/wasmtime);
  otherwise that row is skipped with a note.
- wasmgate ``isolation = "fresh"`` (with ``spare-instances``) and ``"pooled"``: the same
  file behind the gateway's HTTP trigger.
- plain ASGI: a function answering ``ok`` on the gateway's own uvicorn settings.

The component is tests/fixtures/handlers-wasi-http/hello (componentize-py against
``wasi:http/proxy``). Every server runs in its own process, loaded in turn by
bench/http_load.py (another process) with N keep-alive connections; CPU µs per request is
the server process's CPU time (all its threads) over the requests it answered.

Run: .venv/bin/python bench/bench_wasi_http.py [--targets a,b] [--rounds N]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.http_load import Result  # noqa: E402
from bench.http_rounds import (  # noqa: E402
    add_load_options,
    free_port,
    measure_server,
    run_rounds,
    wanted_names,
)

MANIFEST = """
[application]
name = "bench-wasi-http"
[component.hello]
source = "{wasm}"
isolation = "{isolation}"
{spares_line}
[[trigger.http]]
route = "/..."
component = "hello"
"""


@dataclass(frozen=True)
class Target:
    name: str
    kind: str  # "wasmtime-serve", "fresh", "pooled" or "plain"


TARGETS = [
    Target("wasmtime serve", "wasmtime-serve"),
    Target("wasmgate fresh", "fresh"),
    Target("wasmgate pooled", "pooled"),
    Target("plain ASGI", "plain"),
]
PATH = "/hello"


def wasmtime_cli() -> str | None:
    """The wasmtime CLI to compare with, or None."""
    for candidate in (os.environ.get("WASMTIME"),
                      str(Path.home() / ".cache/wasmgate/tools/bin/wasmtime"),
                      shutil.which("wasmtime")):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


async def _serve_plain(listen: str) -> None:
    import uvicorn

    from triggers.http import uvicorn_config

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        body = b"ok\n"
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    await uvicorn.Server(uvicorn_config(app, listen)).serve()


async def _serve_gateway(listen: str, root: Path, wasm: str, isolation: str,
                         spares: int) -> None:
    from gateway.app import App

    spares_line = f"spare-instances = {spares}" if isolation == "fresh" and spares else ""
    (root / "wasmgate.toml").write_text(MANIFEST.format(wasm=wasm, isolation=isolation,
                                                        spares_line=spares_line))
    app = App.load(root / "wasmgate.toml", listen=listen)
    await app.start()
    await asyncio.Event().wait()


def serve(kind: str, listen: str, root: Path, wasm: str, spares: int) -> None:
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    if kind == "plain":
        asyncio.run(_serve_plain(listen))
    else:
        asyncio.run(_serve_gateway(listen, root, wasm, kind, spares))


def _server_command(target: Target, listen: str, root: Path, wasm: str,
                    args: argparse.Namespace) -> list[str]:
    if target.kind == "wasmtime-serve":
        cli = wasmtime_cli()
        assert cli is not None
        # -S cli: componentize-py's runtime imports wasi:cli (stdio, environment).
        return [cli, "serve", "--addr", listen, "-S", "cli", wasm]
    return [sys.executable, __file__, "--serve", target.kind, "--listen", listen,
            "--root", str(root), "--wasm", wasm, "--spares", str(args.spares)]


def measure(target: Target, wasm: str, args: argparse.Namespace) -> tuple[Result, float, bytes]:
    """Run ``target``'s server in its own process and load it: the load result, its CPU µs
    per request and the body it answered."""
    listen = f"127.0.0.1:{free_port()}"
    root = Path(tempfile.mkdtemp(prefix="bench-wasi-http-"))
    return measure_server(target.name, _server_command(target, listen, root, wasm, args),
                          listen, PATH, args, quiet=True)


def main() -> None:
    names = [t.name for t in TARGETS]
    parser = argparse.ArgumentParser(description="wasi:http hello: wasmtime serve, wasmgate "
                                                 "fresh and pooled, plain ASGI")
    add_load_options(parser, names)
    parser.add_argument("--wasm", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.listen, args.root, args.wasm, args.spares)
        return
    from tests.fixtures.build import build_wasi_http_handler

    wasm = str(build_wasi_http_handler("hello"))
    wanted = wanted_names(args, names)
    targets = [t for t in TARGETS if t.name in wanted]
    notes = []
    if any(t.kind == "wasmtime-serve" for t in targets) and wasmtime_cli() is None:
        targets = [t for t in targets if t.kind != "wasmtime-serve"]
        notes.append("wasmtime serve: skipped, no wasmtime CLI (set WASMTIME, or `cargo "
                     "install --locked --root ~/.cache/wasmgate/tools wasmtime-cli@48.0.8`)")
    print(f"loadavg before: {os.getloadavg()}  cores: {os.cpu_count()}  "
          f"connections: {args.connections}  {args.rounds} x {args.seconds}s per server")
    for note in notes:
        print(f"  note: {note}")
    measured = run_rounds([t.name for t in targets], args.rounds,
                          lambda i: measure(targets[i], wasm, args), check_same=lambda i: PATH)
    results, cpu = measured.results, measured.cpu
    reference = "wasmtime serve" if "wasmtime serve" in results else None
    print("\n| server | req/s | p50 ms | p99 ms | CPU µs/req | req/s vs wasmtime serve |")
    print("|---|---:|---:|---:|---:|---:|")
    for target in targets:
        runs = results[target.name]
        rps = statistics.median(r.rps for r in runs)
        ratio = ""
        if reference is not None:
            ratio = f"{rps / statistics.median(r.rps for r in results[reference]):.2f}x"
        print(f"| {target.name} | {rps:.0f} | {statistics.median(r.p50_ms for r in runs):.2f} "
              f"| {statistics.median(r.p99_ms for r in runs):.2f} | "
              f"{statistics.median(cpu[target.name]):.0f} | {ratio} |")
    for note in notes:
        print(f"\n{note}")
    print(f"\nloadavg after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
