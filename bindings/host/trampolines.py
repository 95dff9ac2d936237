"""Host imports the guest calls without wasmtime-py's generic host-function trampoline.

wasmtime-py's ``LinkerInstance.add_func`` callback, on *every* guest call, asks the C API
for the import's type, walks it into Python type objects, converts each argument through
one ctypes object per field, and lowers the result the same way: ~70 µs of Python for a
``kv.get`` whose own work is ~5 µs (BENCHMARKS.md, host calls).

:func:`define` registers a host function through the raw C API instead, with one
module-level ``ctypes`` callback for all of them. Per call it

- **lifts** the arguments by reading the C value array with ``struct`` at known offsets
  (the layout :mod:`gateway.convert` checks at import). Every value's kind byte is checked
  against the expected signature, so a component that imports the same name with another
  type gets a trap, never a misread.
- **lowers** the result into the slot Rust handed us. Rust drops that slot after the
  callback, so everything it points at is allocated by the C API itself
  (``wasm_byte_vec_new``, ``wasmtime_component_vallist_new_uninit``,
  ``wasmtime_component_val_new``), exactly as wasmtime-py's own lowering does. The
  arguments are Rust's too and dropped by Rust after the callback: we only read them.
- reports a Python exception as wasmtime-py does (``catch_exceptions``): a
  ``WasmtimeError`` becomes the trap, any other exception is parked in wasmtime-py's
  ``LAST_EXCEPTION`` and re-raised by whoever called into the guest.

Depends on wasmtime-py 50.0.1 internals (``_slab.Slab``, ``component._enter``,
``Managed._consume``) and the C layout of wasmtime 50.
"""

from __future__ import annotations

import ctypes
import struct
from collections.abc import Callable
from typing import Any

import wasmtime
from wasmtime import _ffi as ffi
from wasmtime import component as wc
from wasmtime._slab import Slab
from wasmtime.component import _enter

# The value layout and kind codes are gateway.convert's, checked there at import against
# this wasmtime version, so the formats below cannot drift from the ones it uses.
from gateway.convert import (
    _LIST,
    _OF,
    _OPTION,
    _RESULT,
    _STRING,
    _U8,
    _U64,
    _VAL_SIZE,
)

_BOOL = ffi.WASMTIME_COMPONENT_BOOL.value
_S64 = ffi.WASMTIME_COMPONENT_S64.value
_ENUM = ffi.WASMTIME_COMPONENT_ENUM.value

_HEAD = struct.Struct("<B7xQQ")        # kind, then the first two words of the union
_S64_HEAD = struct.Struct("<B7xq")
_RESULT_VAL = struct.Struct("<B7x?7xQ8x")  # kind, is_ok, pointer to the boxed payload
_SCALAR_VAL = struct.Struct("<B7xQ16x")    # kind, u64 / bool / pointer payload
_S64_VAL = struct.Struct("<B7xq16x")
_PTR_PAIR = struct.Struct("<QQ")           # a string's or list's size and data pointer
_U8_KIND = bytes((_U8,))
_STRING_KIND = bytes((_STRING,))

_string_at = ctypes.string_at
_memmove = ctypes.memmove
_buffer = ctypes.create_string_buffer
_addressof = ctypes.addressof


def _raw(name: str, restype: Any, *argtypes: Any) -> Any:
    # A fresh function pointer (CDLL.__getitem__ does not cache), so our argtypes do not
    # change the one wasmtime-py's own bindings use.
    fn = ffi.dll[name]
    fn.restype = restype
    fn.argtypes = list(argtypes)
    return fn


_byte_vec_new = _raw("wasm_byte_vec_new", None, ctypes.c_void_p, ctypes.c_size_t,
                     ctypes.c_char_p)
_vallist_new_uninit = _raw("wasmtime_component_vallist_new_uninit", None, ctypes.c_void_p,
                           ctypes.c_size_t)
_val_new = _raw("wasmtime_component_val_new", ctypes.c_void_p, ctypes.c_void_p)

_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_size_t, ctypes.c_void_p, ctypes.c_void_p,
                             ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t,
                             ctypes.c_void_p, ctypes.c_size_t)
_FINALIZER = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
_add_func = _raw("wasmtime_component_linker_instance_add_func", ctypes.c_void_p,
                 ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t, _CALLBACK,
                 ctypes.c_void_p, _FINALIZER)

# (args address, arg count, results address, result count) -> None; raises to trap.
HostCall = Callable[[int, int, int, int], None]
_CALLS: Slab[HostCall] = Slab()


class SignatureMismatch(wasmtime.WasmtimeError):
    """The guest called a host import with values of another type than our WIT's."""


# --- lifting arguments ---


def _check(kind: int, expected: int, what: str) -> None:
    if kind != expected:
        raise SignatureMismatch(f"host import argument {what}: value kind {kind}, "
                                f"expected {expected}")


def _text(size: int, ptr: int) -> str:
    return _string_at(ptr, size).decode() if size else ""


def _u8s(size: int, ptr: int) -> bytes:
    if not size:
        return b""
    image = _string_at(ptr, size * _VAL_SIZE)
    if image[0::_VAL_SIZE] != _U8_KIND * size:
        raise SignatureMismatch("host import argument: list elements are not u8")
    return image[_OF::_VAL_SIZE]


def read_args(args: int, nargs: int, kinds: tuple[str, ...]) -> list[Any]:
    """Return the Python values of a C argument array whose WIT kinds are ``kinds``.

    Kinds: "string", "bytes" (list<u8>), "s64", "option-u64", "enum" (its case name).
    """
    if nargs != len(kinds):
        raise SignatureMismatch(f"host import takes {len(kinds)} arguments, got {nargs}")
    image = _string_at(args, nargs * _VAL_SIZE) if nargs else b""
    out: list[Any] = []
    for i, kind in enumerate(kinds):
        at = i * _VAL_SIZE
        if kind == "s64":
            k, n = _S64_HEAD.unpack_from(image, at)
            _check(k, _S64, kind)
            out.append(n)
            continue
        k, a, b = _HEAD.unpack_from(image, at)
        if kind == "string":
            _check(k, _STRING, kind)
            out.append(_text(a, b))
        elif kind == "enum":
            _check(k, _ENUM, kind)
            out.append(_text(a, b))
        elif kind == "bytes":
            _check(k, _LIST, kind)
            out.append(_u8s(a, b))
        elif kind == "option-u64":
            _check(k, _OPTION, kind)
            if a:
                k2, value, _ = _HEAD.unpack(_string_at(a, 24))
                _check(k2, _U64, kind)
                out.append(value)
            else:
                out.append(None)
        else:
            raise ValueError(f"unknown argument kind {kind!r}")
    return out


# --- lowering results: every pointer below is allocated by the C API, as Rust drops it ---


def _box(image: bytes) -> int:
    # wasmtime_component_val_new moves the value out of our buffer into a Rust Box.
    ptr: int = _val_new(_buffer(image, _VAL_SIZE))
    return ptr


def _box_string(text: str) -> int:
    data = text.encode()
    slot = _buffer(_STRING_KIND, _VAL_SIZE)
    _byte_vec_new(_addressof(slot) + _OF, len(data), data)
    ptr: int = _val_new(slot)
    return ptr


def _box_bytes(data: bytes | bytearray) -> int:
    n = len(data)
    slot = _buffer(bytes((_LIST,)), _VAL_SIZE)
    _vallist_new_uninit(_addressof(slot) + _OF, n)
    if n:
        _, elems = _PTR_PAIR.unpack(slot.raw[_OF:_OF + 16])
        image = bytearray(n * _VAL_SIZE)
        image[0::_VAL_SIZE] = _U8_KIND * n
        image[_OF::_VAL_SIZE] = data
        _memmove(elems, bytes(image), n * _VAL_SIZE)
    ptr: int = _val_new(slot)
    return ptr


def _box_strings(items: list[str]) -> int:
    encoded = [s.encode() for s in items]  # before allocating: a non-str raises here
    n = len(encoded)
    slot = _buffer(bytes((_LIST,)), _VAL_SIZE)
    _vallist_new_uninit(_addressof(slot) + _OF, n)
    if n:
        _, elems = _PTR_PAIR.unpack(slot.raw[_OF:_OF + 16])
        for i, data in enumerate(encoded):
            at = elems + i * _VAL_SIZE
            _memmove(at, _STRING_KIND, 1)
            _byte_vec_new(at + _OF, len(data), data)
    ptr: int = _val_new(slot)
    return ptr


def _payload_none(value: Any) -> int:
    if value is not None:
        raise TypeError("expected None for result<_, string>")
    return 0


def _payload_bool(value: Any) -> int:
    if not isinstance(value, bool):
        raise TypeError("expected bool")
    return _box(_SCALAR_VAL.pack(_BOOL, value))


def _payload_s64(value: Any) -> int:
    if not isinstance(value, int):
        raise TypeError("expected int")
    return _box(_S64_VAL.pack(_S64, value))


def _payload_option_bytes(value: Any) -> int:
    if value is not None and not isinstance(value, (bytes, bytearray)):
        raise TypeError("expected bytes or None")
    inner = 0 if value is None else _box_bytes(value)
    return _box(_SCALAR_VAL.pack(_OPTION, inner))


def _payload_option_string(value: Any) -> int:
    if value is not None and not isinstance(value, str):
        raise TypeError("expected str or None")
    inner = 0 if value is None else _box_string(value)
    return _box(_SCALAR_VAL.pack(_OPTION, inner))


def _payload_strings(value: Any) -> int:
    if not isinstance(value, list):
        raise TypeError("expected list of str")
    return _box_strings(value)


# The ok payload of a `result<T, string>`, by T.
OK_PAYLOADS: dict[str, Callable[[Any], int]] = {
    "none": _payload_none,
    "bool": _payload_bool,
    "s64": _payload_s64,
    "option-bytes": _payload_option_bytes,
    "option-string": _payload_option_string,
    "strings": _payload_strings,
}


def write_result(results: int, ok: bool, payload: int) -> None:
    """Store ``result`` (ok or err, its payload already boxed) in the result slot."""
    _memmove(results, _RESULT_VAL.pack(_RESULT, ok, payload), _VAL_SIZE)


def result_call(kinds: tuple[str, ...], ok: str,
                op: Callable[..., tuple[bool, Any]]) -> HostCall:
    """Return a HostCall for ``func(<kinds>) -> result<<ok>, string>``.

    ``op`` gets the lifted arguments and returns ``(True, value)`` or
    ``(False, error message)``; an exception it raises traps the guest.
    """
    lower_ok = OK_PAYLOADS[ok]

    def call(args: int, nargs: int, results: int, nresults: int) -> None:
        if nresults != 1:
            raise SignatureMismatch(f"host import returns 1 result, the guest expects "
                                    f"{nresults}")
        is_ok, value = op(*read_args(args, nargs, kinds))
        write_result(results, is_ok,
                     lower_ok(value) if is_ok else _box_string(str(value)))
    return call


def unit_call(kinds: tuple[str, ...], op: Callable[..., None]) -> HostCall:
    """Return a HostCall for ``func(<kinds>)`` with no result."""
    def call(args: int, nargs: int, results: int, nresults: int) -> None:
        if nresults != 0:
            raise SignatureMismatch(f"host import returns nothing, the guest expects "
                                    f"{nresults} results")
        op(*read_args(args, nargs, kinds))
    return call


# --- the one C callback ---


def _serve(data: int | None, _ctx: int | None, _ty: int | None, args: int | None,
                nargs: int, results: int | None, nresults: int) -> int:
    # Same contract as wasmtime-py's catch_exceptions: 0 for success, else an owned
    # wasmtime_error_t* that becomes the guest's trap.
    try:
        _CALLS.get(data or 0)(args or 0, nargs, results or 0, nresults)
    except wasmtime.WasmtimeError as exc:
        return _error_pointer(exc)
    except Exception as exc:
        _enter.LAST_EXCEPTION = exc
        return _error_pointer(wasmtime.WasmtimeError("python exception"))
    return 0


def _error_pointer(exc: wasmtime.WasmtimeError) -> int:
    ptr = ctypes.cast(exc._consume(), ctypes.c_void_p).value
    return ptr or 0


def _release(data: int | None) -> None:
    # Runs when the linker that holds the definition is dropped.
    _CALLS.deallocate(data or 0)


# Module-level, so the C function pointers outlive every linker that holds them.
_trampoline = _CALLBACK(_serve)
_finalize = _FINALIZER(_release)


def define(instance: wc.LinkerInstance, name: str, call: HostCall) -> None:
    """Define ``name`` in ``instance`` as a host function served by ``call``."""
    instance._assert_not_locked()
    encoded = name.encode()
    idx = _CALLS.allocate(call)
    err = _add_func(ctypes.cast(instance.ptr(), ctypes.c_void_p), encoded, len(encoded),
                    _trampoline, idx, _finalize)
    if err:
        raise wasmtime.WasmtimeError._from_ptr(
            ctypes.cast(err, ctypes.POINTER(ffi.wasmtime_error_t)))


__all__ = ["HostCall", "SignatureMismatch", "define", "read_args", "result_call",
           "unit_call", "write_result"]
