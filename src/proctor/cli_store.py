"""``proctor migrate``: bring a store's state schema to the version this proctor knows.

The state schema is a list of numbered steps (:mod:`proctor.store.migrations`). A
governor or command opening a store applies pending steps itself only when every one
is safe (additive); otherwise it refuses and says to run this command, which applies
every pending step in one transaction under the migration lock (SQLite: the write
lock; PostgreSQL: an advisory lock), so a failure changes nothing. ``--dry-run`` shows
the plan and changes nothing.

Stop every governor on the store before a migration with steps that are not safe, and
back the store up: a running governor was started on the old version.

Exit codes (:class:`proctor.exitcodes.ExitCode`): OK when the store is at the newest
version (applied now, or already); BAD_INPUT for a store that cannot be migrated: no
log there (``proctor init``), a version newer than this proctor knows (a newer proctor
wrote it: nothing is changed), a step that failed, or a URL that is not PostgreSQL's.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from proctor.cli_output import DataOpt, JsonOpt, StoreOpt, emit, error_code, fail, ticks
from proctor.datadir import DEFAULT_DATA_DIR, DataDir
from proctor.errors import ProctorError

__all__ = ["register"]


def _migrate(
    data: DataOpt = DEFAULT_DATA_DIR,
    store: StoreOpt = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", metavar="", help="Show the pending steps; change nothing.")
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Apply the pending steps of the state schema, in one transaction under a lock.

    The store: the PostgreSQL database of --store, else the data directory's own file.
    """
    from proctor.store.open import migrate_state  # noqa: PLC0415 - loads the store layer

    try:
        db_path = None if store is not None else DataDir.open(data).db_path
        plan = migrate_state(store, db_path, dry_run=dry_run)
    except ProctorError as e:
        fail(error_code(e), f"error: {e}")
    doc = plan.to_json()
    doc["dry_run"] = dry_run
    emit(doc, human=_plan_text, json=json_out)
    if plan.applied:
        steps = ", ".join(str(s.version) for s in plan.pending)
        typer.echo(f"proctor: applied step(s) {steps}: state schema version {plan.latest}", err=True)


def _plan_text(doc: dict[str, Any]) -> str:
    steps = [(True, f"store: {doc['store']} ({doc['backend']})")]
    found = doc["found"] or "none (no state tables)"
    steps.append((True, f"state schema version found: {found}; newest known: {doc['latest']}"))
    for step in doc["pending"]:
        kind = "safe" if step["safe"] else "changes stored data"
        state = "applied" if doc["applied"] else "pending"
        steps.append((doc["applied"], f"step {step['version']} ({kind}), {state}: {step['summary']}"))
    if not doc["pending"]:
        steps.append((True, "nothing to do"))
    elif doc["dry_run"]:
        steps.append((True, "dry run: nothing was changed"))
    return ticks(steps)


def register(app: typer.Typer) -> None:
    """Add ``proctor migrate`` to the ``proctor`` app."""
    app.command("migrate")(_migrate)
