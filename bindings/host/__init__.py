"""Host imports a component may call when granted: kv, config, log.

- :mod:`bindings.host.kv`: the key-value backend (one SQLite file per store), granted per
  component with ``key-value-stores = [...]`` in ``wasmgate.toml``.
"""

from __future__ import annotations

from bindings.host.kv import KeyValueError, SqliteKeyValue

__all__ = ["KeyValueError", "SqliteKeyValue"]
