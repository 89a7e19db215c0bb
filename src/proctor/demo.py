"""``proctor demo``: the runtime governance demonstration, end to end, without input.

1. A fresh data directory: the log, the admin key, the warrant key; a principal
   ``agent`` (role ``dev``); a signed Cedar policy bundle.
2. A real governor (``proctor serve``) in a child process on a free loopback port.
3. ``proctor run`` three times, as an agent platform would:
   an allowed backup (it runs, its receipt verifies offline), a denied ``rm -rf``
   (it never starts: exit 77), and a long job whose execution is revoked while it runs
   (the whole process tree dies: exit 79; its receipt proves why).
4. Verification as an outsider does it, with nothing but the log's verifier key: every
   receipt, a tampered receipt that must fail (naming the step), the consistency of
   the log across the run, and a full audit of the stored log.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from proctor.authorization.keys import PrincipalKey
from proctor.exitcodes import ExitCode
from proctor.governor.service import Governor, initialize
from proctor.lineage.checkpoint import open_checkpoint
from proctor.lineage.log import Log
from proctor.lineage.proofs import ConsistencyProof
from proctor.note import NoteVerifier
from proctor.policy import PolicyBundle
from proctor.receipts import check_receipt

__all__ = ["run_demo"]

POLICY = """\
// Agents with the dev role may run shell jobs, leased for 3 s at a time.
@id("dev-shell")
@lease_ttl_s("3")
@max_duration_s("120")
permit (principal, action == Proctor::Action::"exec", resource)
when { principal.role == "dev" && context.argc <= 8 };

// Nobody deletes recursively.
@id("no-recursive-delete")
forbid (principal, action == Proctor::Action::"exec", resource)
when { context.command_line like "rm -r*" };
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _proctor(*args: str, **kw: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(  # noqa: S603 - our own CLI, with our own arguments
        [sys.executable, "-m", "proctor", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        **kw,
    )


def run_demo(data: Path | None, *, open_browser: bool = False) -> ExitCode:
    """Run the demo in ``data`` (a new temporary directory when ``None``).

    Args:
        data: a directory that is not yet initialised, or ``None``.
        open_browser: open the proof viewer (the web pages come later: ignored).

    Returns:
        The process exit code: OK when every check passed, VERIFY_FAILED otherwise.
    """
    del open_browser
    console = Console(highlight=False, width=max(Console().width, 110))
    base = Path(tempfile.mkdtemp(prefix="proctor-demo-"))
    root = data if data is not None else base / "data"
    console.print(f"[bold]proctor demo[/bold] — data directory {root}")
    # 1. Data directory, principal, policy.
    initialize(root, origin="demo.proctor.local/log")
    agent = PrincipalKey.generate("agent")
    agent.save(base / "agent.key")
    policies = base / "policies"
    policies.mkdir()
    (policies / "demo.cedar").write_text(POLICY)
    admin = PrincipalKey.load(root / "keys" / "admin.key")
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: PLC0415

    signed = PolicyBundle.from_directory(policies, version=1).signed(
        Ed25519PrivateKey.from_private_bytes(admin.private_bytes()), admin.name
    )
    with Governor(root) as gov:
        gov.add_principal("agent", agent.public_key_b64, attrs={"role": "dev"}, zone="", by="admin")
        pushed = gov.push_policy(signed.to_json(), by="admin")
        first_size = gov.log.size
    console.print(f"policy {pushed['bundle'][:23]}… active; principal [bold]agent[/bold] (role dev)")
    # 2. The governor.
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    server = _proctor("serve", "--data", str(root), "--port", str(port))
    ok = True
    rows: list[tuple[str, str, str, str]] = []
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            console.print("[red]the governor did not start[/red]")
            return ExitCode.VERIFY_FAILED
        console.print(f"governor on {url}")
        log_key = httpx.get(f"{url}/v1/log/key", timeout=5).text.strip()
        run = ["run", "--server", url, "--key", str(base / "agent.key")]
        # 3a. Allowed.
        allowed = _proctor(
            *run, "--receipt", str(base / "backup.json"), "--", "sh", "-c", "echo backup of db1 done"
        )
        out, err = allowed.communicate(timeout=60)
        rows.append(
            (
                "backup (allowed)",
                str(allowed.returncode),
                out.strip(),
                _verdict(base / "backup.json", log_key),
            )
        )
        ok &= allowed.returncode == ExitCode.OK
        # 3b. Denied: never starts.
        victim = base / "precious"
        victim.mkdir()
        denied = _proctor(*run, "--", "rm", "-rf", str(victim))
        _, err = denied.communicate(timeout=60)
        reason = err.strip().splitlines()[-1] if err.strip() else ""
        rows.append(
            ("rm -rf (denied)", str(denied.returncode), reason.replace("proctor: ", "")[:60], "never ran")
        )
        ok &= denied.returncode == ExitCode.DENIED and victim.exists()
        # 3c. Revoked while running: the whole tree dies.
        job = _proctor(
            *run, "--receipt", str(base / "job.json"), "--", "sh", "-c", "sleep 60 & sleep 60; wait"
        )
        line = job.stderr.readline() if job.stderr else ""
        match = re.search(r"execution (ex_[a-z0-9]+) started", line)
        if match is None:
            console.print(f"[red]the long job did not start: {line}[/red]")
            job.kill()
            return ExitCode.VERIFY_FAILED
        time.sleep(0.5)
        started = time.monotonic()
        revoke = subprocess.run(  # noqa: S603 - our own CLI
            [
                sys.executable,
                "-m",
                "proctor",
                "revoke",
                "--execution",
                match.group(1),
                "--reason",
                "demo",
                "--server",
                url,
                "--data",
                str(root),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        job.wait(timeout=30)
        elapsed = time.monotonic() - started
        for pipe in (job.stdout, job.stderr):
            if pipe is not None:
                pipe.close()
        rows.append(
            (
                "long job (revoked)",
                str(job.returncode),
                f"tree dead {elapsed * 1000:.0f} ms after launching `proctor revoke` (CLI start-up included)",
                _verdict(base / "job.json", log_key),
            )
        )
        ok &= revoke.returncode == ExitCode.OK and job.returncode == ExitCode.TERMINATED
        # 4. Tampered receipt, log consistency, full audit.
        doc = json.loads((base / "backup.json").read_text())
        leaf = doc["events"][-1]["leaf"]
        doc["events"][-1]["leaf"] = leaf[:8] + ("A" if leaf[8] != "A" else "B") + leaf[9:]
        tampered = check_receipt(doc, log_key=log_key)
        failed = tampered.failed
        rows.append(
            (
                "tampered receipt",
                "-",
                "one byte of one event changed",
                f"rejected at step {failed.number} ({failed.name})" if failed else "ACCEPTED (bad!)",
            )
        )
        ok &= not tampered.ok
    finally:
        server.terminate()
        server.wait(timeout=10)
        for pipe in (server.stdout, server.stderr):
            if pipe is not None:
                pipe.close()
    table = Table(title="runtime governance")
    for col in ("scene", "exit", "what happened", "receipt (offline, log key only)"):
        table.add_column(col)
    for row in rows:
        table.add_row(*row)
    console.print(table)
    with Log.open(root) as log:
        verifier = NoteVerifier.from_string(log.verifier_key())
        now = open_checkpoint(log.checkpoint(), verifier)
        proof = ConsistencyProof.from_json(log.consistency_proof(first_size, now.size))
        proof.verify(log.root(first_size), now.root_hash)
        report = log.check_all()
    console.print(f"log grew {first_size} → {now.size} entries: consistent (append-only), proof verified")
    console.print(f"full audit of the stored log: {'intact' if report.ok else report.error}")
    ok &= report.ok
    console.print("[bold green]demo: OK[/bold green]" if ok else "[bold red]demo: FAILED[/bold red]")
    if data is None and ok:
        shutil.rmtree(base, ignore_errors=True)
    else:
        console.print(f"files kept in {base}")
    return ExitCode.OK if ok else ExitCode.VERIFY_FAILED


def _verdict(path: Path, log_key: str) -> str:
    if not path.exists():
        return "no receipt"
    report = check_receipt(json.loads(path.read_text()), log_key=log_key, replay=True)
    if report.ok:
        return f"verified ({len(report.steps)} steps)"
    failed = report.failed
    return f"FAILED at step {failed.number if failed else '?'}"
