"""Finding the processes a test started, by a marker in their argv (tests and bench/)."""

from __future__ import annotations

import os


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie is dead; only its parent has not reaped it)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return not f.read().rsplit(b") ", 1)[1].startswith(b"Z")
    except (OSError, IndexError):
        return False


def marked(marker: str, *, exclude: bytes | None = None) -> list[int]:
    """Live processes whose argv carries ``marker`` (and not ``exclude``)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        if marker.encode() in cmdline and (exclude is None or exclude not in cmdline) and alive(int(entry)):
            found.append(int(entry))
    return found
