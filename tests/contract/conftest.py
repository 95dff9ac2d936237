"""Runs the contract suite once per broker module in ``tests/contract/brokers/`` (the
``harness`` and ``gateway`` fixtures built on ``harness_class`` are in tests/conftest.py)."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import AsyncIterator

import pytest

from tests.contract import brokers
from tests.contract.harness import BrokerHarness

HARNESSES: list[type[BrokerHarness]] = [
    importlib.import_module(f"{brokers.__name__}.{m.name}").HARNESS
    for m in pkgutil.iter_modules(brokers.__path__)
]


@pytest.fixture(params=HARNESSES, ids=lambda h: h.name)
def harness_class(request: pytest.FixtureRequest) -> type[BrokerHarness]:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
async def fault_harness(harness_class: type[BrokerHarness]) -> AsyncIterator[BrokerHarness]:
    async with harness_class.private() as h:
        yield h
