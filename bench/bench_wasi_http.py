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
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_http import _cpu_seconds, _free_port, _get  # noqa: E402
from bench.http_load import Result  # noqa: E402

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
    """Start ``target`` in its own process, load it, stop it; return the load result, the
    server's CPU µs per request and the body it answered."""
    listen = f"127.0.0.1:{_free_port()}"
    root = Path(tempfile.mkdtemp(prefix="bench-wasi-http-"))
    server = subprocess.Popen(_server_command(target, listen, root, wasm, args),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 600  # the first gateway run compiles the component
        while True:
            try:
                body = _get(listen, PATH)
                if body != b"no route\n":
                    break
                time.sleep(0.1)
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{target.name} server did not start") from None
                time.sleep(0.1)
        cpu_before = _cpu_seconds(server.pid)
        load = subprocess.run(
            [sys.executable, str(ROOT / "bench/http_load.py"), listen, PATH,
             "--seconds", str(args.seconds), "--warmup", str(args.warmup),
             "--connections", str(args.connections)],
            check=True, capture_output=True, text=True)
        result = msgspec.json.decode(load.stdout, type=Result)
        cpu_us = (_cpu_seconds(server.pid) - cpu_before) / result.total * 1e6
        return result, cpu_us, body
    finally:
        server.terminate()
        server.wait()


def main() -> None:
    names = [t.name for t in TARGETS]
    parser = argparse.ArgumentParser(description="wasi:http hello: wasmtime serve, wasmgate "
                                                 "fresh and pooled, plain ASGI")
    parser.add_argument("--seconds", type=float, default=4.0, help="measured time per run")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2, help="runs per server, interleaved")
    parser.add_argument("--spares", type=int, default=2, help="spare-instances when fresh")
    parser.add_argument("--targets", default=",".join(names),
                        help="comma-separated subset of: " + ", ".join(names))
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--listen", help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--wasm", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.listen, args.root, args.wasm, args.spares)
        return
    from tests.fixtures.build import build_wasi_http_handler

    wasm = str(build_wasi_http_handler("hello"))
    wanted = [t.strip() for t in args.targets.split(",")]
    if unknown := set(wanted) - set(names):
        raise SystemExit(f"unknown targets {sorted(unknown)}; known: {', '.join(names)}")
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
    results: dict[str, list[Result]] = {t.name: [] for t in targets}
    cpu: dict[str, list[float]] = {t.name: [] for t in targets}
    bodies: set[bytes] = set()
    for _ in range(args.rounds):  # interleaved, so drift in machine load hits all alike
        for target in targets:
            result, cpu_us, body = measure(target, wasm, args)
            bodies.add(body)
            results[target.name].append(result)
            cpu[target.name].append(cpu_us)
            print(f"  {target.name:<16} {result.rps:8.0f} req/s  p50 {result.p50_ms:6.2f} ms  "
                  f"p99 {result.p99_ms:6.2f} ms  cpu {cpu_us:6.0f} µs/req  errors "
                  f"{result.errors}  loadavg {result.loadavg[0]:.2f}", flush=True)
    if len(bodies) != 1:
        raise SystemExit(f"the servers answered differently: {bodies}")
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
