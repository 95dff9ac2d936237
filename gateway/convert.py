"""A call path for `handle` specialised to the wasmgate event and response types.

wasmtime-py's ``Func.__call__`` is generic: on every call it asks the C API for the
function's type, walks it, and converts each value through one ctypes object per field,
list element and name, then frees what it built piece by piece. For our one fixed
signature that Python-side work costs ~10x the call itself.

:class:`HandleCall` checks the export's type once (:func:`HandleCall.for_func`) and then
per call:

- **lowers** the Event into one ``bytearray`` laid out exactly as the C API's
  ``wasmtime_component_val_t`` tree (kind byte, union at a fixed offset, records of
  ``{name, val}`` entries), with pointers into that same buffer. Field names point at a
  module-level buffer built once. ``list<u8>`` is written with two strided slice
  assignments (kind bytes, payload bytes) instead of one ctypes value per byte.
- calls ``wasmtime_component_func_call`` directly. The C API only *reads* the arguments
  (``Val::from(&wasmtime_component_val_t)`` clones them), so Python owns this memory and
  nothing is handed to Rust's allocator: there is nothing to free on the way in, and the
  buffer lives until the call returns because this frame holds it.
- **lifts** the result by reading the C tree with ``struct`` at known offsets, then frees
  the whole Rust-allocated result tree with one ``wasmtime_component_val_delete``.

Everything here depends on the C layout of wasmtime 50 (checked at import against
wasmtime-py's ctypes declarations) and on private helpers of wasmtime-py 50.0.1
(``Store._context``, ``Func._func``, ``WasmtimeError._from_ptr``, ``maybe_raise_last_exn``).
If the export's type is not exactly our WIT, :meth:`HandleCall.for_func` returns None and the
executor keeps wasmtime-py's stock path.
"""

from __future__ import annotations

import ctypes
import struct
from typing import Any

import wasmtime
from wasmtime import _ffi as ffi
from wasmtime.component import _types as wt
from wasmtime.component._enter import maybe_raise_last_exn

from bindings.types import Event, Response


def _offset(struct_type: type, field: str) -> int:
    return int(getattr(struct_type, field).offset)


_VAL_SIZE = ctypes.sizeof(ffi.wasmtime_component_val)
_OF = _offset(ffi.wasmtime_component_val, "of")
_ENTRY_SIZE = ctypes.sizeof(ffi.wasmtime_component_valrecord_entry)
_ENTRY_VAL = _offset(ffi.wasmtime_component_valrecord_entry, "val")
# The struct formats below hard-code this layout; a wasmtime upgrade that changes it must
# fail loudly at import rather than hand Rust a misread tree.
if (_VAL_SIZE, _OF, _ENTRY_SIZE, _ENTRY_VAL) != (32, 8, 48, 16) or (
        _offset(ffi.wasmtime_component_valresult, "val") != 8
        or _offset(ffi.wasmtime_component_vallist, "data") != 8
        or _offset(ffi.wasm_byte_vec_t, "data") != 8):
    raise ImportError("gateway.convert: unexpected wasmtime_component_val_t layout; "
                      "update the struct formats for this wasmtime version")

_U8 = ffi.WASMTIME_COMPONENT_U8.value
_U16 = ffi.WASMTIME_COMPONENT_U16.value
_U64 = ffi.WASMTIME_COMPONENT_U64.value
_STRING = ffi.WASMTIME_COMPONENT_STRING.value
_LIST = ffi.WASMTIME_COMPONENT_LIST.value
_RECORD = ffi.WASMTIME_COMPONENT_RECORD.value
_TUPLE = ffi.WASMTIME_COMPONENT_TUPLE.value
_OPTION = ffi.WASMTIME_COMPONENT_OPTION.value
_RESULT = ffi.WASMTIME_COMPONENT_RESULT.value

_func_call = ffi.wasmtime_component_func_call
_post_return = ffi.wasmtime_component_func_post_return
_val_delete = ffi.wasmtime_component_val_delete
_string_at = ctypes.string_at
_addressof = ctypes.addressof
_byref = ctypes.byref

# --- the expected signature, rendered once from the WIT and compared once per component ---

EVENT_FIELDS = ("id", "source", "type", "subject", "time", "content-type", "key", "headers",
                "metadata", "data")
_PAIRS = "list<tuple<string,string>>"
EXPECTED_PARAMS = ("record{id:string,source:string,type:string,subject:string,time:u64,"
                   "content-type:option<string>,key:option<list<u8>>,headers:" + _PAIRS
                   + ",metadata:" + _PAIRS + ",data:list<u8>}")
EXPECTED_RESULT = "result<record{status:u16,headers:" + _PAIRS + ",body:list<u8>},string>"


def render_type(ty: Any) -> str:
    """Return a WIT-like spelling of a wasmtime-py component value type (for comparison)."""
    if isinstance(ty, wt.RecordType):
        return "record{" + ",".join(f"{n}:{render_type(t)}" for n, t in ty.fields) + "}"
    if isinstance(ty, wt.ListType):
        return f"list<{render_type(ty.element)}>"
    if isinstance(ty, wt.TupleType):
        return "tuple<" + ",".join(render_type(t) for t in ty.elements) + ">"
    if isinstance(ty, wt.OptionType):
        return f"option<{render_type(ty.payload)}>"
    if isinstance(ty, wt.ResultType):
        ok, err = ty.ok, ty.err
        return (f"result<{'_' if ok is None else render_type(ok)},"
                f"{'_' if err is None else render_type(err)}>")
    return type(ty).__name__.lower()


# --- lowering: fixed part (top record value + its ten entries) in one pack ---

# Field names live for the whole process; entries point into this buffer.
_NAME_BYTES = [n.encode() for n in EVENT_FIELDS]
_NAMES = ctypes.create_string_buffer(b"".join(_NAME_BYTES))
_NAME_REFS: list[tuple[int, int]] = []
_pos = 0
for _b in _NAME_BYTES:
    _NAME_REFS.append((len(_b), _addressof(_NAMES) + _pos))
    _pos += len(_b)

_V_PTR = "B7xQQ8x"   # string / list / record / tuple: kind, size, pointer
_V_SCALAR = "B7xQ16x"  # u64 / option: kind, value-or-pointer
_NAME = "QQ"
_FIELD_FORMATS = (_V_PTR, _V_PTR, _V_PTR, _V_PTR, _V_SCALAR, _V_SCALAR, _V_SCALAR, _V_PTR,
                  _V_PTR, _V_PTR)
_FIXED = struct.Struct("<" + _V_PTR + "".join(_NAME + f for f in _FIELD_FORMATS))
_FIXED_SIZE = _FIXED.size
_OPTION_SLOT = struct.Struct("<" + _V_PTR)  # the value an option's pointer points at
_U8_KIND_BYTES = bytes((_U8,))

_pair_structs: dict[int, struct.Struct] = {}


def _pairs_struct(n: int) -> struct.Struct:
    # n tuple values, then their 2n string values: one pack for a whole header list.
    s = _pair_structs.get(n)
    if s is None:
        s = _pair_structs[n] = struct.Struct("<" + _V_PTR * (3 * n))
        if len(_pair_structs) > 256:  # bounded: odd header counts do not grow it forever
            _pair_structs.clear()
    return s


class _Lowered:
    """The argument tree of one call; keep it referenced until the call returns."""

    __slots__ = ("buf", "val")

    def __init__(self, buf: bytearray, val: Any) -> None:
        self.buf = buf
        self.val = val


def _write_u8s(buf: bytearray, at: int, data: bytes) -> None:
    # A list<u8> is n 32-byte values: kind byte at +0, payload byte at +8. Two strided
    # slice assignments write all of them at C speed.
    n = len(data)
    if n:
        end = at + n * _VAL_SIZE
        buf[at:end:_VAL_SIZE] = _U8_KIND_BYTES * n
        buf[at + _OF:end:_VAL_SIZE] = data


def _write_pairs(buf: bytearray, at: int, base: int, items: list[tuple[bytes, bytes]],
                 sp: int) -> int:
    # n tuple values at `at`, then their 2n string values; the strings' bytes are already
    # in the blob starting at address `sp`. Returns the address after the last string.
    n = len(items)
    if not n:
        return sp
    args: list[int] = []
    elems = base + at + n * _VAL_SIZE
    for i in range(n):
        args += (_TUPLE, 2, elems + i * 2 * _VAL_SIZE)
    for k, v in items:
        args += (_STRING, len(k), sp, _STRING, len(v), sp + len(k))
        sp += len(k) + len(v)
    _pairs_struct(n).pack_into(buf, at, *args)
    return sp


def lower_event(event: Event) -> _Lowered:
    """Return ``event`` as a ``wasmtime_component_val_t`` record in Python-owned memory."""
    strings = [event.id.encode(), event.source.encode(), event.type.encode(),
               event.subject.encode()]
    ctype = event.content_type
    enc_ctype = ctype.encode() if ctype is not None else b""
    key = event.key
    data = event.data
    headers = [(k.encode(), v.encode()) for k, v in event.headers]
    metadata = [(k.encode(), v.encode()) for k, v in event.metadata]

    # Layout: fixed | content-type slot | key slot | key elements | headers | metadata |
    # data | string bytes (id, source, type, subject, content-type, header and metadata
    # pairs, in that order). Value arrays are 32-byte elements, so offsets stay 8-aligned.
    ctype_off = _FIXED_SIZE
    key_off = ctype_off + _VAL_SIZE
    key_elems_off = key_off + _VAL_SIZE
    headers_off = key_elems_off + (len(key) if key is not None else 0) * _VAL_SIZE
    metadata_off = headers_off + len(headers) * 3 * _VAL_SIZE
    data_off = metadata_off + len(metadata) * 3 * _VAL_SIZE
    strings_off = data_off + len(data) * _VAL_SIZE
    strings.append(enc_ctype)
    for pair in headers:
        strings += pair
    for pair in metadata:
        strings += pair
    blob = b"".join(strings)

    buf = bytearray(strings_off + len(blob) + 8)
    # from_buffer pins the bytearray (it cannot be resized while exported) and gives the
    # address every pointer in the tree is relative to.
    top = ffi.wasmtime_component_val.from_buffer(buf)
    base = _addressof(top)
    buf[strings_off:strings_off + len(blob)] = blob

    # Empty strings and lists still point into the buffer, never at NULL: the C API makes
    # Rust slices from (pointer, length) and a null pointer is not a valid slice.
    p_id = base + strings_off
    p_source = p_id + len(strings[0])
    p_type = p_source + len(strings[1])
    p_subject = p_type + len(strings[2])
    p_ctype = p_subject + len(strings[3])
    sp = p_ctype + len(enc_ctype)
    if ctype is not None:
        _OPTION_SLOT.pack_into(buf, ctype_off, _STRING, len(enc_ctype), p_ctype)
    if key is not None:
        _OPTION_SLOT.pack_into(buf, key_off, _LIST, len(key), base + key_elems_off)
        _write_u8s(buf, key_elems_off, key)
    sp = _write_pairs(buf, headers_off, base, headers, sp)
    _write_pairs(buf, metadata_off, base, metadata, sp)
    _write_u8s(buf, data_off, data)

    r = _NAME_REFS
    _FIXED.pack_into(
        buf, 0,
        _RECORD, 10, base + _VAL_SIZE,
        *r[0], _STRING, len(strings[0]), p_id,
        *r[1], _STRING, len(strings[1]), p_source,
        *r[2], _STRING, len(strings[2]), p_type,
        *r[3], _STRING, len(strings[3]), p_subject,
        *r[4], _U64, event.time,
        *r[5], _OPTION, base + ctype_off if ctype is not None else 0,
        *r[6], _OPTION, base + key_off if key is not None else 0,
        *r[7], _LIST, len(headers), base + headers_off,
        *r[8], _LIST, len(metadata), base + metadata_off,
        *r[9], _LIST, len(data), base + data_off,
    )
    return _Lowered(buf, top)


# --- lifting ---

_RESULT_HEAD = struct.Struct("<B7x?7xQ")       # kind, is_ok, pointer to the payload value
_PTR_VAL = struct.Struct("<B7xQQ")             # kind, size, pointer
_RESPONSE_ENTRIES = struct.Struct("<16xB7xH22x" + "16xB7xQQ8x" * 2)
_STRING_PAIR = struct.Struct("<B7xQQ8xB7xQQ8x")


def _text(size: int, ptr: int) -> str:
    return _string_at(ptr, size).decode() if size else ""


def _read_pairs(size: int, ptr: int) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    if not size:
        return out
    image = _string_at(ptr, size * _VAL_SIZE)
    for i in range(size):
        kind, n, elems = _PTR_VAL.unpack_from(image, i * _VAL_SIZE)
        if kind != _TUPLE or n != 2:
            raise wasmtime.WasmtimeError("response header is not a tuple<string, string>")
        k_kind, k_len, k_ptr, v_kind, v_len, v_ptr = _STRING_PAIR.unpack(
            _string_at(elems, 2 * _VAL_SIZE))
        if k_kind != _STRING or v_kind != _STRING:
            raise wasmtime.WasmtimeError("response header is not a tuple<string, string>")
        out.append((_text(k_len, k_ptr), _text(v_len, v_ptr)))
    return out


def _read_bytes(size: int, ptr: int) -> bytes:
    if not size:
        return b""
    # Every element is a 32-byte value whose payload byte sits at offset 8.
    return _string_at(ptr, size * _VAL_SIZE)[_OF::_VAL_SIZE]


def lift_result(result: Any) -> Response | str:
    """Read a ``result<response, string>`` value (does not free it)."""
    kind, is_ok, payload = _RESULT_HEAD.unpack(_string_at(_addressof(result), 24))
    if kind != _RESULT or not payload:
        raise wasmtime.WasmtimeError("handle returned something other than a result")
    p_kind, size, p = _PTR_VAL.unpack(_string_at(payload, 24))
    if not is_ok:
        if p_kind != _STRING:
            raise wasmtime.WasmtimeError("handle returned an err that is not a string")
        return _text(size, p)
    if p_kind != _RECORD or size != 3:
        raise wasmtime.WasmtimeError("handle returned an ok that is not a response record")
    (s_kind, status, h_kind, h_size, h_ptr, b_kind, b_size, b_ptr) = _RESPONSE_ENTRIES.unpack(
        _string_at(p, 3 * _ENTRY_SIZE))
    if (s_kind, h_kind, b_kind) != (_U16, _LIST, _LIST):
        raise wasmtime.WasmtimeError("handle returned a response of an unexpected shape")
    return Response(status=status, headers=_read_pairs(h_size, h_ptr),
                    body=_read_bytes(b_size, b_ptr))


class HandleCall:
    """Calls one component's `handle` export through the specialised conversion."""

    __slots__ = ()

    @classmethod
    def for_func(cls, func: wasmtime.component.Func,
                 store: wasmtime.Store) -> HandleCall | None:
        """Return a HandleCall if ``func`` has exactly our WIT signature, else None."""
        fty = func.type(store)
        params = fty.params
        result = fty.result
        if len(params) != 1 or result is None:
            return None
        if render_type(params[0][1]) != EXPECTED_PARAMS or render_type(result) != \
                EXPECTED_RESULT:
            return None
        return cls()

    def __call__(self, func: wasmtime.component.Func, store: wasmtime.Store,
                 event: Event) -> Response | str:
        """Run ``handle(event)`` and its post-return; raise WasmtimeError on a trap."""
        lowered = lower_event(event)
        result = ffi.wasmtime_component_val()  # zeroed: kind bool, so nothing to drop
        ctx = store._context()
        raw_func = _byref(func._func)
        try:
            err = _func_call(raw_func, ctx, _byref(lowered.val), 1, _byref(result), 1)
            if err:
                _raise(err)
            value = lift_result(result)
        finally:
            # Frees the whole Rust-allocated result tree (a no-op when the call failed
            # and the slot still holds the zeroed bool).
            _val_delete(_byref(result))
        err = _post_return(raw_func, ctx)
        if err:
            _raise(err)
        return value


def _raise(err: Any) -> None:
    # As wasmtime-py's enter_wasm: a Python exception raised by a host import is re-raised
    # in preference to the trap that carried it out of the guest.
    error = wasmtime.WasmtimeError._from_ptr(err)
    maybe_raise_last_exn()
    raise error


__all__ = ["EXPECTED_PARAMS", "EXPECTED_RESULT", "HandleCall", "lift_result", "lower_event",
           "render_type"]
