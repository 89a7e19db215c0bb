"""``proctor demo``: the end-to-end demonstration, run without input.

For now it shows the lineage layer on the embedded store: a fresh data directory, a
small authorization lineage (policy → decision → warrant → start → completion, each
linked to its parent), two signed checkpoints, and then verification the way an
outsider does it, with nothing but the log's verifier key: every inclusion proof, the
consistency of the two checkpoints, and a tampered event that must fail.
"""

from __future__ import annotations

import base64
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

from proctor.errors import ProofError
from proctor.lineage.checkpoint import open_checkpoint
from proctor.lineage.log import Log
from proctor.lineage.merkle import leaf_hash
from proctor.lineage.note import NoteVerifier
from proctor.lineage.proofs import ConsistencyProof, InclusionProof

__all__ = ["run_demo"]


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _link(log: Log, index: int) -> dict[str, Any]:
    return {"index": index, "leaf_hash": base64.b64encode(log.leaf_hash(index)).decode()}


def run_demo(data: Path | None, *, open_browser: bool = False) -> int:
    """Run the demo in ``data`` (a new temporary directory when ``None``).

    Args:
        data: a directory that is not yet initialised, or ``None``.
        open_browser: open the proof viewer (no viewer exists yet: ignored).

    Returns:
        The process exit code: 0 when every check passed.
    """
    del open_browser  # the proof viewer arrives with the web pages
    console = Console(stderr=False, highlight=False)
    root = Path(tempfile.mkdtemp(prefix="proctor-demo-")) / "data" if data is None else data
    console.print(f"[bold]proctor demo[/bold] — data directory {root}")
    node = "gov-demo"
    with Log.initialize(root) as log:
        console.print(f"log origin  {log.origin}\nlog key     {log.verifier_key()}", soft_wrap=True)
        policy = log.append(
            {
                "v": 1,
                "type": "policy.activated",
                "time": _now(),
                "node": node,
                "bundle": "sha256:" + "0" * 64,
                "version": 1,
            }
        )
        decision = log.append(
            {
                "v": 1,
                "type": "decision",
                "time": _now(),
                "node": node,
                "decision": "allow",
                "principal": "pr_alice",
                "action": "exec",
                "resource": "/usr/bin/pg_dump",
                "parent": _link(log, policy),
            }
        )
        warrant = log.append(
            {
                "v": 1,
                "type": "warrant.issued",
                "time": _now(),
                "node": node,
                "warrant": "wr_demo1",
                "parent": _link(log, decision),
            }
        )
        started = log.append(
            {
                "v": 1,
                "type": "execution.started",
                "time": _now(),
                "node": node,
                "execution": "ex_demo1",
                "warrant": "wr_demo1",
                "parent": _link(log, warrant),
            }
        )
        log.append(
            {
                "v": 1,
                "type": "execution.completed",
                "time": _now(),
                "node": node,
                "execution": "ex_demo1",
                "exit_status": 0,
                "parent": _link(log, started),
            }
        )
        first_note = log.checkpoint()
        log.append_many(
            [
                {
                    "v": 1,
                    "type": "decision",
                    "time": _now(),
                    "node": node,
                    "decision": "deny",
                    "principal": "pr_mallory",
                    "action": "exec",
                    "resource": "/usr/bin/rm",
                },
                {
                    "v": 1,
                    "type": "revocation",
                    "time": _now(),
                    "node": node,
                    "target": {"kind": "principal", "id": "pr_mallory"},
                    "reason": "demo",
                },
            ]
        )
        second_note = log.checkpoint()
        vkey = log.verifier_key()
        size = log.size
        entries = [(i, log.leaf(i), log.inclusion_proof(i)) for i in range(size)]
        consistency = log.consistency_proof(open_checkpoint(first_note, log.verifier).size)
        report = log.check_all()

    # From here on only public material: the verifier key, notes, leaves and proofs.
    verifier = NoteVerifier.from_string(vkey)
    cp1 = open_checkpoint(first_note, verifier)
    cp2 = open_checkpoint(second_note, verifier)
    table = Table(title=f"lineage under checkpoint {cp2.size}")
    for col in ("index", "type", "parent", "inclusion proof"):
        table.add_column(col)
    ok = True
    for index, leaf, proof_doc in entries:
        proof = InclusionProof.from_json(proof_doc)
        try:
            proof.verify(leaf_hash(leaf), cp2.root_hash)
            verdict = f"verified ({len(proof.hashes)} hashes)"
        except ProofError as e:
            ok, verdict = False, f"FAILED: {e}"
        event = orjson.loads(leaf)
        parent = event.get("parent", {}).get("index", "")
        table.add_row(str(index), event["type"], str(parent), verdict)
    console.print(table)
    try:
        ConsistencyProof.from_json(consistency).verify(cp1.root_hash, cp2.root_hash)
        console.print(f"checkpoint {cp1.size} → {cp2.size}: consistent (append-only)")
    except ProofError as e:
        ok = False
        console.print(f"[red]checkpoint {cp1.size} → {cp2.size}: NOT consistent: {e}[/red]")
    index, leaf, proof_doc = entries[1]
    tampered = leaf.replace(b'"allow"', b'"alloW"')
    try:
        InclusionProof.from_json(proof_doc).verify(leaf_hash(tampered), cp2.root_hash)
        ok = False
        console.print("[red]a tampered event verified: this must never happen[/red]")
    except ProofError:
        console.print(f"tampered copy of entry {index}: rejected, as it must be")
    console.print(f"full audit of the stored log: {'intact' if report.ok else report.error}")
    ok = ok and report.ok
    console.print("[bold green]demo: OK[/bold green]" if ok else "[bold red]demo: FAILED[/bold red]")
    return 0 if ok else 1
