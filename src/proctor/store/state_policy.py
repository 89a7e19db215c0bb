"""Policy bundles and small named values (tables ``bundles`` and ``meta``).

``bundles`` holds every accepted signed bundle by digest, with the log index of its one
``policy.activated`` event; ``meta.active_bundle`` names the active one. Activation
history is append-only and version-forward: the backend's DDL refuses an update, a
delete, or an insert whose version is not above every stored one, so a violation
reaches :func:`bundle_writer` as an integrity error.

Query functions and writers as in :mod:`proctor.store.state_principals` (common SQL
subset, driver errors pass through).
"""

from __future__ import annotations

from collections.abc import Callable

from proctor.errors import StoreConflictError
from proctor.store.sql import INTEGRITY_ERRORS, Connection

__all__ = [
    "bundle_writer",
    "highest_bundle",
    "active_bundle",
    "bundle",
    "bundle_index",
    "activations",
    "bundle_versions",
    "probe_writer",
    "set_meta",
    "meta",
]


def bundle_writer(digest: str, version: int, doc: str, activated: str) -> Callable[..., None]:
    """Store an accepted bundle and make it the active one, as ``write(conn,
    index=...)`` inside another transaction, with the index of the bundle's
    ``policy.activated`` event (the log commit that records the activation: both or
    neither).

    The write raises :class:`~proctor.errors.StoreConflictError` if the digest is stored
    already, or ``version`` is not above every stored version.
    """

    def write(conn: Connection, index: int = -1) -> None:
        try:
            conn.execute(
                "INSERT INTO bundles (digest, version, doc, activated, log_index) VALUES (?, ?, ?, ?, ?)",
                (digest, version, doc, activated, index),
            )
        except INTEGRITY_ERRORS as e:
            raise StoreConflictError(
                f"cannot store bundle {digest} (version {version}): expected a new digest with a "
                f"version above every stored one ({e}); activation history is append-only"
            ) from e
        conn.execute(
            "INSERT INTO meta (key, value) VALUES ('active_bundle', ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (digest,),
        )

    return write


def highest_bundle(conn: Connection) -> tuple[int, str] | None:
    """``(version, digest)`` of the stored bundle with the highest version, or ``None``."""
    row = conn.execute(
        "SELECT version, digest FROM bundles ORDER BY version DESC, log_index DESC LIMIT 1"
    ).fetchone()
    return None if row is None else (int(row[0]), str(row[1]))


def active_bundle(conn: Connection) -> tuple[str, str] | None:
    """(digest, signed bundle JSON) of the active bundle, or ``None``."""
    row = conn.execute(
        "SELECT b.digest, b.doc FROM meta m JOIN bundles b ON b.digest = m.value "
        "WHERE m.key = 'active_bundle'"
    ).fetchone()
    return None if row is None else (str(row[0]), str(row[1]))


def bundle(conn: Connection, digest: str) -> str | None:
    """The signed bundle JSON with this digest."""
    row = conn.execute("SELECT doc FROM bundles WHERE digest = ?", (digest,)).fetchone()
    return None if row is None else str(row[0])


def bundle_index(conn: Connection, digest: str) -> int | None:
    """The log index of the ``policy.activated`` event of this bundle."""
    row = conn.execute("SELECT log_index FROM bundles WHERE digest = ?", (digest,)).fetchone()
    return None if row is None else int(row[0])


def activations(conn: Connection, since: int = -1) -> list[tuple[int, str]]:
    """(log index, digest) of bundle activations after log index ``since``."""
    rows = conn.execute(
        "SELECT log_index, digest FROM bundles WHERE log_index > ? ORDER BY log_index", (since,)
    ).fetchall()
    return [(int(i), str(d)) for i, d in rows]


def bundle_versions(conn: Connection) -> list[tuple[str, int, str]]:
    """(digest, version, activated) of every stored bundle, oldest first."""
    rows = conn.execute("SELECT digest, version, activated FROM bundles ORDER BY log_index").fetchall()
    return [(str(d), int(v), str(a)) for d, v, a in rows]


# -- meta ------------------------------------------------------------------------


def probe_writer(now: int) -> Callable[..., None]:
    """A small real write (one ``meta`` row), to learn whether the disk takes writes."""

    def write(conn: Connection, index: int = -1) -> None:
        set_meta(conn, "durability_probe", str(now))

    return write


def set_meta(conn: Connection, key: str, value: str) -> None:
    """Store a small named value (e.g. the index of the warrant key declaration),
    replacing the one stored under ``key``."""
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (key, value),
    )


def meta(conn: Connection, key: str) -> str | None:
    """A named value stored with :func:`set_meta`."""
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return None if row is None else str(row[0])
