"""Hostile or broken inputs to the executor, with hand-written WAT guests (no guest toolchain):
files that are not components, and a guest whose error text is far larger than any log line
should be."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from bindings.host.imports import HostImports
from bindings.types import Event
from gateway.cli import main
from gateway.engine import PoolingLimits, WasmEngine
from gateway.errors import ComponentError, HandlerReturnedError, HandlerTimeout
from gateway.executor import InstancePool
from gateway.manifest import ComponentSpec
from tests.fixtures.build import WAT_ECHO

# `handle` answers err(<N bytes of "A">), N the event's data length read as the number of
# 64 KiB pages to fill: a guest can return an error string as large as its memory.
HUGE_ERROR_WAT = """
(component
  (core module $m
    (memory (export "memory") 1)
    (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32) (i32.const 1024))
    (func (export "handle") (param $e i32) (result i32)
      (local $pages i32) (local $at i32)
      (local.set $pages (i32.load offset=84 (local.get $e)))
      (local.set $at (i32.shl (memory.grow (local.get $pages)) (i32.const 16)))
      (memory.fill (local.get $at) (i32.const 0x41) (i32.shl (local.get $pages) (i32.const 16)))
      (i32.store8 (i32.const 0) (i32.const 1))
      (i32.store offset=4 (i32.const 0) (local.get $at))
      (i32.store offset=8 (i32.const 0) (i32.shl (local.get $pages) (i32.const 16)))
      (i32.const 0)))
  (core instance $i (instantiate $m))
  (type $pairs (list (tuple string string)))
  (type $event-def (record
    (field "id" string) (field "source" string) (field "type" string)
    (field "subject" string) (field "time" u64) (field "content-type" (option string))
    (field "key" (option (list u8))) (field "headers" $pairs) (field "metadata" $pairs)
    (field "data" (list u8))))
  (export $event "event" (type $event-def))
  (type $response-def
    (record (field "status" u16) (field "headers" $pairs) (field "body" (list u8))))
  (export $response "response" (type $response-def))
  (func (export "handle") (param "e" $event) (result (result $response (error string)))
    (canon lift (core func $i "handle")
      (memory (core memory $i "memory"))
      (realloc (core func $i "cabi_realloc")))))
"""


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WasmEngine]:
    eng = WasmEngine(tmp_path_factory.mktemp("cache"))
    yield eng
    eng.close()


WORLDS = r"`wasmgate:handler/handler`.*`wasi:http/incoming-handler`"


@pytest.mark.parametrize(("content", "says"), [
    (b"", r"the file is empty"),
    (b"hello, not wasm", r"does not start with the WebAssembly magic bytes"),
    (b"\x00asm\x01\x00\x00\x00", r"a core WebAssembly module, not a component"),
    (b"\x00asm\x0d\x00\x01\x00\x01\xff\xff", r"truncated or corrupt"),
])
def test_a_file_that_is_not_a_component_says_what_it_is_and_the_worlds(
        engine: WasmEngine, tmp_path: Path, content: bytes, says: str) -> None:
    bogus = tmp_path / "bogus.wasm"
    bogus.write_bytes(content)
    with pytest.raises(ComponentError) as caught:
        engine.load_component(bogus)
    text = str(caught.value)
    assert text.startswith(f"{bogus} is not a valid WebAssembly component")
    assert re.search(says, text), text
    assert re.search(WORLDS, text), text
    # No parser diagnostics pointing into a text file that is not one.
    assert "<anon>" not in text


@pytest.mark.parametrize("name", ["broken.wat", "broken.wasm"])
def test_a_wat_file_keeps_its_parser_diagnostic(engine: WasmEngine, tmp_path: Path,
                                                name: str) -> None:
    broken = tmp_path / name
    broken.write_text(";; the text format\n(component (oops))")
    with pytest.raises(ComponentError) as caught:
        engine.load_component(broken)
    text = str(caught.value)
    assert text.startswith(f"{broken} is not a valid WebAssembly component")
    assert "oops" in text, text


async def test_a_huge_error_text_is_cut_before_it_reaches_logs_and_replies(
        engine: WasmEngine, tmp_path: Path) -> None:
    wat = tmp_path / "huge-error.wat"
    wat.write_text(HUGE_ERROR_WAT)
    spec = msgspec.convert({"source": str(wat), "isolation": "fresh"}, ComponentSpec)
    pool = InstancePool("loud", spec, engine, engine.load_component(wat),
                        HostImports("loud", {}, {}))
    try:
        with pytest.raises(HandlerReturnedError) as caught:
            # 128 pages: an 8 MiB error string
            await pool.call(Event(id="e", source="t", type="t", subject="s", data=b"x" * 128))
        text = str(caught.value)
        assert text.startswith("component `loud` returned an error: AAAA")
        assert len(text) < 2048
        assert f"{(128 << 16) - 1024} more characters cut" in text
    finally:
        pool.close()


def test_invoke_prints_a_cut_error_text(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("WASMGATE_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "huge-error.wat").write_text(HUGE_ERROR_WAT)
    manifest = tmp_path / "wasmgate.toml"
    manifest.write_text(
        '[application]\nname = "loud"\n[component.loud]\nsource = "huge-error.wat"\n')
    event = tmp_path / "event.json"
    event.write_text('{"specversion": "1.0", "id": "1", "source": "t", "type": "t", '
                     '"data_base64": "' + "eHh4" * 16 + '"}')
    assert main(["invoke", "loud", "--event", str(event), "--manifest", str(manifest)]) == 1
    out = capsys.readouterr()
    assert "more characters cut" in out.out + out.err
    assert len(out.out) + len(out.err) < 8192


def _echo_with(tmp_path: Path, name: str, old: str, new: str) -> Path:
    text = WAT_ECHO.read_text()
    assert old in text
    path = tmp_path / f"{name}.wat"
    path.write_text(text.replace(old, new, 1))
    return path


ECHO_MEMORY = '(memory (export "memory") 2)'
ECHO_GLOBAL = "(global $heap (mut i32) (i32.const 1024))"


@pytest.mark.parametrize(("name", "start", "says"), [
    ("start-trap", "(func $boom unreachable) (start $boom)",
     r"cannot be instantiated: .*unreachable"),
    ("start-loop", "(func $spin (loop $l (br $l))) (start $spin)",
     r"start code ran past `timeout-ms`"),
])
def test_start_code_that_fails_is_not_blamed_on_the_pooling_allocator(
        engine: WasmEngine, tmp_path: Path, name: str, start: str, says: str) -> None:
    wat = _echo_with(tmp_path, name, ECHO_GLOBAL, f"{ECHO_GLOBAL} {start}")
    spec = msgspec.convert({"source": str(wat), "timeout-ms": 200}, ComponentSpec)
    with pytest.raises(ComponentError) as caught:
        InstancePool(name, spec, engine, engine.load_component(wat), HostImports(name, {}, {}))
    text = str(caught.value)
    assert re.search(says, text, re.S), text
    assert "pooling" not in text, text


@pytest.mark.parametrize("pooling", [True, False])
def test_a_memory_larger_than_memory_mb_at_start_names_the_setting(
        tmp_path: Path, pooling: bool) -> None:
    wat = _echo_with(tmp_path, "big", ECHO_MEMORY, '(memory (export "memory") 3000)')
    spec = msgspec.convert({"source": str(wat), "memory-mb": 64}, ComponentSpec)
    engine = WasmEngine(tmp_path / "cache", pooling=PoolingLimits.for_components([spec])
                        if pooling else "off")
    try:
        with pytest.raises(ComponentError) as caught:
            InstancePool("big", spec, engine, engine.load_component(wat, name="big"),
                         HostImports("big", {}, {}))
    finally:
        engine.close()
    text = str(caught.value)
    assert "raise `memory-mb`" in text, text
    assert "not a valid WebAssembly component" not in text, text


# The echo guest plus: subject "slep" blocks 5 s in the host (wasi:clocks subscribe-duration,
# then wasi:io/poll block), the way time.sleep does in componentize-py guests.
SLEEP_IMPORTS = """(component
  (import "wasi:io/poll@0.2.0" (instance $poll
    (export "pollable" (type (sub resource)))
    (export "[method]pollable.block" (func (param "self" (borrow 0))))))
  (alias export $poll "pollable" (type $pollable))
  (import "wasi:clocks/monotonic-clock@0.2.0" (instance $clock
    (alias outer 1 $pollable (type))
    (export "pollable" (type (eq 0)))
    (export "subscribe-duration" (func (param "when" u64) (result (own 1))))))
  (core func $subscribe (canon lower (func $clock "subscribe-duration")))
  (core func $block (canon lower (func $poll "[method]pollable.block")))
  (core instance $wasi (export "subscribe" (func $subscribe)) (export "block" (func $block)))
  (core module $m
    (import "wasi" "subscribe" (func $sub (param i64) (result i32)))
    (import "wasi" "block" (func $blk (param i32)))"""
SLEEP_CALL = """;; subject "slep": block 5 s in wasi:io/poll
      (if (i32.and (i32.eq (local.get $sl) (i32.const 4))
                   (i32.eq (i32.load (local.get $sp)) (i32.const 0x70656c73)))
        (then (call $blk (call $sub (i64.const 5000000000)))))
      ;; subject "wait": set a 5 s timer and never wait on it (a watchdog, say)
      (if (i32.and (i32.eq (local.get $sl) (i32.const 4))
                   (i32.eq (i32.load (local.get $sp)) (i32.const 0x74696177)))
        (then (drop (call $sub (i64.const 5000000000)))))
      ;; subject "trap": trap"""


async def test_a_guest_blocked_in_a_host_sleep_times_out_at_timeout_ms(
        engine: WasmEngine, tmp_path: Path) -> None:
    text = WAT_ECHO.read_text()
    text = text.replace("(component\n  (core module $m", SLEEP_IMPORTS, 1)
    text = text.replace(';; subject "trap": trap', SLEEP_CALL, 1)
    text = text.replace("(core instance $i (instantiate $m))",
                        '(core instance $i (instantiate $m (with "wasi" (instance $wasi))))')
    wat = tmp_path / "sleeper.wat"
    wat.write_text(text)
    spec = msgspec.convert({"source": str(wat), "timeout-ms": 200}, ComponentSpec)
    pool = InstancePool("sleeper", spec, engine, engine.load_component(wat),
                        HostImports("sleeper", {}, {}))
    try:
        started = time.monotonic()
        with pytest.raises(HandlerTimeout):
            await pool.call(Event(id="e", source="t", type="t", subject="slep"))
        # The slot must come back at the deadline, not when the guest's sleep ends.
        assert time.monotonic() - started < 2.0
        # A timer past the deadline that nobody waits on is no timeout: the call answers.
        answered = await pool.call(Event(id="e", source="t", type="t", subject="wait"))
        assert answered.status == 200
    finally:
        pool.close()
