"""Progress for slow steps (compiling or building a component takes seconds).

On a terminal: one line that spins and counts seconds, replaced by a result line at the end.
Anywhere else (CI, a container log, a pipe): exactly one log line at start and one at the end
with the duration, so logs stay greppable and free of control characters.
"""

from __future__ import annotations

import itertools
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

import structlog

log = structlog.get_logger("wasmgate")

_FRAMES = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
_REFRESH_SECONDS = 0.1


def is_interactive(stream: TextIO | None = None) -> bool:
    """Return whether ``stream`` (default: stderr) is a terminal a spinner may redraw."""
    stream = stream if stream is not None else sys.stderr
    try:
        return stream.isatty()
    except ValueError:  # closed stream (e.g. after pytest's capture ends)
        return False


@contextmanager
def progress(label: str, *, stream: TextIO | None = None, **fields: Any) -> Iterator[None]:
    """Show that ``label`` (e.g. ``compiling hello``) is under way until the block exits.

    ``fields`` go into the log lines. An exception from the block is re-raised after the
    line says the step failed.
    """
    out = stream if stream is not None else sys.stderr
    started = time.monotonic()
    if not is_interactive(out):
        log.info(label, **fields)
        try:
            yield
        except BaseException:
            log.warning(f"{label}: failed", seconds=_elapsed(started), **fields)
            raise
        log.info(f"{label}: done", seconds=_elapsed(started), **fields)
        return

    done = threading.Event()

    def spin() -> None:
        for frame in itertools.cycle(_FRAMES):
            out.write(f"\r\x1b[2K{frame} {label} {time.monotonic() - started:.1f}s")
            out.flush()
            if done.wait(_REFRESH_SECONDS):
                return

    # A thread, because the work blocks this one (wasmtime's compile and subprocess waits
    # release the GIL, so the spinner keeps turning).
    spinner = threading.Thread(target=spin, name="wasmgate-progress", daemon=True)
    spinner.start()
    ok = False
    try:
        yield
        ok = True
    finally:
        done.set()
        spinner.join()
        mark = "✓" if ok else "✗"
        outcome = "" if ok else " failed"
        out.write(f"\r\x1b[2K{mark} {label}{outcome} ({_elapsed(started):.1f}s)\n")
        out.flush()


def _elapsed(started: float) -> float:
    return round(time.monotonic() - started, 2)


__all__ = ["is_interactive", "progress"]
