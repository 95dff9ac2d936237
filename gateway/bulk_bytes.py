"""Bulk conversion of ``list<u8>`` values across the component boundary.

wasmtime-py 50 converts a ``list<u8>`` element by element, one ctypes value per byte
(measured here: ~1.4 µs a byte, so a 64 KB body costs ~90 ms). The C API has no bytes
fast path, but a list of u8 values is an array of fixed-size ``wasmtime_component_val_t``
records whose kind byte and payload byte sit at fixed offsets. Strided slice assignment
(C speed in CPython) writes or reads all of them in one pass.

:func:`install` patches ``ListType.convert_to_c`` / ``convert_from_c`` for u8 lists only;
every other list keeps the stock path. Remove once wasmtime-py ships a bulk path.
"""

from __future__ import annotations

import ctypes
from typing import Any

from wasmtime import _ffi as ffi
from wasmtime.component import _types

_VAL = ffi.wasmtime_component_val
_STRIDE = ctypes.sizeof(_VAL)
_PAYLOAD = _VAL.of.offset  # offset of the union; a u8 payload is its first byte
_KIND_U8 = ffi.WASMTIME_COMPONENT_U8.value


def _is_u8_list(list_type: Any) -> bool:
    cached: bool | None = getattr(list_type, "_wasmgate_u8", None)
    if cached is None:
        cached = isinstance(list_type.element, _types.U8)
        list_type._wasmgate_u8 = cached
    return cached


def install() -> None:
    """Route ``list<u8>`` conversions through the bulk path (idempotent)."""
    if getattr(_types.ListType, "_wasmgate_bulk", False):
        return
    stock_to_c = _types.ListType.convert_to_c
    stock_from_c = _types.ListType.convert_from_c

    def convert_to_c(self: Any, store: Any, val: Any, ptr: Any) -> None:
        if not _is_u8_list(self):
            return stock_to_c(self, store, val, ptr)
        if not isinstance(val, (bytes, bytearray)):
            raise TypeError("expected bytes value")
        n = len(val)
        raw = ffi.wasmtime_component_vallist_t()
        ffi.wasmtime_component_vallist_new_uninit(raw, n)
        if n:
            image = bytearray(n * _STRIDE)
            image[0::_STRIDE] = bytes((_KIND_U8,)) * n
            image[_PAYLOAD::_STRIDE] = val
            ctypes.memmove(raw.data, bytes(image), n * _STRIDE)
        ptr.contents.kind = ffi.WASMTIME_COMPONENT_LIST
        ptr.contents.of.list = raw
        return None

    def convert_from_c(self: Any, c: Any) -> Any:
        if not _is_u8_list(self):
            return stock_from_c(self, c)
        lst = c.of.list
        try:
            n = lst.size
            if n == 0:
                return b""
            image = ctypes.string_at(lst.data, n * _STRIDE)
            return image[_PAYLOAD::_STRIDE]
        finally:
            ffi.wasmtime_component_vallist_delete(ctypes.byref(lst))

    _types.ListType.convert_to_c = convert_to_c  # type: ignore[method-assign]
    _types.ListType.convert_from_c = convert_from_c  # type: ignore[method-assign]
    _types.ListType._wasmgate_bulk = True  # type: ignore[attr-defined]
