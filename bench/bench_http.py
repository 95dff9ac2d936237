"""HTTP requests/s, latency and server CPU per request: plain ASGI against the gateway with
a Wasm handler, pooled and fresh, and the demo's hello route (config + kv host calls),
with the wasmtime-py executor (before, bench/_baseline.py) and the native one (after).

Every server runs in its own process (one event loop, one worker), loaded in turn by the
same generator (bench/http_load.py, another process) with N keep-alive connections:

- plain ASGI: one function, served by ``triggers.http.uvicorn_config`` (the gateway's own
  protocol, timeouts, httptools): ``/const`` answers ``ok``, ``/hello`` does the demo
  handler's work (a variable and a SQLite key-value read) in Python.
- wasm const pooled / fresh: the echo fixture's ``const`` mode (no host call) behind the
  gateway's HTTP trigger, pooled instances or a fresh one per request.
- demo hello: examples/demo/handlers/hello (pooled; config.get + kv.get host calls).

Each wasm server runs twice: on this tree (native) and on the baseline tree with its own
interpreter (wasmtime-py). CPU µs per request is the server process's CPU time (all its
threads) divided by the requests it answered: steadier than req/s on a shared machine.

Run: .venv/bin/python bench/bench_http.py [--targets a,b] [--rounds N]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# A server of the baseline side imports its gateway from BENCH_TREE (bench/_baseline.py).
sys.path.insert(0, os.environ.get("BENCH_TREE", str(ROOT)))
sys.path.insert(1, str(ROOT))

from bench._baseline import Side, baseline_side, current_side  # noqa: E402
from bench.http_load import Result  # noqa: E402
from bench.http_rounds import (  # noqa: E402
    add_load_options,
    free_port,
    measure_server,
    run_rounds,
    wanted_names,
)
from bindings.host.kv import SqliteKeyValue  # noqa: E402

HELLO_WASM = ROOT / "examples/demo/build/hello.wasm"
GREETING = "hello from wasm"
MANIFEST = """
[application]
name = "bench"
[variables]
greeting = {{ default = "{greeting}" }}
[component.hello]
source = "{hello}"
key-value-stores = ["default"]
[component.pooled]
source = "{echo}"
[component.fresh]
source = "{echo}"
isolation = "fresh"
{spares_line}
[[trigger.http]]
route = "/hello"
component = "hello"
[[trigger.http]]
route = "/pooled/const"
component = "pooled"
[[trigger.http]]
route = "/fresh/const"
component = "fresh"
"""


@dataclass(frozen=True)
class Target:
    name: str
    side: str  # "plain", "native" or "wasmtime-py"
    path: str


TARGETS = [
    Target("plain ASGI /const", "plain", "/const"),
    Target("wasm pooled (wasmtime-py)", "wasmtime-py", "/pooled/const"),
    Target("wasm pooled (native)", "native", "/pooled/const"),
    Target("wasm fresh (wasmtime-py)", "wasmtime-py", "/fresh/const"),
    Target("wasm fresh (native)", "native", "/fresh/const"),
    Target("plain ASGI /hello", "plain", "/hello"),
    Target("demo hello (wasmtime-py)", "wasmtime-py", "/hello"),
    Target("demo hello (native)", "native", "/hello"),
]


def _hello_body(kv: SqliteKeyValue, variables: dict[str, str]) -> bytes:
    """The demo hello handler's work, in Python."""
    greeting = variables.get("greeting") or "hello"
    ticks = kv.get("ticks") or b"0"
    return f"{greeting}! cron has ticked {ticks.decode()} times\n".encode()


async def _serve_plain(listen: str, kv: SqliteKeyValue, *, stock: bool) -> None:
    import uvicorn

    from triggers.http import uvicorn_config

    variables = {"greeting": GREETING}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):  # the gateway reads the body too
            pass
        body = _hello_body(kv, variables) if scope["path"] == "/hello" else b"ok\n"
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    if stock:
        host, _, port = listen.rpartition(":")
        config = uvicorn.Config(app, host=host, port=int(port), log_config=None,
                                access_log=False, lifespan="off", http="httptools")
    else:
        config = uvicorn_config(app, listen)
    await uvicorn.Server(config).serve()


async def _serve_gateway_wasm(listen: str, root: Path, echo: str, spares: int) -> None:
    from gateway.app import App

    (root / "wasmgate.toml").write_text(MANIFEST.format(
        greeting=GREETING, hello=HELLO_WASM, echo=echo,
        spares_line=f"spare-instances = {spares}" if spares else ""))
    app = App.load(root / "wasmgate.toml", listen=listen)
    app.capabilities.store("default").set("ticks", b"42")
    await app.start()
    await asyncio.Event().wait()


def serve(side: str, listen: str, root: Path, echo: str, spares: int) -> None:
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    kv = SqliteKeyValue(root / "plain-kv.sqlite")
    kv.set("ticks", b"42")
    if side == "plain":
        asyncio.run(_serve_plain(listen, kv, stock=False))
    else:
        asyncio.run(_serve_gateway_wasm(listen, root, echo, spares))


def measure(target: Target, sides: dict[str, Side], echo: str,
            args: argparse.Namespace) -> tuple[Result, float, bytes]:
    """Run ``target``'s server in its own process (on its side's tree and interpreter) and
    load it: the load result, its CPU µs per request and a body."""
    listen = f"127.0.0.1:{free_port()}"
    root = Path(tempfile.mkdtemp(prefix="bench-http-"))
    side = sides.get(target.side, sides["native"])
    env = {**os.environ, "BENCH_TREE": str(side.tree), "PYTHONPATH": str(side.tree)}
    command = [side.python, __file__, "--serve", target.side, "--listen", listen,
               "--root", str(root), "--echo", echo,
               # The baseline's manifest has no `spare-instances`.
               "--spares", str(0 if target.side == "wasmtime-py" else args.spares)]
    return measure_server(target.name, command, listen, target.path, args, env=env)


def main() -> None:
    names = [t.name for t in TARGETS]
    parser = argparse.ArgumentParser(description="HTTP: wasmgate + wasm vs plain ASGI")
    add_load_options(parser, names)
    parser.add_argument("--echo", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.listen, args.root, args.echo, args.spares)
        return
    from tests.fixtures.build import build_handler

    echo = str(build_handler("echo"))
    if not HELLO_WASM.exists():
        subprocess.run([str(Path(sys.executable).with_name("wasmgate")), "build"],
                       cwd=ROOT / "examples/demo", check=True,
                       env={**os.environ, "PATH": f"{Path(sys.executable).parent}:"
                            f"{os.environ['PATH']}"})
    wanted = wanted_names(args, names)
    targets = [t for t in TARGETS if t.name in wanted]
    sides = {"native": current_side()}
    if any(t.side == "wasmtime-py" for t in targets):
        sides["wasmtime-py"] = baseline_side()
    print(f"loadavg before: {os.getloadavg()}  cores: {os.cpu_count()}  "
          f"connections: {args.connections}  {args.rounds} x {args.seconds}s per server")
    measured = run_rounds([t.name for t in targets], args.rounds,
                          lambda i: measure(targets[i], sides, echo, args),
                          check_same=lambda i: targets[i].path)
    results, cpu = measured.results, measured.cpu
    plain = {t.path: t.name for t in targets if t.side == "plain"}
    print("\n| server | req/s | p50 ms | p99 ms | CPU µs/req | CPU vs plain ASGI |")
    print("|---|---:|---:|---:|---:|---:|")
    for target in targets:
        runs = results[target.name]
        cpu_us = statistics.median(cpu[target.name])
        base = plain.get(target.path) or plain.get("/const")
        ratio = (f"{cpu_us / statistics.median(cpu[base]):.1f}x" if base else "")
        print(f"| {target.name} | {statistics.median(r.rps for r in runs):.0f} | "
              f"{statistics.median(r.p50_ms for r in runs):.2f} | "
              f"{statistics.median(r.p99_ms for r in runs):.2f} | {cpu_us:.0f} | {ratio} |")
    print(f"\nloadavg after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
