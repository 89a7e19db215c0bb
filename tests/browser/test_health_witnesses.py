"""The health dashboard with witnesses configured: their cosignatures, submissions and
readiness, from a real witness (``proctor witness serve``); a witness's name is text."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import httpx
import pytest

from browser_support import watch_errors
from gov_server import GovernorServer, cli
from witness_support import WitnessServer

pytestmark = pytest.mark.slow


def test_witness_cosignatures_show_when_witnesses_are_configured(tmp_path: Path, page: Any) -> None:
    data = tmp_path / "gov" / "data"
    cli("init", "--data", str(data), "--origin", "health.example/witnessed")
    witness = WitnessServer(tmp_path / "w1", name="witness.example/w1", trust=(data,))
    gov = None
    try:
        (data / "witnesses.txt").write_text(
            f"witness <b>w1</b> {witness.vkey} {witness.url}\nquorum <b>w1</b>\n"
        )
        with (data / "config.toml").open("a") as f:
            f.write('\n[witnesses]\npolicy = "witnesses.txt"\ninterval_ms = 300\n')
        gov = GovernorServer(
            tmp_path / "gov", beside=cast(GovernorServer, SimpleNamespace(data=data, store=None))
        )
        errors = watch_errors(page)
        page.goto(gov.url + "/health")
        page.locator("#witnesses", has_text="1 cosignatures").wait_for()
        row = page.locator("#witnesses tbody tr")
        assert row.locator("td").first.inner_text() == "<b>w1</b>"  # the policy's name, as text
        assert int(row.locator("td").nth(1).inner_text()) >= 1
        assert page.locator("#checks tr", has_text="witnesses").locator("td").nth(1).inner_text() == "ok"
        snapshot = httpx.get(f"{gov.url}/health.json", timeout=10).json()["log"]["witnesses"]
        assert snapshot["alarm"] is False
        assert snapshot["witnessed_size"] >= 1
        assert errors == []
    finally:
        if gov is not None:
            gov.stop()
        witness.close()
