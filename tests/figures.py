"""Published figures: what a conformance suite measured, for docs/conformance.md.

A suite that injects faults, tries inputs, fuzzes, runs the escape matrix or soaks calls
:func:`record` with what it did and what held. When ``PROCTOR_FIGURES_DIR`` is set (by
``scripts/gen_conformance.py`` when it runs the tests) each call writes one JSON file
there, which the generator renders as a table under its section; otherwise nothing is
written, so an ordinary test run leaves no files behind.

The figures are counts and outcomes the test *checked* (a fault injected and the checks
that passed after it), never numbers typed in: a test records only after its checks ran.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path

__all__ = ["ENV", "record"]

ENV = "PROCTOR_FIGURES_DIR"
_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,80}")


def record(
    name: str,
    *,
    section: str,
    summary: Sequence[str] = (),
    columns: Sequence[str] = (),
    rows: Sequence[Sequence[object]] = (),
) -> None:
    """Write one block of figures to ``$PROCTOR_FIGURES_DIR/<name>.json`` (when set).

    ``section`` is the heading it appears under (blocks with the same section are shown
    together, sorted by name); ``summary`` lines are shown as a list, then the table of
    ``columns`` and ``rows`` (cells are shown with ``str``). ``name`` is unique per block.
    """
    out = os.environ.get(ENV)
    if not out:
        return
    if not _NAME.fullmatch(name):
        raise ValueError(f"figure name must match {_NAME.pattern}, got {name!r}")
    width = len(columns)
    for row in rows:
        if len(row) != width:
            raise ValueError(f"figure {name}: a row has {len(row)} cells, the columns are {width}")
    doc = {
        "section": section,
        "summary": [str(line) for line in summary],
        "columns": [str(c) for c in columns],
        "rows": [[str(cell) for cell in row] for row in rows],
    }
    path = Path(out) / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(path)
