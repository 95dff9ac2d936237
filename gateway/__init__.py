"""wasmgate: events from anywhere become one typed WIT call into a sandboxed component."""

from __future__ import annotations

__version__ = "0.1.0"
