"""Runs the contract suite once per broker module in ``tests/contract/brokers/``."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.contract import brokers
from tests.contract.harness import BrokerHarness, Gateway

HARNESSES: list[type[BrokerHarness]] = [
    importlib.import_module(f"{brokers.__name__}.{m.name}").HARNESS
    for m in pkgutil.iter_modules(brokers.__path__)
]


@pytest.fixture(params=HARNESSES, ids=lambda h: h.name)
def harness_class(request: pytest.FixtureRequest) -> type[BrokerHarness]:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
async def harness(harness_class: type[BrokerHarness]) -> AsyncIterator[BrokerHarness]:
    h = harness_class()
    await h.setup()
    yield h
    await h.teardown()


@pytest.fixture
def gateway(harness: BrokerHarness, tmp_path: Path) -> Gateway:
    g = Gateway(harness, tmp_path)
    yield g  # type: ignore[misc]
    g.close()


@pytest.fixture
async def fault_harness(harness_class: type[BrokerHarness]) -> AsyncIterator[BrokerHarness]:
    async with harness_class.private() as h:
        yield h
