"""Progress of slow steps: a spinner line on a terminal, two log lines anywhere else."""

from __future__ import annotations

import io
import time

import pytest
from structlog.testing import capture_logs

from gateway.progress import progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_off_a_terminal_one_line_at_start_and_one_at_end() -> None:
    stream = io.StringIO()
    with capture_logs() as logs, progress("compiling component hello", stream=stream,
                                          source="build/hello.wasm"):
        pass
    assert [e["event"] for e in logs] == ["compiling component hello",
                                          "compiling component hello: done"]
    assert logs[1]["source"] == "build/hello.wasm"
    assert logs[1]["seconds"] >= 0
    assert stream.getvalue() == ""


def test_off_a_terminal_a_failure_is_logged_and_raised() -> None:
    with capture_logs() as logs, pytest.raises(RuntimeError, match="bad wasm"), \
            progress("compiling component x", stream=io.StringIO()):
        raise RuntimeError("bad wasm")
    assert [e["event"] for e in logs] == ["compiling component x",
                                          "compiling component x: failed"]
    assert logs[1]["log_level"] == "warning"


def test_on_a_terminal_a_spinner_with_elapsed_time_then_a_result_line() -> None:
    term = _Terminal()
    with capture_logs() as logs, progress("building component hello", stream=term):
        # Until two frames are drawn, however slowly this machine runs the spinner thread.
        deadline = time.monotonic() + 30
        while term.getvalue().count("building component hello") < 2:
            assert time.monotonic() < deadline, f"no second frame: {term.getvalue()!r}"
            time.sleep(0.01)
    out = term.getvalue()
    assert logs == []
    frames = [part for part in out.split("\r") if "building component hello" in part]
    assert len(frames) >= 2
    assert any(part.rstrip().endswith("s") and "⠋" in part for part in frames)
    assert out.endswith("\n")
    assert "✓ building component hello (" in out.rsplit("\r", 1)[-1]


def test_on_a_terminal_a_failure_is_marked() -> None:
    term = _Terminal()
    with pytest.raises(ValueError), progress("building component x", stream=term):
        raise ValueError("nope")
    assert "✗ building component x failed (" in term.getvalue()
