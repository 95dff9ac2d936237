"""Build JavaScript handlers into wasmgate components with componentize-js.

The toolchain is pinned in ``bindings/js/package.json`` / ``package-lock.json`` and installed
by ``make install`` (``npm ci --prefix bindings/js``). :func:`componentize_js` runs it
against the ``wasmgate:handler/handler`` world with the flags our executor needs:

- ``--disable http fetch-event``: by default componentize-js imports ``wasi:http/types`` and
  ``wasi:http/outgoing-handler`` (for ``fetch``). wasmtime-py's ``Linker.add_wasip2()``
  provides WASI CLI, clocks, random, filesystem and io but not wasi:http, so such a component
  cannot be instantiated. Handlers reach the network through the granted ``outbound-http``
  import instead.

Run it as ``python -m bindings.js app.js -o build/x.wasm`` (a component's build command).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from bindings import WIT_DIR, WIT_WASI_HTTP_DIR, WIT_WORLD

TOOLCHAIN_DIR = Path(__file__).parent
COMPONENTIZE_JS = TOOLCHAIN_DIR / "node_modules" / ".bin" / "componentize-js"
# The world in bindings/wit-wasi-http/world.wit that includes wasi:http/proxy.
WASI_HTTP_WORLD_NAME = "proxy"
# WASI features the gateway's linker does not provide (see the module docstring).
DISABLED_FEATURES = ("http", "fetch-event")


class JsToolchainMissing(RuntimeError):
    """node/npm or the pinned componentize-js is not installed."""


def toolchain_problem() -> str | None:
    """Return why JS handlers cannot be built here, or None when the toolchain is ready."""
    if shutil.which("node") is None:
        return ("node is not on PATH; install Node.js 20+ and run `make install` "
                "(it runs `npm ci --prefix bindings/js`)")
    if not COMPONENTIZE_JS.exists():
        return (f"{COMPONENTIZE_JS} is missing; run `make install` or "
                f"`npm ci --prefix {TOOLCHAIN_DIR}`")
    return None


def componentize_command(source: Path, output: Path, world: str = "wasmgate") -> list[str]:
    """Return the componentize-js command line that builds ``source`` into ``output``.

    ``world="wasi-http"`` builds against the standard ``wasi:http/proxy`` world (the module
    exports ``incomingHandler``); wasi:http stays enabled, the gateway links it for such
    components and routes their outgoing requests through the allow-list.
    """
    if world == "wasi-http":
        return [str(COMPONENTIZE_JS), "--wit", str(WIT_WASI_HTTP_DIR), "--world-name",
                WASI_HTTP_WORLD_NAME, "--out", str(output), str(source)]
    return [str(COMPONENTIZE_JS), "--wit", str(WIT_DIR), "--world-name", WIT_WORLD,
            "--disable", *DISABLED_FEATURES, "--out", str(output), str(source)]


def componentize_js(source: Path, output: Path, world: str = "wasmgate") -> None:
    """Build the ES module ``source`` into the component ``output``.

    Raises :class:`JsToolchainMissing` without the toolchain, and
    :class:`subprocess.CalledProcessError` (with the tool's output) when the build fails.
    """
    problem = toolchain_problem()
    if problem is not None:
        raise JsToolchainMissing(problem)
    output.parent.mkdir(parents=True, exist_ok=True)
    # componentize-js reads the source relative to the cwd it is started in; absolute paths
    # keep the command independent of where the caller runs it.
    subprocess.run(componentize_command(source.resolve(), output.resolve(), world), check=True,
                   capture_output=True, text=True)


__all__ = ["COMPONENTIZE_JS", "DISABLED_FEATURES", "TOOLCHAIN_DIR", "WASI_HTTP_WORLD_NAME",
           "JsToolchainMissing",
           "componentize_command", "componentize_js", "toolchain_problem"]
