"""HTTP requests/s and latency of the demo's hello route: wasmgate with the componentize-py
handler against a plain Python ASGI app doing the same work on the same uvicorn config.

Three servers, each in its own process on one core's worth of event loop, loaded in turn by
the same generator (bench/http_load.py, another process) with N keep-alive connections:

- plain ASGI: one function; reads the greeting from a dict and the tick counter from the
  same SQLite key-value store class, formats the same body. Served by
  ``triggers.http.uvicorn_config`` (the gateway's own protocol, timeouts, httptools).
- gateway + Python: wasmgate's HTTP trigger and dispatcher, the handler a Python coroutine
  doing that work; the gap to plain is the gateway's own cost (event, dispatch, routing).
- gateway + wasm: ``wasmgate`` serving examples/demo/handlers/hello (pooled instances).
- plain stock uvicorn: the plain app on uvicorn's own httptools protocol, to show what the
  gateway's protocol (slow-client deadlines, one send per response) costs or saves.

Run: .venv/bin/python bench/bench_http.py   (builds the demo if needed; ~1 minute)
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
from pathlib import Path
from typing import Any

import msgspec

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.http_load import Result  # noqa: E402
from bindings.host.kv import SqliteKeyValue  # noqa: E402
from bindings.types import Event, Response  # noqa: E402

HELLO_WASM = ROOT / "examples/demo/build/hello.wasm"
GREETING = "hello from wasm"
TARGETS = ("plain ASGI", "gateway + Python", "gateway + wasm", "plain stock uvicorn")
MANIFEST = """
[application]
name = "bench"
[variables]
greeting = {{ default = "{greeting}" }}
[component.hello]
source = "{wasm}"
key-value-stores = ["default"]
[[trigger.http]]
route = "/hello"
component = "hello"
"""


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
        body = b"ok\n" if scope["path"] == "/healthz" else _hello_body(kv, variables)
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


async def _serve_gateway_python(listen: str, kv: SqliteKeyValue) -> None:
    from gateway.dispatch import Dispatcher
    from triggers.base import TriggerContext
    from triggers.http import build_http_trigger

    variables = {"greeting": GREETING}

    async def hello(component: str, event: Event) -> Response:
        return Response(status=200, headers=[("content-type", "text/plain")],
                        body=_hello_body(kv, variables))

    trigger = build_http_trigger({"route": "/hello", "component": "hello"}, context=TriggerContext(
        manifest_path="bench", field="trigger.http[0]", listen=listen))
    await trigger.start(Dispatcher(hello).dispatch)
    await asyncio.Event().wait()


async def _serve_gateway_wasm(listen: str, root: Path) -> None:
    from gateway.app import App

    (root / "wasmgate.toml").write_text(MANIFEST.format(greeting=GREETING, wasm=HELLO_WASM))
    app = App.load(root / "wasmgate.toml", listen=listen)
    app.capabilities.store("default").set("ticks", b"42")
    await app.start()
    await asyncio.Event().wait()


def serve(target: str, listen: str, root: Path) -> None:
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    kv = SqliteKeyValue(root / "plain-kv.sqlite")
    kv.set("ticks", b"42")
    if target.startswith("plain"):
        asyncio.run(_serve_plain(listen, kv, stock="stock" in target))
    elif target == "gateway + Python":
        asyncio.run(_serve_gateway_python(listen, kv))
    else:
        asyncio.run(_serve_gateway_wasm(listen, root))


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


def measure(target: str, args: argparse.Namespace) -> tuple[Result, float, bytes]:
    """Start ``target`` in its own process, load it, stop it; return the load result, the
    server's CPU µs per request (steadier than req/s on a shared machine) and a body."""
    listen = f"127.0.0.1:{_free_port()}"
    root = Path(tempfile.mkdtemp(prefix="bench-http-"))
    server = subprocess.Popen([sys.executable, __file__, "--serve", target, "--listen", listen,
                               "--root", str(root)])
    try:
        deadline = time.monotonic() + 60  # the wasm server compiles on its first run
        while True:
            try:
                body = _get(listen, "/hello")
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{target} server did not start") from None
                time.sleep(0.1)
        cpu_before = _cpu_seconds(server.pid)
        load = subprocess.run(
            [sys.executable, str(ROOT / "bench/http_load.py"), listen, "/hello",
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
    parser = argparse.ArgumentParser(description="HTTP: wasmgate + wasm vs plain ASGI")
    parser.add_argument("--seconds", type=float, default=4.0, help="measured time per run")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2, help="runs per server, interleaved")
    parser.add_argument("--targets", default=",".join(TARGETS),
                        help="comma-separated subset of: " + ", ".join(TARGETS))
    parser.add_argument("--serve", choices=TARGETS, help=argparse.SUPPRESS)
    parser.add_argument("--listen", help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.listen, args.root)
        return
    if not HELLO_WASM.exists():
        subprocess.run([str(Path(sys.executable).with_name("wasmgate")), "build"],
                       cwd=ROOT / "examples/demo", check=True,
                       env={**os.environ, "PATH": f"{Path(sys.executable).parent}:"
                            f"{os.environ['PATH']}"})
    print(f"loadavg before: {os.getloadavg()}  cores: {os.cpu_count()}  "
          f"connections: {args.connections}  {args.rounds} x {args.seconds}s per server")
    targets = [t.strip() for t in args.targets.split(",")]
    if unknown := set(targets) - set(TARGETS):
        raise SystemExit(f"unknown targets {sorted(unknown)}; known: {', '.join(TARGETS)}")
    results: dict[str, list[Result]] = {t: [] for t in targets}
    cpu: dict[str, list[float]] = {t: [] for t in targets}
    bodies = {}
    for _ in range(args.rounds):  # interleaved, so drift in machine load hits all alike
        for target in targets:
            result, cpu_us, bodies[target] = measure(target, args)
            results[target].append(result)
            cpu[target].append(cpu_us)
            print(f"  {target:<20} {result.rps:8.0f} req/s  p50 {result.p50_ms:6.2f} ms  "
                  f"p99 {result.p99_ms:6.2f} ms  cpu {cpu_us:5.0f} µs/req  errors {result.errors}  "
                  f"loadavg {result.loadavg[0]:.2f}", flush=True)
    if len(set(bodies.values())) != 1:
        raise SystemExit(f"the servers answered differently: {bodies}")
    if "plain ASGI" not in results:
        raise SystemExit("the table compares against `plain ASGI`: include it in --targets")
    plain_rps = statistics.median(r.rps for r in results["plain ASGI"])
    plain_cpu = statistics.median(cpu["plain ASGI"])
    print(f"\n{'server':<20} | {'req/s':>7} | {'p50 ms':>6} | {'p99 ms':>6} | "
          f"{'req/s vs plain':>14} | {'CPU µs/req':>10} | {'plain/this CPU':>14}")
    print("-" * 99)
    for target, runs in results.items():
        rps = statistics.median(r.rps for r in runs)
        p50 = statistics.median(r.p50_ms for r in runs)
        p99 = statistics.median(r.p99_ms for r in runs)
        cpu_us = statistics.median(cpu[target])
        print(f"{target:<20} | {rps:>7.0f} | {p50:>6.2f} | {p99:>6.2f} | "
              f"{rps / plain_rps:>14.0%} | {cpu_us:>10.0f} | {plain_cpu / cpu_us:>14.0%}")
    print(f"\nloadavg after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
