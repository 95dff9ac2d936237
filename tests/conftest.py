from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import structlog

from tests.contract.harness import BrokerHarness, Gateway

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


# A module that tests one broker adapter defines ``harness_class`` (tests/contract/conftest.py
# parametrizes it over every broker); these give each test a fresh destination on it and a
# Gateway that writes the manifest for it.

@pytest.fixture
async def harness(harness_class: type[BrokerHarness]) -> AsyncIterator[BrokerHarness]:
    h = harness_class()
    await h.setup()
    yield h
    await h.teardown()


@pytest.fixture
def gateway(harness: BrokerHarness, tmp_path: Path) -> Iterator[Gateway]:
    g = Gateway(harness, tmp_path)
    yield g
    g.close()
