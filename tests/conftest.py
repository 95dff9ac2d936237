from __future__ import annotations

from collections.abc import Iterator

import pytest
import structlog


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    # The CLI configures structlog to print to the stderr it sees; under capsys that stream
    # is closed after the test, so every test starts from structlog's defaults.
    yield
    structlog.reset_defaults()
