"""Versioned migrations of the state schema, one framework for every backend.

A backend's state schema is a :class:`Schema`: numbered steps (:class:`Migration`),
step *N* taking a database from version *N - 1* to *N*. Version 0 is "no state
tables" (an empty database, or a bare log); the version a database is at is
``meta.state_schema``. Today each backend has three steps: version 1, the tables
(:data:`proctor.store._state_schema.SQLITE_STATE_SCHEMA`,
:data:`proctor.store.state_pg.PG_STATE_SCHEMA`), version 2, the ``nodes`` table
(:mod:`proctor.store.state_nodes`), and version 3, the ``approvals`` and ``calls``
tables (:mod:`proctor.store.state_approvals`), all safe.

Rules (:func:`run_migrations`; each has a test named after it):

1. Everything happens in one transaction that the backend opens under its migration
   lock (SQLite: ``BEGIN IMMEDIATE``; PostgreSQL: a transaction advisory lock), and
   the version is read under that lock: two processes starting at once apply a step
   once, and a refused or failed migration changes nothing.
2. A version above the newest step this proctor knows, or one that is not a version
   at all, is refused: a newer proctor wrote the store, and this one cannot know what
   its tables mean. Nothing is changed.
3. Opening a store (a governor or a command starting): the pending steps are applied
   only if every one is marked ``safe`` (additive: a new table, a new column with a
   default, a new index that cannot fail on stored rows). Otherwise the open is
   refused, naming the steps, with "run proctor migrate". A store with no state
   tables gets every step (there is nothing to lose).
4. ``proctor migrate`` applies every pending step, safe or not, then records the new
   version; ``--dry-run`` reports the same plan and rolls back.
5. A schema may have a ``settle`` hook, run on every open at the newest version
   (idempotent). SQLite's completes databases that were labelled version 1 before
   some of its tables, columns and rules existed (:mod:`proctor.store._state_schema`).

The steps receive the backend's own connection (``sqlite3.Connection``, a psycopg
connection) and the database's name for messages; the version is read and written
through the common SQL (:mod:`proctor.store.sql`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from proctor.errors import StoreError
from proctor.store.sql import Connection

__all__ = ["VERSION_KEY", "Migration", "MigrationPlan", "Schema", "read_version", "run_migrations"]

VERSION_KEY = "state_schema"
"""The ``meta`` key that holds the state schema's version."""

C = TypeVar("C")


@dataclass(frozen=True)
class Migration(Generic[C]):
    """One step: ``apply(conn, where)`` takes the schema from ``version - 1`` to
    ``version`` inside the migration transaction."""

    version: int
    summary: str
    safe: bool
    """Additive only (a new table, a column with a default, an index that cannot
    fail): applied when a store opens. Otherwise only ``proctor migrate`` applies it."""
    apply: Callable[[C, str], None] = field(repr=False)

    def to_json(self) -> dict[str, Any]:
        """``{"version", "summary", "safe"}``."""
        return {"version": self.version, "summary": self.summary, "safe": self.safe}


@dataclass(frozen=True)
class Schema(Generic[C]):
    """A backend's state schema: its steps, numbered 1, 2, … with no gap."""

    backend: str
    steps: tuple[Migration[C], ...]
    settle: Callable[[C, str], None] | None = field(default=None, repr=False)
    """Run on every open at the newest version (module docstring, rule 5)."""

    def __post_init__(self) -> None:
        numbers = [s.version for s in self.steps]
        if numbers != list(range(1, len(numbers) + 1)):
            raise ValueError(f"expected migration steps numbered 1, 2, … without gaps, found {numbers}")

    @property
    def latest(self) -> int:
        """The newest version this proctor knows."""
        return len(self.steps)


@dataclass(frozen=True)
class MigrationPlan:
    """What a migration found and what it applied (or, in a dry run, would apply)."""

    store: str
    backend: str
    found: int
    """The version the store was at (0: no state tables)."""
    latest: int
    pending: tuple[Migration[Any], ...]
    applied: bool
    """Whether the pending steps were applied (false in a dry run or with none)."""

    def to_json(self) -> dict[str, Any]:
        """The plan as ``proctor migrate`` prints it."""
        return {
            "store": self.store,
            "backend": self.backend,
            "found": self.found,
            "version": self.latest if self.applied or not self.pending else self.found,
            "latest": self.latest,
            "pending": [s.to_json() for s in self.pending],
            "applied": self.applied,
        }


def read_version(conn: Connection, where: str, latest: int) -> int:
    """The stored state schema version (0 if there is none).

    Raises:
        StoreError: the stored value is not a version this proctor knows: not a
            number, or above ``latest`` (module docstring, rule 2).
    """
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (VERSION_KEY,)).fetchone()
    if row is None:
        return 0
    raw = row[0]
    text = raw if isinstance(raw, str) else str(raw)
    if not (text.isascii() and text.isdigit() and text == str(int(text))) or int(text) < 1:
        raise StoreError(
            f"{where}: expected state schema version {latest}, found {text!r} (not a schema version); "
            "nothing was changed"
        )
    version = int(text)
    if version > latest:
        raise StoreError(
            f"{where}: expected state schema version {latest}, found {text!r}: the store was written by "
            f"a newer proctor (this one knows versions up to {latest}); run a proctor that knows "
            f"version {version}. Nothing was changed"
        )
    return version


def run_migrations(
    schema: Schema[C], native: C, conn: Connection, *, where: str, on_start: bool, dry_run: bool = False
) -> MigrationPlan:
    """Plan and apply the pending steps, inside the caller's locked transaction
    (module docstring, rules 1-5).

    Args:
        schema: the backend's steps.
        native: the transaction's connection as the steps use it.
        conn: the same connection, running the common SQL.
        where: the database's name for messages (no password).
        on_start: a store being opened: only safe steps (rule 3).
        dry_run: plan only; the caller rolls back.

    Returns:
        The plan.

    Raises:
        StoreError: an unknown version (rule 2), or on start a pending step that is
            not safe (rule 3). The caller rolls back.
    """
    found = read_version(conn, where, schema.latest)
    pending = tuple(s for s in schema.steps if s.version > found)
    plan = MigrationPlan(where, schema.backend, found, schema.latest, pending, applied=False)
    unsafe = [s for s in pending if not s.safe]
    if on_start and found > 0 and unsafe:
        steps = "; ".join(f"{s.version}: {s.summary}" for s in unsafe)
        raise StoreError(
            f"{where}: expected state schema version {schema.latest}, found {found}; the pending "
            f"step(s) {steps} change stored data and are not applied when a store opens. Stop every "
            "governor on this store, back it up, and run proctor migrate. Nothing was changed"
        )
    if dry_run:
        return plan
    for step in pending:
        step.apply(native, where)
    if pending:
        conn.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (VERSION_KEY, str(schema.latest)),
        )
    if schema.settle is not None:
        schema.settle(native, where)
    return MigrationPlan(where, schema.backend, found, schema.latest, pending, applied=bool(pending))
