"""Let a host function return an explicit ``Variant("err", ...)`` for any ``result``.

wasmtime-py lowers a host function's return value for ``result<T, E>`` by matching Python
types when the two cases have distinct Python classes ("untagged"). For
``result<option<list<u8>>, string>`` (kv.get) the ok case accepts ``object`` (an option
admits anything), so a returned error string is lowered as ``ok`` and then fails to
convert. With this patch a ``Variant`` whose tag is ``ok``/``err`` is always lowered as that
case; every other value goes through wasmtime-py's own logic unchanged.
"""

from __future__ import annotations

import ctypes
from typing import Any

from wasmtime import _ffi as ffi
from wasmtime.component import _types
from wasmtime.component._types import ResultType, Variant


def install() -> None:
    """Patch ``ResultType.convert_to_c`` once per process."""
    stock = ResultType.convert_to_c
    if getattr(stock, "_wasmgate_patched", False):
        return

    def convert_to_c(self: ResultType, store: Any, val: Any, ptr: Any) -> None:
        if not isinstance(val, Variant) or val.tag not in ("ok", "err") or self._tagged():
            stock(self, store, val, ptr)
            return
        case = self.ok if val.tag == "ok" else self.err
        payload = None
        if case is not None:
            raw = ffi.wasmtime_component_val_t()
            case.convert_to_c(store, val.payload, ctypes.pointer(raw))
            payload = ffi.wasmtime_component_val_new(ctypes.byref(raw))
        ptr.contents.kind = ffi.WASMTIME_COMPONENT_RESULT
        ptr.contents.of.result.is_ok = val.tag == "ok"
        ptr.contents.of.result.val = payload

    convert_to_c._wasmgate_patched = True  # type: ignore[attr-defined]
    ResultType.convert_to_c = convert_to_c  # type: ignore[method-assign]


assert hasattr(_types, "VariantLikeType"), "wasmtime-py layout changed; recheck this patch"
