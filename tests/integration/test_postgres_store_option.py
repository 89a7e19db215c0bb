"""``--store URL`` on every command that touches the store, declared alike (issue 12:
"selected by --store postgresql://… or PROCTOR_STORE on every command that touches the
store"), and a URL that is not PostgreSQL's refused without echoing it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from proctor.cli import app

STORE_COMMANDS = [
    "init", "serve", "migrate", "revoke",
    "principal add", "principal suspend", "principal resume", "principal list",
    "policy push", "policy show", "policy replay",
    "log key", "log checkpoint", "log entry", "log proof", "log consistency", "log verify", "log append",
    "log cosign",
    "executions list", "executions show",
]  # fmt: skip


def command(path: str) -> tuple[Any, Any]:
    cmd: Any = typer.main.get_command(app)
    ctx = cmd.make_context("proctor", ["--help"], resilient_parsing=True)
    for name in path.split():
        sub = cmd.get_command(ctx, name)
        ctx = type(ctx)(sub, parent=ctx, info_name=name)
        cmd = sub
    return cmd, ctx


@pytest.mark.parametrize("path", STORE_COMMANDS)
def test_every_command_that_touches_the_store_takes_store_url(path: str) -> None:
    cmd, ctx = command(path)
    options = {p.opts[0]: p for p in cmd.get_params(ctx) if p.param_type_name == "option"}
    assert "--store" in options, f"proctor {path} has no --store"
    store = options["--store"]
    assert (store.envvar, store.metavar, store.default) == ("PROCTOR_STORE", "URL", None)
    assert "postgresql://" in store.help
    assert "--data" in options  # the keys and the configuration stay in the data directory


@pytest.mark.parametrize(
    "args",
    [["log", "verify"], ["principal", "list"], ["init", "--data", "{tmp}/new"]],
    ids=["log verify", "principal list", "init"],
)
def test_a_store_url_that_is_not_postgresql_is_refused_without_its_secret(
    args: list[str], tmp_path: Path
) -> None:
    from proctor.governor.service import initialize

    initialize(tmp_path / "d")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in args]
    if "--data" not in argv:
        argv += ["--data", str(tmp_path / "d")]
    result = CliRunner().invoke(app, [*argv, "--store", "mysql://root:hunter2@db/proctor"])
    assert result.exit_code == 2, result.output
    assert "expected a store URL starting postgresql://, found 'mysql'" in result.stderr
    assert "hunter2" not in result.output + result.stderr
    assert not (tmp_path / "new").exists()
