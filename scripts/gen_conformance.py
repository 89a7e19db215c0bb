"""Write docs/conformance.md: every conformance rule, its test and the test's result.

Usage:
    python scripts/gen_conformance.py                  # run tests/conformance, (re)write the doc
    python scripts/gen_conformance.py --junit FILE     # (re)write it from an earlier run's junit XML
    python scripts/gen_conformance.py --junit A --junit B  # B (a rerun) replaces A's results it holds
    python scripts/gen_conformance.py --check          # exit 1 if the doc's rules and tests are stale
    python scripts/gen_conformance.py --junit FILE --figures DIR  # with the figures that run wrote

The rules and tests come from the test files themselves (their syntax tree, never imported):
one row per ``test_*`` function of ``tests/conformance/test_*.py``, its rule the first
sentence of its docstring or else its name read as a sentence, parametrized cases
collapsed into one row with their count. The results come from pytest's junit XML.
``--check`` runs no test: it compares the doc's rule and test columns with what the files
hold now (CI runs the tests themselves and fails on any failure).

The published figures (faults injected, inputs tried, fuzzing executions, the escape
matrix, soak figures) are what the tests themselves recorded through ``tests/figures.py``
after their checks passed: this script sets ``PROCTOR_FIGURES_DIR`` for the run and
renders every JSON block found there, so a figure is never typed in and a failing test
publishes none.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests" / "conformance"
OUT = ROOT / "docs" / "conformance.md"
SHOWN = "tests/conformance"
REGENERATE = "python scripts/gen_conformance.py"
FIGURES_ENV = "PROCTOR_FIGURES_DIR"  # tests/figures.py writes there when it is set
# The sections of published figures, in the order shown; any other section follows these.
SECTIONS = ("Faults injected", "Inputs tried", "Fuzzing", "Property tests", "Escape matrix", "Soak")


@dataclass(frozen=True)
class Rule:
    """One row: a test function, the rule it checks and its parametrized case count."""

    file: str
    name: str
    rule: str
    cases: int | None  # 1 when not parametrized; None when the count is not a simple literal
    parametrized: bool

    @property
    def test(self) -> str:
        """The test column: ``file::name``, and the case count when parametrized."""
        ident = f"`{SHOWN}/{self.file}::{self.name}`"
        if not self.parametrized:
            return ident
        return f"{ident} ({self.cases} cases)" if self.cases is not None else f"{ident} (cases)"


@dataclass
class Module:
    """One test module: its summary (the docstring's first sentence) and its rules."""

    file: str
    summary: str
    rules: list[Rule] = field(default_factory=list)


def first_sentence(text: str) -> str:
    """The first sentence of a docstring's first paragraph, on one line, markup made plain."""
    paragraph = " ".join(text.strip().split("\n\n", 1)[0].split())
    paragraph = re.sub(r":[a-z]+:`([^`]+)`", r"`\1`", paragraph).replace("``", "`")
    depth = 0
    for index, char in enumerate(paragraph):
        depth += {"(": 1, ")": -1}.get(char, 0)
        after = paragraph[index + 1 : index + 2]
        if depth <= 0 and char in ".:" and after in {" ", ""}:
            if char == "." and after and re.search(r"(\b[A-Za-z]|e\.g|i\.e|etc)$", paragraph[:index]):
                continue
            return paragraph[:index].strip()
    return paragraph.strip()


def name_as_sentence(name: str) -> str:
    """``test_a_revoked_admin_keeps_no_admin_right`` -> "A revoked admin keeps no admin right"."""
    words = name.removeprefix("test_").replace("_", " ").strip()
    return words[:1].upper() + words[1:]


def _literal_length(node: ast.expr, constants: dict[str, ast.expr]) -> int | None:
    """How many values a parametrize argvalues expression holds, if that is plain to see."""
    if isinstance(node, ast.Name) and node.id in constants:
        return _literal_length(constants[node.id], constants)
    if isinstance(node, ast.List | ast.Tuple | ast.Set):
        if any(isinstance(element, ast.Starred) for element in node.elts):
            return None
        return len(node.elts)
    if isinstance(node, ast.Dict):
        return None if any(key is None for key in node.keys) else len(node.keys)
    if isinstance(node, ast.Call):
        func = node.func
        if isinstance(func, ast.Name) and func.id in {"list", "sorted", "tuple"} and len(node.args) == 1:
            return _literal_length(node.args[0], constants)
        if isinstance(func, ast.Attribute) and func.attr in {"keys", "values", "items"} and not node.args:
            return _literal_length(func.value, constants)
    return None


def _is_parametrize(decorator: ast.expr) -> bool:
    if not isinstance(decorator, ast.Call):
        return False
    func = decorator.func
    return isinstance(func, ast.Attribute) and func.attr == "parametrize"


def _case_count(
    function: ast.FunctionDef | ast.AsyncFunctionDef, constants: dict[str, ast.expr]
) -> int | None:
    count: int | None = 1
    for decorator in function.decorator_list:
        if not isinstance(decorator, ast.Call) or not _is_parametrize(decorator):
            continue
        values = decorator.args[1] if len(decorator.args) > 1 else None
        for keyword in decorator.keywords:
            if keyword.arg == "argvalues":
                values = keyword.value
        length = _literal_length(values, constants) if values is not None else None
        count = None if length is None or count is None else count * length
    return count


def collect(directory: Path = TESTS) -> list[Module]:
    """Every conformance module and rule under ``directory``, in file and source order."""
    modules: list[Module] = []
    for path in sorted(directory.glob("test_*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        constants: dict[str, ast.expr] = {}
        for statement in tree.body:
            if isinstance(statement, ast.Assign) and len(statement.targets) == 1:
                target = statement.targets[0]
                if isinstance(target, ast.Name):
                    constants[target.id] = statement.value
            elif (
                isinstance(statement, ast.AnnAssign)
                and isinstance(statement.target, ast.Name)
                and statement.value is not None
            ):
                constants[statement.target.id] = statement.value
        doc = ast.get_docstring(tree)
        module = Module(path.name, first_sentence(doc) if doc else name_as_sentence(path.stem))
        for statement in tree.body:
            if isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef) and statement.name.startswith(
                "test"
            ):
                text = ast.get_docstring(statement)
                parametrized = any(_is_parametrize(d) for d in statement.decorator_list)
                module.rules.append(
                    Rule(
                        file=path.name,
                        name=statement.name,
                        rule=first_sentence(text) if text else name_as_sentence(statement.name),
                        cases=_case_count(statement, constants),
                        parametrized=parametrized,
                    )
                )
        if module.rules:
            modules.append(module)
    return modules


@dataclass
class Outcome:
    """The junit results of one test function's cases."""

    passed: int = 0
    failed: int = 0
    skipped: int = 0

    @property
    def total(self) -> int:
        """Every case that ran or was skipped."""
        return self.passed + self.failed + self.skipped

    def text(self) -> str:
        """The result column: pass, FAIL or skip, with counts when there are several cases."""
        if self.total == 0:
            return "not run"
        if self.total == 1:
            return "FAIL" if self.failed else ("skip" if self.skipped else "pass")
        if self.failed:
            return f"FAIL ({self.failed} of {self.total})"
        if self.skipped == self.total:
            return f"skip ({self.total})"
        if self.skipped:
            return f"pass ({self.passed}), skip ({self.skipped})"
        return f"pass ({self.total})"


@dataclass
class Run:
    """A parsed junit file: outcomes per ``(file, function)`` and the run's totals."""

    outcomes: dict[tuple[str, str], Outcome]
    seconds: float
    date: str
    runs: int = 1


def read_junit(path: Path) -> Run:
    """Outcomes per test function from pytest's junit XML (parametrized cases merged)."""
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    outcomes: dict[tuple[str, str], Outcome] = {}
    seconds = 0.0
    date = ""
    for suite in suites:
        seconds += float(suite.get("time", "0"))
        date = date or suite.get("timestamp", "")[:10]
        for case in suite.iter("testcase"):
            classname = case.get("classname", "")
            parts = [part for part in classname.split(".") if part.startswith("test_")]
            module = parts[-1] if parts else ""
            name = case.get("name", "").split("[", 1)[0]
            outcome = outcomes.setdefault((f"{module}.py", name), Outcome())
            if case.find("failure") is not None or case.find("error") is not None:
                outcome.failed += 1
            elif case.find("skipped") is not None:
                outcome.skipped += 1
            else:
                outcome.passed += 1
    return Run(outcomes, seconds, date)


def merge(runs: list[Run]) -> Run:
    """Several runs as one: a later run's outcomes for a test replace an earlier run's."""
    outcomes: dict[tuple[str, str], Outcome] = {}
    for run in runs:
        outcomes.update(run.outcomes)
    return Run(outcomes, sum(run.seconds for run in runs), runs[0].date if runs else "", len(runs))


@dataclass(frozen=True)
class Figure:
    """One block of figures a test recorded: its section, summary lines and table."""

    name: str
    section: str
    summary: tuple[str, ...]
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


def read_figures(directories: Iterable[Path]) -> list[Figure]:
    """Every block under these directories; a later directory's block replaces an earlier one's.

    A file that is not a well-formed block is an error naming the file (the page must not
    silently lose a figure the run recorded).
    """
    found: dict[str, Figure] = {}
    for directory in directories:
        for path in sorted(directory.glob("*.json")):
            try:
                doc = json.loads(path.read_text(encoding="utf-8"))
                figure = Figure(
                    name=path.stem,
                    section=str(doc["section"]),
                    summary=tuple(str(line) for line in doc.get("summary", [])),
                    columns=tuple(str(c) for c in doc.get("columns", [])),
                    rows=tuple(tuple(str(cell) for cell in row) for row in doc.get("rows", [])),
                )
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise SystemExit(f"{path}: not a figures block ({exc})") from exc
            if any(len(row) != len(figure.columns) for row in figure.rows):
                raise SystemExit(f"{path}: a row's cell count differs from the columns'")
            found[figure.name] = figure
    return list(found.values())


def render_figures(figures: list[Figure]) -> list[str]:
    """The "What was injected, tried and checked" part of the page."""
    if not figures:
        return []
    order = {name: index for index, name in enumerate(SECTIONS)}
    sections = sorted({f.section for f in figures}, key=lambda s: (order.get(s, len(order)), s))
    lines = [
        "## What was injected, tried and checked",
        "",
        "Recorded by the tests themselves in this run, after their checks passed (a failing",
        "test records nothing); the counts are what ran, never numbers typed in.",
        "",
    ]
    for section in sections:
        lines += [f"### {_cell(section)}", ""]
        for figure in sorted((f for f in figures if f.section == section), key=lambda f: f.name):
            lines += [f"`{figure.name}`", ""]
            lines += [f"- {line}" for line in figure.summary]
            if figure.summary:
                lines.append("")
            if figure.columns:
                lines.append("| " + " | ".join(_cell(c) for c in figure.columns) + " |")
                lines.append("|" + " --- |" * len(figure.columns))
                lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in figure.rows]
                lines.append("")
    return lines


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def machine() -> str:
    """The machine the run was on, without its host name."""
    return (
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    )


def render(modules: list[Module], run: Run, where: str, figures: list[Figure] | None = None) -> str:
    """The whole of docs/conformance.md for these rules and this run."""
    rows = [rule for module in modules for rule in module.rules]
    outcomes = [run.outcomes.get((rule.file, rule.name), Outcome()) for rule in rows]
    total = Outcome(
        sum(o.passed for o in outcomes), sum(o.failed for o in outcomes), sum(o.skipped for o in outcomes)
    )
    held = sum(1 for o in outcomes if o.total and not o.failed and o.passed)
    lines = [
        "# Conformance: the rules proctor holds",
        "",
        "<!-- Generated by scripts/gen_conformance.py from a run of tests/conformance; do not edit. -->",
        "",
        'Each row is one rule of the form "when X fails or is forged, proctor does Y", the test',
        "in `tests/conformance/` that checks it (named after the rule) and the test's result in",
        "the run this page was generated from. Parametrized cases share one row, with their count.",
        "",
        "This page is generated, never hand-edited. Regenerate it with",
        f"`{REGENERATE}` (it runs the conformance tests) or, from an earlier",
        f"run's junit XML, with `{REGENERATE} --junit FILE`.",
        f"`{REGENERATE} --check` (run by the unit tests, so by CI) fails when",
        "a rule or test listed here no longer matches the test files.",
        "",
        f"- Rules: {len(rows)} in {len(modules)} modules; held in this run: {held}; "
        f"not run: {sum(1 for o in outcomes if not o.total)}",
        f"- Test cases: {total.total}; passed: {total.passed}; failed: {total.failed}; "
        f"skipped: {total.skipped}",
        f"- Run: {run.date or 'unknown date'}, {run.seconds:.0f} s of tests"
        + (f" (merged from {run.runs} runs: a rerun's results replace the first's)" if run.runs > 1 else "")
        + f", on {where}",
        f"- Figures recorded by the tests: {len(figures or [])} blocks",
        "",
    ]
    lines += render_figures(figures or [])
    if modules:
        lines += ["## The rules", ""]
    for module in modules:
        lines += [f"### {_cell(module.summary)}", "", f"`{SHOWN}/{module.file}`", ""]
        lines += ["| Rule | Test | Result |", "| --- | --- | --- |"]
        for rule in module.rules:
            outcome = run.outcomes.get((rule.file, rule.name), Outcome())
            lines.append(f"| {_cell(rule.rule)} | {rule.test} | {outcome.text()} |")
        lines.append("")
    return "\n".join(lines)


_ROW = re.compile(
    r"^\|(?P<rule>.*?)(?<!\\)\|\s*(?P<test>`tests/conformance/[^`]+`.*?)(?<!\\)\|(?P<result>.*)\|\s*$"
)
_IDENT = re.compile(r"`tests/conformance/(?P<file>[^`:]+)::(?P<name>[^`]+)`")


def documented(doc: str) -> dict[tuple[str, str], tuple[str, str]]:
    """``(file, name) -> (rule, test)`` for every rule row of a generated doc."""
    rows: dict[tuple[str, str], tuple[str, str]] = {}
    for line in doc.splitlines():
        match = _ROW.match(line)
        if match is None:
            continue
        test = match.group("test").strip()
        ident = _IDENT.search(test)
        if ident is None:
            continue
        rows[(ident.group("file"), ident.group("name"))] = (match.group("rule").strip(), test)
    return rows


def check(doc: str, directory: Path = TESTS) -> list[str]:
    """What differs between the doc's rule and test columns and the test files (empty: current)."""
    wanted = {(r.file, r.name): (_cell(r.rule), r.test) for m in collect(directory) for r in m.rules}
    have = documented(doc)
    problems: list[str] = []
    for key, (rule, test) in wanted.items():
        shown = f"{SHOWN}/{key[0]}::{key[1]}"
        if key not in have:
            problems.append(f"missing from docs/conformance.md: {shown} ({rule!r})")
        elif have[key][0] != rule:
            problems.append(
                f"rule changed for {shown}: the doc says {have[key][0]!r}, the test file {rule!r}"
            )
        elif have[key][1] != test:
            problems.append(f"test column changed for {shown}: the doc says {have[key][1]}, the file {test}")
    for key in have:
        if key not in wanted:
            problems.append(f"in docs/conformance.md but no such test: {SHOWN}/{key[0]}::{key[1]}")
    return problems


def run_tests(junit: Path, figures: Path) -> int:
    """Run tests/conformance once, writing junit XML and figures; pytest's exit code."""
    command = [
        sys.executable,
        "-m",
        "pytest",
        str(TESTS),
        "-p",
        "no:cacheprovider",
        f"--junitxml={junit}",
        "-q",
    ]
    env = {**os.environ, FIGURES_ENV: str(figures)}
    return subprocess.run(command, cwd=ROOT, check=False, env=env).returncode


def main(argv: Iterable[str] | None = None) -> int:
    """Entry point: regenerate docs/conformance.md, or --check it."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="exit 1 if the doc's rules and tests are stale")
    parser.add_argument(
        "--junit",
        type=Path,
        action="append",
        help="results from this junit XML instead of a fresh run; repeat it to merge reruns "
        "(a later file's results for a test replace an earlier one's)",
    )
    parser.add_argument(
        "--figures",
        type=Path,
        action="append",
        help=f"with --junit: the {FIGURES_ENV} directory that run wrote; repeat it with reruns",
    )
    parser.add_argument("--machine", help="the machine line for the header (default: this machine)")
    args = parser.parse_args(list(argv) if argv is not None else None)
    if args.check:
        if not OUT.exists():
            print(f"{OUT.relative_to(ROOT)} does not exist: run {REGENERATE}", file=sys.stderr)
            return 1
        problems = check(OUT.read_text(encoding="utf-8"))
        for problem in problems:
            print(problem, file=sys.stderr)
        if problems:
            print(f"docs/conformance.md is out of date: run {REGENERATE}", file=sys.stderr)
            return 1
        return 0
    if args.junit:
        run = merge([read_junit(path) for path in args.junit])
        figures = read_figures(args.figures or [])
    else:
        with tempfile.TemporaryDirectory() as tmp:
            junit = Path(tmp) / "conformance.xml"
            code = run_tests(junit, Path(tmp) / "figures")
            if not junit.exists():
                print(
                    f"pytest wrote no junit XML (exit {code}); docs/conformance.md unchanged", file=sys.stderr
                )
                return 1
            run = read_junit(junit)
            figures = read_figures([Path(tmp) / "figures"])
    modules = collect()
    OUT.write_text(render(modules, run, args.machine or machine(), figures), encoding="utf-8")
    failed = sum(o.failed for o in run.outcomes.values())
    missing = [r for m in modules for r in m.rules if (r.file, r.name) not in run.outcomes]
    print(f"wrote {OUT.relative_to(ROOT)}: {failed} failed cases, {len(missing)} rules not run")
    return 1 if failed or missing else 0


if __name__ == "__main__":
    sys.exit(main())
