"""Every public module says what it exports (``__all__``), and says all of it, as httpx
pins its own surface: each name in ``__all__`` exists, and each public class or function a
module defines is listed (a helper that is not for import starts with ``_``)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from types import ModuleType

import pytest

import bindings
import gateway
import triggers

# Guest-side code (componentize-py SDK, project templates) and the optional JS toolchain
# are not the gateway's import surface.
_SKIP = ("bindings.sdk", "bindings.templates", "bindings.js", "gateway.__main__")


def _modules() -> list[str]:
    names = []
    for package in (gateway, triggers, bindings):
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            if not info.name.startswith(_SKIP):
                names.append(info.name)
    return sorted(names)


def _load(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError as exc:  # a broker client or native module not installed here
        pytest.skip(f"{name}: {exc}")


@pytest.mark.parametrize("name", _modules())
def test_all_names_what_the_module_defines(name: str) -> None:
    module = _load(name)
    exported = getattr(module, "__all__", None)
    if exported is None:
        assert module.__file__ and module.__file__.endswith("__init__.py"), \
            f"{name} has no __all__"
        return
    missing = [n for n in exported if not hasattr(module, n)]
    assert not missing, f"{name}.__all__ names what it does not have: {missing}"
    defined = {n for n, obj in vars(module).items()
               if not n.startswith("_") and (inspect.isclass(obj) or inspect.isfunction(obj))
               and getattr(obj, "__module__", None) == name}
    unlisted = sorted(defined - set(exported))
    assert not unlisted, f"{name} defines public names missing from __all__: {unlisted}"
