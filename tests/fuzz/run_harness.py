"""Run one fuzz harness under atheris (libFuzzer): ``python tests/fuzz/run_harness.py NAME
[libFuzzer flags and corpus directories]``.

The parser's modules (the harness's ``INSTRUMENT``) are imported with coverage
instrumentation, then
libFuzzer drives ``one_input`` (and the harness's ``mutate``, if it has one, as its
custom mutator). ``scripts/fuzz.py`` and ``tests/conformance/test_fuzzed_parsers.py``
call this with the flags they need; run by hand, for example::

    python tests/fuzz/run_harness.py note -max_total_time=60 /tmp/new tests/fuzz/corpus/note
"""

from __future__ import annotations

import ast
import importlib
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def _instrumented(name: str) -> tuple[str, ...]:
    """The harness's ``INSTRUMENT``, read from its source without importing it: only the
    parser's own modules are instrumented (instrumenting all of proctor, the governor's
    included, costs seconds at every start for coverage the harness never reaches)."""
    tree = ast.parse((Path(__file__).resolve().parent / f"fuzz_{name}.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "INSTRUMENT" for t in node.targets):
            value = ast.literal_eval(node.value)
            if isinstance(value, tuple) and all(isinstance(v, str) for v in value):
                return value
    raise SystemExit(f"tests/fuzz/fuzz_{name}.py names no INSTRUMENT tuple of module names")


def main() -> None:
    """Parse the harness name, instrument, and hand the rest of argv to libFuzzer."""
    if len(sys.argv) < 2 or sys.argv[1].startswith("-"):
        sys.exit(f"usage: {sys.argv[0]} NAME [libFuzzer flags] [corpus dirs]")
    name = sys.argv[1]
    # Import the harnesses as the package ``fuzz`` (as pytest does, with tests/ on the
    # path), never this directory's files as top-level modules.
    here = str(Path(__file__).resolve().parent)
    sys.path[:] = [str(TESTS)] + [p for p in sys.path if p not in ("", here)]
    import atheris  # type: ignore[import-untyped]

    with atheris.instrument_imports(include=list(_instrumented(name))):
        module = importlib.import_module(f"fuzz.fuzz_{name}")
    mutate = getattr(module, "mutate", None)
    atheris.Setup([sys.argv[0], *sys.argv[2:]], module.one_input, custom_mutator=mutate)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
