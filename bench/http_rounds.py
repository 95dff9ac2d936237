"""What the HTTP benchmarks (bench_http.py, bench_wasi_http.py) share: their load options,
one server measured under bench/http_load.py, and the interleaved rounds over all servers.

A server runs in a process of its own; its CPU µs per request (all its threads, over every
request it answered) is the number that holds up on a shared machine, beside req/s.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import msgspec

from bench.http_load import Result

ROOT = Path(__file__).resolve().parents[1]


def add_load_options(parser: argparse.ArgumentParser, names: Sequence[str]) -> None:
    """The options every HTTP benchmark takes, and the hidden ones its server process gets."""
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


def wanted_names(args: argparse.Namespace, names: Sequence[str]) -> list[str]:
    """The ``--targets`` asked for; exits naming the known ones on a typo."""
    wanted = [t.strip() for t in args.targets.split(",")]
    if unknown := set(wanted) - set(names):
        raise SystemExit(f"unknown targets {sorted(unknown)}; known: {', '.join(names)}")
    return wanted


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(listen: str, path: str) -> bytes:
    """The body of one ``GET path`` (a new connection, closed after)."""
    host, _, port = listen.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nhost: b\r\nconnection: close\r\n\r\n".encode())
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).split(b"\r\n\r\n", 1)[1]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure_server(name: str, command: list[str], listen: str, path: str,
                   args: argparse.Namespace, *, env: dict[str, str] | None = None,
                   quiet: bool = False) -> tuple[Result, float, bytes]:
    """Start ``command`` (a server on ``listen``), wait until it answers ``path``, load it,
    stop it; return the load result, its CPU µs per request and the body it answered.
    ``quiet`` drops the server's stderr too (``wasmtime serve`` logs every request)."""
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL if quiet else None)
    try:
        deadline = time.monotonic() + 600  # a gateway's first run compiles its components
        while True:
            try:
                body = http_get(listen, path)
                # The listener is up before every route is: wait for this one.
                if body != b"no route\n":
                    break
                time.sleep(0.1)
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{name} server did not start") from None
                time.sleep(0.1)
        cpu_before = cpu_seconds(server.pid)
        load = subprocess.run(
            [sys.executable, str(ROOT / "bench/http_load.py"), listen, path,
             "--seconds", str(args.seconds), "--warmup", str(args.warmup),
             "--connections", str(args.connections)],
            check=True, capture_output=True, text=True)
        result = msgspec.json.decode(load.stdout, type=Result)
        cpu_us = (cpu_seconds(server.pid) - cpu_before) / result.total * 1e6
        return result, cpu_us, body
    finally:
        server.terminate()
        server.wait()


class Rounds(msgspec.Struct):
    """Every run of every server: load results and CPU µs per request, by server name."""

    results: dict[str, list[Result]]
    cpu: dict[str, list[float]]


def run_rounds(names: Sequence[str], rounds: int,
               measure: Callable[[int], tuple[Result, float, bytes]],
               *, check_same: Callable[[int], str]) -> Rounds:
    """Measure each server ``rounds`` times, interleaved so drift in the machine's load hits
    all alike; ``measure(i)`` runs server ``names[i]``. Servers with the same
    ``check_same(i)`` must answer the same body (exits if they do not)."""
    runs = Rounds({n: [] for n in names}, {n: [] for n in names})
    bodies: dict[str, set[bytes]] = {}
    width = max(len(n) for n in names)
    for _ in range(rounds):
        for i, name in enumerate(names):
            result, cpu_us, body = measure(i)
            bodies.setdefault(check_same(i), set()).add(body)
            runs.results[name].append(result)
            runs.cpu[name].append(cpu_us)
            print(f"  {name:<{width}} {result.rps:8.0f} req/s  p50 {result.p50_ms:6.2f} ms  "
                  f"p99 {result.p99_ms:6.2f} ms  cpu {cpu_us:6.0f} µs/req  errors "
                  f"{result.errors}  loadavg {result.loadavg[0]:.2f}", flush=True)
    for group, seen in bodies.items():
        if len(seen) != 1:
            raise SystemExit(f"the servers answered {group} differently: {seen}")
    return runs


__all__ = ["Rounds", "add_load_options", "cpu_seconds", "free_port", "http_get",
           "measure_server", "run_rounds", "wanted_names"]
