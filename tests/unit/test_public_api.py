"""Each module's ``__all__`` is curated: it names only what exists, and every public name."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import proctor
import proctor.errors

MODULES = sorted(
    m.name for m in pkgutil.walk_packages(proctor.__path__, "proctor.") if not m.name.endswith("__main__")
)


@pytest.mark.parametrize("name", MODULES)
def test_all_names_exist_and_cover_public_definitions(name: str) -> None:
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    assert exported is not None, f"{name} has no __all__"
    assert len(exported) == len(set(exported)), f"{name}.__all__ repeats a name"
    for attr in exported:
        assert hasattr(module, attr), f"{name}.__all__ names {attr}, which does not exist"
    defined_here = {
        n
        for n, obj in vars(module).items()
        if not n.startswith("_")
        and (inspect.isclass(obj) or inspect.isfunction(obj))
        and getattr(obj, "__module__", None) == name
    }
    missing = defined_here - set(exported)
    assert not missing, f"{name} defines public {sorted(missing)} but does not export them"


def test_every_exception_derives_from_proctor_error_and_ends_in_error() -> None:
    for attr in proctor.errors.__all__:
        cls = getattr(proctor.errors, attr)
        assert issubclass(cls, proctor.errors.ProctorError)
        assert attr.endswith("Error")
