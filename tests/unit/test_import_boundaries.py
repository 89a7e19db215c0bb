"""Import boundaries between the packages (docs/architecture.md, "What each package may import").

An enforcer talks to the governor only over HTTP: starting a governed command must not
load the governor, Cedar or the web framework. Each check runs in a fresh interpreter,
so modules imported by other tests cannot hide or fake an import.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from proctor.cli import app

_GOVERNOR_SIDE = ("proctor.governor", "cedarpy", "fastapi", "starlette", "uvicorn")

_IMPORT = "import {module}, sys\n"
_ENTRY_POINT = (
    "import sys\n"
    "sys.argv = ['proctor', {args}]\n"
    "from proctor.cli import main\n"
    "try:\n"
    "    main()\n"
    "except SystemExit:\n"
    "    pass\n"
)
_REPORT = "print(__import__('json').dumps(sorted(m for m in sys.modules if m.startswith({prefixes!r}))))\n"


def _loaded(setup: str, prefixes: tuple[str, ...] = _GOVERNOR_SIDE) -> list[str]:
    """The modules under ``prefixes`` that a fresh interpreter holds after ``setup``."""
    code = setup + "import sys\nsys.stdout.flush()\n" + _REPORT.format(prefixes=prefixes)
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    last = done.stdout.strip().splitlines()[-1]
    loaded: list[str] = json.loads(last)
    return loaded


def test_cli_run_imports_no_governor() -> None:
    """``import proctor.cli_run`` (what ``proctor run`` needs) loads nothing of the governor side."""
    code = (
        "import proctor.cli_run, sys; print(sorted(m for m in sys.modules if m.startswith("
        "('proctor.governor','cedarpy','fastapi','starlette','uvicorn'))))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "module",
    ["proctor.client", "proctor.cli_run", "proctor.enforcement.supervisor", "proctor.cli"],
    ids=["client", "cli_run", "supervisor", "cli"],
)
def test_enforcer_side_imports_no_governor(module: str) -> None:
    """The client, ``proctor run`` and the supervisor load nothing of the governor side."""
    assert _loaded(_IMPORT.format(module=module)) == []


def test_proctor_run_entry_point_imports_no_governor() -> None:
    """``proctor run --help`` through the console entry point loads no governor code."""
    assert _loaded(_ENTRY_POINT.format(args="'run', '--help'")) == []


def test_proctor_run_entry_point_loads_no_admin_commands() -> None:
    """Only the module of the invoked command is imported (the admin commands are not)."""
    loaded = _loaded(_ENTRY_POINT.format(args="'run', '--help'"), ("proctor.cli_admin", "proctor.demo"))
    assert loaded == []


def test_proctor_run_entry_point_loads_nothing_it_does_not_use() -> None:
    """What ``proctor run`` pays for at each start: not the log and its stores, not httpx
    (an ``http://`` governor is asked with ``http.client``), and should anything import
    httpx later, not its own command line (``httpx._main`` held off: click's and
    pygments' imports)."""
    # A run that stops at its key file (missing): the start of the path, without rendering help.
    args = "'run', '--server', 'http://127.0.0.1:9', '--key', '/nonexistent/k.key', '--', 'true'"
    setup = _ENTRY_POINT.format(args=args)
    assert _loaded(setup, ("proctor.lineage.log", "proctor.store", "pygments", "click", "rich")) == []
    held_off = (
        setup + "assert 'httpx' not in sys.modules\nimport httpx\nassert sys.modules['httpx._main'] is None\n"
    )
    assert _loaded(held_off, ("httpx._main",)) == ["httpx._main"]


def test_proctor_run_path_loads_no_httpx() -> None:
    """The run path (its launcher, the supervisor, the fail-over client) asks an
    ``http://`` governor with ``http.client``: httpx and httpcore, a third of the
    start's imports, are not loaded (``proctor.client.plain_http``)."""
    modules = "proctor.cli_launch, proctor.enforcement.supervisor, proctor.enforcement._failover"
    setup = _IMPORT.format(module=modules) + (
        # A request that fails to connect: the transport was chosen and used.
        "from proctor.client import GovernorClient, GovernorError\n"
        "try:\n"
        "    GovernorClient('http://127.0.0.1:9', None, timeout=2).call('GET', '/healthz', signed=False)\n"
        "except GovernorError:\n"
        "    pass\n"
        "sys.modules = {k: v for k, v in sys.modules.items() if v}\n"
    )
    assert _loaded(setup, ("httpx", "httpcore", "h11", "anyio")) == []


def test_version_is_read_when_asked_for() -> None:
    """``proctor.__version__`` is still there (from the installed metadata), only later."""
    code = "import proctor, sys\nassert 'importlib.metadata' not in sys.modules\nprint(proctor.__version__)\n"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(r"[0-9][0-9A-Za-z.+-]*", done.stdout.strip())


def test_verification_is_pure() -> None:
    """Layer 3 imports no I/O layer: no store, governor, enforcement, client or lineage log."""
    edges = ("proctor.store", "proctor.governor", "proctor.enforcement", "proctor.client", "proctor.lineage")
    assert _loaded(_IMPORT.format(module="proctor.verification"), edges) == []


_COMMANDS = [
    "init",
    "demo",
    "serve",
    "authorize",
    "revoke",
    "run",
    "receipt",
    "verify",
    "log",
    "principal",
    "policy",
    "warrant",
    "executions",
]


def test_lazy_commands_are_all_listed_in_order() -> None:
    """``proctor --help`` lists every command, in the order Typer gave before loading was lazy."""
    result = CliRunner().invoke(app, ["--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    rows = [line.split()[1] for line in result.output.splitlines() if line.startswith("│ ") and "  " in line]
    assert [r for r in rows if r in _COMMANDS] == _COMMANDS


@pytest.mark.parametrize("command", _COMMANDS)
def test_each_command_resolves(command: str) -> None:
    """Each command, loaded on its own, answers ``--help``."""
    result = CliRunner().invoke(app, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


def test_unknown_command_suggests_a_lazily_loaded_one() -> None:
    """A typo is still matched against every command, loaded or not."""
    done = subprocess.run(
        [sys.executable, "-m", "proctor", "rnu"], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 2
    assert "Did you mean 'run'?" in done.stderr
