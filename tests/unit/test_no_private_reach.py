"""No code in ``src/proctor`` reaches into another object's private members (issue 10:
"no class reaches into another's underscore members").

``x._name`` is allowed only where ``x`` is the object or class the code belongs to:

- ``self``, ``cls`` or ``super()``;
- the enclosing class by its own name (``Contained._direct``: its own class attribute);
- a fresh instance the enclosing class builds in one of its own methods
  (``log = cls(...)`` then ``log._start_writer()``: a factory finishing its object).

Anything else needs a public method on the other object, or an entry in
:data:`ALLOWED` with the reason it is not a reach at all. Tests are not checked (their
fixtures may set up private state on purpose).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "proctor"

ALLOWED: dict[tuple[str, str], str] = {
    # os._exit is the standard library's documented way for a forked child to end
    # without running the parent's clean-up (atexit, buffered files); the underscore is
    # its public name, not a private member.
    ("os", "_exit"): "the os module's public _exit",
    # proctor.policy._cedar calls cedarpy's compiled functions, not its Python wrapper: a
    # deliberate use of a dependency's internals, checked at import with a fallback to the
    # public functions and an answer read strictly (ADR 0025). Nowhere else.
    ("cedarpy", "_internal"): "cedarpy's compiled module, used only by proctor.policy._cedar",
    (
        "cedar_entities",
        "_inner",
    ): "the compiled handle a cedarpy.Entities wraps, only in proctor.policy._cedar",
}
"""``(object as written, attribute)`` pairs that are not reaches, each with why."""

NAMEDTUPLE_API = frozenset({"_replace", "_asdict", "_fields", "_make", "_field_defaults"})
"""collections.namedtuple's documented public methods carry an underscore so as not to
clash with field names; calling them reaches into nothing."""


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


class _Reaches(ast.NodeVisitor):
    """Collects ``other._name`` accesses, tracking the enclosing class and the locals
    each method binds to a fresh instance of it."""

    def __init__(self) -> None:
        self.found: list[tuple[int, str]] = []
        self._classes: list[str] = []
        self._own_instances: list[set[str]] = [set()]

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self._classes.append(node.name)
        self.generic_visit(node)
        self._classes.pop()

    def _visit_function(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        own: set[str] = set()
        if self._classes:
            builders = {"cls", self._classes[-1]}
            for sub in ast.walk(node):
                if (
                    isinstance(sub, ast.Assign)
                    and isinstance(sub.value, ast.Call)
                    and isinstance(sub.value.func, ast.Name)
                    and sub.value.func.id in builders
                ):
                    own.update(t.id for t in sub.targets if isinstance(t, ast.Name))
        self._own_instances.append(own | self._own_instances[-1])
        self.generic_visit(node)
        self._own_instances.pop()

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self._visit_function(node)

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> None:
        self._visit_function(node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if _is_private(node.attr) and not self._owned(node.value) and node.attr not in NAMEDTUPLE_API:
            written = ast.unparse(node.value)
            if (written, node.attr) not in ALLOWED:
                self.found.append((node.lineno, f"{written}.{node.attr}"))
        self.generic_visit(node)

    def _owned(self, value: ast.expr) -> bool:
        if isinstance(value, ast.Name):
            return (
                value.id in ("self", "cls")
                or (bool(self._classes) and value.id == self._classes[-1])
                or value.id in self._own_instances[-1]
            )
        return isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id == "super"


def private_reaches(source: str) -> list[tuple[int, str]]:
    """``(line, expression)`` of every reach into another object's private member."""
    visitor = _Reaches()
    visitor.visit(ast.parse(source))
    return visitor.found


MODULES = sorted(p.relative_to(SRC).as_posix() for p in SRC.rglob("*.py"))


@pytest.mark.parametrize("module", MODULES)
def test_no_code_reaches_into_another_objects_private_members(module: str) -> None:
    found = private_reaches((SRC / module).read_text(encoding="utf-8"))
    shown = "; ".join(f"line {line}: {expr}" for line, expr in found)
    assert not found, f"src/proctor/{module} reaches into private members: {shown}"


_CASES = {
    "own member": ("class A:\n    def f(self):\n        return self._x\n", []),
    "class method": ("class A:\n    @classmethod\n    def f(cls):\n        return cls._x\n", []),
    "own class by name": ("class A:\n    def f(self):\n        return A._x\n", []),
    "super": ("class A(B):\n    def f(self):\n        return super()._x()\n", []),
    "a factory finishing its object": (
        "class A:\n    @classmethod\n    def make(cls):\n        a = cls()\n        a._x = 1\n        return a\n",
        [],
    ),
    "namedtuple API": ("def f(t):\n    return t._replace(a=1)\n", []),
    "os._exit": ("import os\ndef f():\n    os._exit(1)\n", []),
    "another object": ("def f(gov):\n    return gov._side_write\n", [(2, "gov._side_write")]),
    "another object's member's member": (
        "class A:\n    def f(self):\n        return self._other._private()\n",
        [(3, "self._other._private")],
    ),
    "another class by name": ("class A:\n    def f(self):\n        return B._x\n", [(3, "B._x")]),
    "an instance of another class": (
        "class A:\n    def f(self):\n        b = B()\n        return b._x\n",
        [(4, "b._x")],
    ),
    "module level": ("import m\nm._hidden()\n", [(2, "m._hidden")]),
}


@pytest.mark.parametrize(("source", "expected"), list(_CASES.values()), ids=list(_CASES))
def test_the_reach_rule_itself(source: str, expected: list[tuple[int, str]]) -> None:
    assert private_reaches(source) == expected
