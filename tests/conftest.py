from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

# Compiled components are shared by every test app (and the gateways tests spawn): a
# componentize-py component compiles in seconds, loads from the cache in milliseconds.
os.environ.setdefault("WASMGATE_CACHE_DIR",
                      str(Path(__file__).parent / "fixtures" / "build" / "compiled"))


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    # The CLI configures structlog to print to the stderr it sees; under capsys that stream
    # is closed after the test, so every test starts from structlog's defaults.
    yield
    structlog.reset_defaults()
