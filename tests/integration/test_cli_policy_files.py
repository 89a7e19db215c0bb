"""``proctor policy check`` and ``push`` take one ``.cedar`` file as well as a directory,
and a syntax error names its file, line and column."""

from __future__ import annotations

import json
from pathlib import Path

from gov_server import cli

GOOD = '@id("dev-exec")\npermit (principal, action == Proctor::Action::"exec", resource) when { principal.role == "dev" };\n'


def test_check_and_push_take_one_cedar_file(tmp_path: Path) -> None:
    data = tmp_path / "data"
    cli("init", "--data", str(data), "--origin", "files.example/gov")
    policy = tmp_path / "only.cedar"
    policy.write_text(GOOD)
    checked = cli("policy", "check", str(policy))
    assert json.loads(checked.stdout)["ok"] is True
    cli("policy", "push", str(policy), "--data", str(data))
    shown = json.loads(cli("policy", "show", "--data", str(data)).stdout)
    assert "only.cedar" in json.dumps(shown)


def test_a_syntax_error_names_file_line_and_column(tmp_path: Path) -> None:
    policy = tmp_path / "bad.cedar"
    policy.write_text(GOOD + 'permit (principal, action, resource)\nwhen { principal.role == "dev" ;\n')
    done = cli("policy", "check", str(policy), check=False)
    assert done.returncode == 2
    assert "bad.cedar:4:32: unexpected token `;`" in done.stdout + done.stderr
