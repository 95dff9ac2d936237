"""``python -m bindings.js SOURCE -o OUTPUT``: build one JavaScript handler into a component."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from bindings.js import JsToolchainMissing, componentize_js


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bindings.js",
        description="Build a JavaScript ES module into a component (the wasmgate:handler "
                    "world, or wasi:http/proxy with --world wasi-http) with the pinned "
                    "componentize-js (bindings/js).")
    parser.add_argument("source", help="the handler's ES module, e.g. app.js")
    parser.add_argument("-o", "--output", required=True, help="component file to write")
    parser.add_argument("--world", choices=("wasmgate", "wasi-http"), default="wasmgate",
                        help="wasmgate: the wasmgate:handler world; wasi-http: the standard "
                             "wasi:http/proxy world (docs/wasi-http.md)")
    args = parser.parse_args(argv)
    source = Path(args.source)
    if not source.is_file():
        print(f"wasmgate: no JavaScript module {source.resolve()}; run this in the handler's "
              "directory or pass the path of its app.js", file=sys.stderr)
        return 2
    try:
        componentize_js(source, Path(args.output), args.world)
    except JsToolchainMissing as exc:
        print(f"wasmgate: {exc}", file=sys.stderr)
        return 2
    except subprocess.CalledProcessError as exc:
        sys.stderr.write(exc.stdout + exc.stderr)
        print(f"wasmgate: componentize-js could not build {source} (exit {exc.returncode}); "
              "fix the error above in the handler", file=sys.stderr)
        return 1
    print(f"built {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
