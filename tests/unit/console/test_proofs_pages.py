"""The proof viewer's routes: the page loads its scripts from /static only, and the
saved single file carries every script inline, each allowed by its hash and nothing else."""

from __future__ import annotations

import base64
import hashlib
import re

from fastapi import FastAPI
from starlette.testclient import TestClient

from proctor.console import mount
from proctor.console.proofs_pages import SCRIPTS, STYLES


def client() -> TestClient:
    app = FastAPI()
    mount(app)
    return TestClient(app)


def sha256_source(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def test_the_page_loads_every_script_from_static_and_none_inline() -> None:
    answer = client().get("/proofs")
    assert answer.status_code == 200
    assert "script-src 'self'" in answer.headers["content-security-policy"]
    assert re.findall(r'<script src="/static/([^"]+)"></script>', answer.text) == list(SCRIPTS)
    assert "<script>" not in answer.text


def test_the_saved_file_is_a_download_whose_inline_scripts_are_allowed_by_hash_only() -> None:
    answer = client().get("/proofs/standalone.html")
    assert answer.status_code == 200
    assert answer.headers["content-disposition"] == 'attachment; filename="proctor-proofs.html"'
    csp = answer.headers["content-security-policy"]
    scripts = re.findall(r"<script>(.*?)</script>", answer.text, flags=re.DOTALL)
    styles = re.findall(r"<style>(.*?)</style>", answer.text, flags=re.DOTALL)
    assert len(scripts) == len(SCRIPTS)
    assert len(styles) == len(STYLES)
    script_src = re.search(r"script-src ([^;]*);", csp)
    style_src = re.search(r"style-src ([^;]*);", csp)
    assert script_src is not None
    assert style_src is not None
    # Exactly the hashes of what is inline: nothing else may run, not even from this origin.
    assert script_src.group(1).split() == [sha256_source(s) for s in scripts]
    assert style_src.group(1).split() == [sha256_source(s) for s in styles]
    assert "unsafe" not in csp
    assert "<script src" not in answer.text
    # The file carries the policy itself (opened from disk there are no headers).
    assert '<meta http-equiv="Content-Security-Policy"' in answer.text


def test_the_saved_file_is_the_same_bytes_whoever_serves_it() -> None:
    first = client().get("/proofs/standalone.html").content
    assert client().get("/proofs/standalone.html").content == first
    assert b"Use this governor's key" not in first
