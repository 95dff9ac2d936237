"""The contract between wasmgate and handler components.

- ``bindings/wit/handler.wit``: the canonical WIT package (``wasmgate:handler``).
- :mod:`bindings.types`: the msgspec mirror of its records, used on the hot path.
- :mod:`bindings.host`: host imports a component may call when granted (kv, config, log).
- ``bindings/sdk/wasmgate_sdk.py``: the guest SDK for Python handlers (``SDK_DIR`` goes on
  componentize-py's ``-p`` path; ``wasmgate componentize`` does that).
- ``bindings/templates/``: the project templates of ``wasmgate new``.
"""

from __future__ import annotations

from pathlib import Path

from bindings.types import Event, Response

WIT_DIR = Path(__file__).parent / "wit"
SDK_DIR = Path(__file__).parent / "sdk"
TEMPLATES_DIR = Path(__file__).parent / "templates"
WIT_PACKAGE = "wasmgate:handler@0.1.0"
WIT_WORLD = "handler"
# The standard wasi:http/proxy world's WIT (wasmtime 48's copy), for `--world wasi-http`.
WIT_WASI_HTTP_DIR = Path(__file__).parent / "wit-wasi-http"
WIT_WASI_HTTP_WORLD = "wasi:http/proxy@0.2.12"

__all__ = ["SDK_DIR", "TEMPLATES_DIR", "WIT_DIR", "WIT_PACKAGE", "WIT_WASI_HTTP_DIR",
           "WIT_WASI_HTTP_WORLD", "WIT_WORLD", "Event", "Response"]
