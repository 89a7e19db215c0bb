"""Exit codes: one table (``proctor.exitcodes.ExitCode``), used by every command, in the README.

The rules: the README's table is the enum's rendering (they cannot drift); no command
module exits with a bare integer (each status is a named member of the table); the
numbers are a public contract (pinned here); and real commands, run as a user runs
them, exit with the documented code.
"""

from __future__ import annotations

import ast
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

import proctor
from gov_server import GovernorServer, cli, free_port
from proctor import cli as proctor_cli
from proctor import cli_admin, exitcodes
from proctor.authorization.keys import PrincipalKey
from proctor.enforcement import supervisor
from proctor.exitcodes import ExitCode, markdown_table

SRC = Path(proctor.__file__).parent
README = SRC.parents[1] / "README.md"
COMMAND_MODULES = [*sorted(SRC.glob("cli*.py")), SRC / "demo.py"]
_EXIT_CALLS = {"Exit", "exit", "SystemExit", "fail"}


# -- the table ------------------------------------------------------------------------


def test_exit_code_numbers_are_a_public_contract() -> None:
    assert {c.name: c.value for c in ExitCode} == {
        "OK": 0,
        "VERIFY_FAILED": 1,
        "BAD_INPUT": 2,
        "UNAVAILABLE": 3,
        "DENIED": 77,
        "TERMINATED": 79,
    }
    # The old public names are aliases of the table's members.
    assert (proctor_cli.EXIT_OK, proctor_cli.EXIT_VERIFY_FAILED, proctor_cli.EXIT_BAD_INPUT) == (
        ExitCode.OK,
        ExitCode.VERIFY_FAILED,
        ExitCode.BAD_INPUT,
    )
    assert (cli_admin.EXIT_DENIED, cli_admin.EXIT_UNAVAILABLE) == (ExitCode.DENIED, ExitCode.UNAVAILABLE)
    # `proctor run` returns the supervisor's statuses as they are: the same numbers.
    assert (supervisor.EXIT_DENIED, supervisor.EXIT_TERMINATED) == (ExitCode.DENIED, ExitCode.TERMINATED)


def _readme_table(text: str) -> str:
    lines = text.splitlines()
    if "## Exit codes" not in lines:
        raise AssertionError("README.md has no '## Exit codes' section")
    rest = lines[lines.index("## Exit codes") + 1 :]
    start = next((i for i, line in enumerate(rest) if line.startswith("|")), None)
    if start is None or any(line.startswith("## ") for line in rest[:start]):
        raise AssertionError("README.md's '## Exit codes' section has no table")
    block = []
    for line in rest[start:]:
        if not line.startswith("|"):
            break
        block.append(line)
    return "\n".join(block) + "\n"


def test_readme_exit_code_table_is_the_enum_rendering() -> None:
    found = _readme_table(README.read_text(encoding="utf-8"))
    assert found == markdown_table(), (
        "README.md's exit-code table differs from ExitCode; paste the output of "
        f"`python -m proctor.exitcodes`:\n{markdown_table()}"
    )


def test_every_exit_code_has_a_one_line_meaning() -> None:
    rows = markdown_table().splitlines()[2:]
    assert [row.split(" | ")[0] for row in rows] == [f"| {c.value}" for c in sorted(ExitCode)]
    for code in ExitCode:
        assert code.meaning.strip()
        assert "\n" not in code.meaning


def test_a_meaning_that_would_break_the_table_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(exitcodes._MEANINGS, ExitCode.OK, "success | or not")
    with pytest.raises(ValueError, match="expected a one-line meaning without '\\|' for OK"):
        markdown_table()


# -- no bare integer exit statuses ----------------------------------------------------------


def _int_literals(node: ast.AST) -> list[int]:
    """The integer literals that can be the value of ``node`` (not a condition's operands)."""
    if isinstance(node, ast.Constant):
        return [node.value] if isinstance(node.value, int) and not isinstance(node.value, bool) else []
    if isinstance(node, ast.IfExp):
        return _int_literals(node.body) + _int_literals(node.orelse)
    if isinstance(node, ast.BoolOp):
        return [v for value in node.values for v in _int_literals(value)]
    if isinstance(node, ast.BinOp):
        return _int_literals(node.left) + _int_literals(node.right)
    if isinstance(node, ast.UnaryOp):
        return _int_literals(node.operand)
    return []


def bare_exit_statuses(source: str, filename: str) -> list[str]:
    """Where ``source`` exits with, names or compares a return code to an integer literal."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name not in _EXIT_CALLS:
                continue
            status = (
                node.args[0] if node.args else next((k.value for k in node.keywords if k.arg == "code"), None)
            )
            if status is not None and _int_literals(status):
                found.append(f"{filename}:{node.lineno}: {name}({ast.unparse(status)})")
        elif isinstance(node, ast.Assign):
            # A second table of named integers (EXIT_X = 2) drifts from the one table.
            names = [t.id for t in node.targets if isinstance(t, ast.Name) and t.id.startswith("EXIT_")]
            if names and _int_literals(node.value):
                found.append(f"{filename}:{node.lineno}: {names[0]} = {ast.unparse(node.value)}")
        elif isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            compares_status = any(isinstance(o, ast.Attribute) and o.attr == "returncode" for o in operands)
            if compares_status and any(_int_literals(o) for o in operands):
                found.append(f"{filename}:{node.lineno}: {ast.unparse(node)}")
    return found


@pytest.mark.parametrize("path", COMMAND_MODULES, ids=lambda p: p.name)
def test_no_command_exits_with_a_bare_integer(path: Path) -> None:
    assert bare_exit_statuses(path.read_text(encoding="utf-8"), path.name) == []


@pytest.mark.parametrize(
    "source",
    [
        "raise typer.Exit(2) from None",
        "raise typer.Exit(2 if e.status else 3)",
        "sys.exit(1)",
        "raise SystemExit(code=79)",
        "fail(2, 'error: x')",
        "fail(_code(e) if e.status != 401 else 77, 'error: x')",
        "ok &= job.returncode == 79",
        "EXIT_DENIED = 77",
    ],
    ids=[
        "typer-exit",
        "conditional",
        "sys-exit",
        "system-exit-keyword",
        "fail",
        "conditional-else",
        "returncode-compare",
        "exit-constant",
    ],
)
def test_the_scan_finds_bare_integer_exit_statuses(source: str) -> None:
    assert bare_exit_statuses(source, "x.py") != []


def test_the_scan_accepts_named_exit_codes() -> None:
    source = (
        "raise typer.Exit(ExitCode.BAD_INPUT if e.status else ExitCode.UNAVAILABLE)\n"
        "fail(ExitCode.DENIED, f'error: line {n + 1}')\n"
        "fail(_code(e) if e.status != 401 else ExitCode.DENIED, 'error: x')\n"
        "ok &= job.returncode == ExitCode.TERMINATED\n"
        "raise typer.Exit(Supervisor(options, command).run())\n"
        "EXIT_DENIED = ExitCode.DENIED\n"
    )
    assert bare_exit_statuses(source, "x.py") == []


# -- real commands exit with the documented code -----------------------------------------


@pytest.fixture(scope="module")
def gov(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GovernorServer]:
    # No policy bundle is pushed: the governor denies everything.
    server = GovernorServer(tmp_path_factory.mktemp("exitgov"), origin="exit.example/gov")
    try:
        yield server
    finally:
        server.stop()


def test_log_verify_on_a_tampered_log_exits_verify_failed(tmp_path: Path) -> None:
    data = tmp_path / "data"
    cli("init", "--data", str(data), "--origin", "exit.example/log")
    events = "".join(
        json.dumps({"v": 1, "type": "decision", "time": "2026-11-26T06:00:00Z", "n": i}) + "\n"
        for i in range(4)
    )
    cli("log", "append", "--data", str(data), input=events)
    assert cli("log", "verify", "--data", str(data)).returncode == ExitCode.OK
    with sqlite3.connect(data / "proctor.db") as conn:
        raw = bytearray(conn.execute("SELECT data FROM entries WHERE idx = 3").fetchone()[0])
        raw[raw.index(b'"n":') + 4] ^= 0x01  # a digit becomes another digit: still valid JSON
        conn.execute("UPDATE entries SET data = ? WHERE idx = 3", (bytes(raw),))
    proc = cli("log", "verify", "--data", str(data), check=False)
    assert proc.returncode == ExitCode.VERIFY_FAILED, proc.stderr
    assert "at index 3" in proc.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("run", "--server", "http://127.0.0.1:9", "--key", "{missing}", "--", "true"),
        (
            "authorize",
            "--server",
            "http://127.0.0.1:9",
            "--key",
            "{missing}",
            "--action",
            "tool.call",
            "--resource",
            "srv/tool",
        ),
        ("receipt", "ex_none", "--server", "http://127.0.0.1:9", "--key", "{missing}"),
        ("log", "entry", "not-a-number", "--data", "{tmp}"),
        ("log", "checkpoint", "--data", "{tmp}/nothing"),
    ],
    ids=["run-missing-key", "authorize-missing-key", "receipt-missing-key", "usage", "uninitialised-data"],
)
def test_bad_input_exits_bad_input(tmp_path: Path, args: tuple[str, ...]) -> None:
    argv = [a.format(missing=tmp_path / "missing.key", tmp=tmp_path) for a in args]
    proc = cli(*argv, check=False)
    assert proc.returncode == ExitCode.BAD_INPUT, proc.stderr


@pytest.mark.parametrize("command", ["authorize", "receipt"])
def test_an_unreachable_governor_exits_unavailable(tmp_path: Path, command: str) -> None:
    key = PrincipalKey.generate("alice")
    key.save(tmp_path / "alice.key")
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    args = (
        ("authorize", "--action", "tool.call", "--resource", "srv/tool")
        if command == "authorize"
        else ("receipt", "ex_none")
    )
    proc = cli(*args, "--server", url, "--key", str(tmp_path / "alice.key"), check=False)
    assert proc.returncode == ExitCode.UNAVAILABLE, proc.stderr
    assert "cannot reach the governor" in proc.stderr


def test_a_second_governor_on_one_data_directory_exits_unavailable(gov: GovernorServer) -> None:
    proc = cli("serve", "--data", str(gov.data), "--port", str(free_port()), check=False)
    assert proc.returncode == ExitCode.UNAVAILABLE, proc.stderr


def test_a_denied_request_exits_denied(gov: GovernorServer) -> None:
    proc = cli("authorize", "--server", gov.url, "--key", str(gov.key), "--action", "tool.call",
               "--resource", "srv/tool", check=False)  # fmt: skip
    assert proc.returncode == ExitCode.DENIED, proc.stderr
    assert json.loads(proc.stdout)["allow"] is False
    run = cli("run", "--server", gov.url, "--key", str(gov.key), "--", "true", check=False)
    assert run.returncode == ExitCode.DENIED, run.stderr
    assert "denied" in run.stderr
