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
import socket
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
# A server of the baseline side imports its gateway from BENCH_TREE (bench/_baseline.py).
sys.path.insert(0, os.environ.get("BENCH_TREE", str(ROOT)))
sys.path.insert(1, str(ROOT))

from bench._baseline import Side, baseline_side, current_side  # noqa: E402
from bench.http_load import Result  # noqa: E402
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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(listen: str, path: str) -> bytes:
    host, _, port = listen.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nhost: b\r\nconnection: close\r\n\r\n".encode())
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).split(b"\r\n\r\n", 1)[1]


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(target: Target, sides: dict[str, Side], echo: str,
            args: argparse.Namespace) -> tuple[Result, float, bytes]:
    """Start ``target`` in its own process, load it, stop it; return the load result, the
    server's CPU µs per request (steadier than req/s on a shared machine) and a body."""
    listen = f"127.0.0.1:{_free_port()}"
    root = Path(tempfile.mkdtemp(prefix="bench-http-"))
    side = sides.get(target.side, sides["native"])
    env = {**os.environ, "BENCH_TREE": str(side.tree), "PYTHONPATH": str(side.tree)}
    server = subprocess.Popen([side.python, __file__, "--serve", target.side, "--listen",
                               listen, "--root", str(root), "--echo", echo,
                               # The baseline's manifest has no `spare-instances`.
                               "--spares", str(0 if target.side == "wasmtime-py"
                                               else args.spares)], env=env)
    try:
        deadline = time.monotonic() + 600  # the wasm server compiles on its first run
        while True:
            try:
                body = _get(listen, target.path)
                # The listener is up before every route is: wait for this one.
                if body != b"no route\n":
                    break
                time.sleep(0.1)
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{target.name} server did not start") from None
                time.sleep(0.1)
        cpu_before = _cpu_seconds(server.pid)
        load = subprocess.run(
            [sys.executable, str(ROOT / "bench/http_load.py"), listen, target.path,
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
    parser = argparse.ArgumentParser(description="HTTP: wasmgate + wasm vs plain ASGI")
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
    wanted = [t.strip() for t in args.targets.split(",")]
    if unknown := set(wanted) - set(names):
        raise SystemExit(f"unknown targets {sorted(unknown)}; known: {', '.join(names)}")
    targets = [t for t in TARGETS if t.name in wanted]
    sides = {"native": current_side()}
    if any(t.side == "wasmtime-py" for t in targets):
        sides["wasmtime-py"] = baseline_side()
    print(f"loadavg before: {os.getloadavg()}  cores: {os.cpu_count()}  "
          f"connections: {args.connections}  {args.rounds} x {args.seconds}s per server")
    results: dict[str, list[Result]] = {t.name: [] for t in targets}
    cpu: dict[str, list[float]] = {t.name: [] for t in targets}
    bodies: dict[str, set[bytes]] = {}
    for _ in range(args.rounds):  # interleaved, so drift in machine load hits all alike
        for target in targets:
            result, cpu_us, body = measure(target, sides, echo, args)
            bodies.setdefault(target.path, set()).add(body)
            results[target.name].append(result)
            cpu[target.name].append(cpu_us)
            print(f"  {target.name:<26} {result.rps:8.0f} req/s  p50 {result.p50_ms:6.2f} ms  "
                  f"p99 {result.p99_ms:6.2f} ms  cpu {cpu_us:5.0f} µs/req  errors "
                  f"{result.errors}  loadavg {result.loadavg[0]:.2f}", flush=True)
    for path, seen in bodies.items():
        if len(seen) != 1:
            raise SystemExit(f"the servers answered {path} differently: {seen}")
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
