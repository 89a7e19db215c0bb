"""Whether a warrant is revoked through its chain: which id, if any, revokes it.

A warrant dies with any of (checked in this order, the first found answers):

1. for each warrant of its chain — itself, then its parent, then the parent's parent
   (nearest first, as issued):

   a. a revocation of that warrant's id;
   b. a revocation of the principal it was issued to, recorded *after* its decision
      (a principal revoked and later resumed keeps the warrants issued since);

2. a revocation of any of ``presented``: the ids of the copy the enforcer holds — a
   Biscuit revocation id per block, so an attenuated copy can be revoked alone.

Pure: :func:`find_revoked` reads nothing itself. The caller passes the chain and two
callables over its record of revocations; the chain may be lazy, and the walk stops at
the first revocation found, so a caller reading its state link by link reads no more
than it needs. A chain link whose issue record is unknown (``principal`` is ``None``) is
checked for rule 1a only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from proctor.errors import VerificationError

__all__ = ["ChainLink", "Revoked", "find_revoked"]


@dataclass(frozen=True)
class ChainLink:
    """One warrant of a chain, as it was issued.

    Attributes:
        warrant_id: the warrant's id.
        principal: the principal it was issued to; ``None`` when no issue record is known.
        decision_index: the log index of the decision that issued it (``-1`` if unknown).
    """

    warrant_id: str
    principal: str | None = None
    decision_index: int = -1

    def __post_init__(self) -> None:
        if type(self.warrant_id) is not str or not self.warrant_id:
            raise VerificationError(f"chain link: expected a warrant id, found {self.warrant_id!r:.80}")
        if self.principal is not None and type(self.principal) is not str:
            raise VerificationError(
                f"chain link {self.warrant_id}: expected a principal name or None, "
                f"found {type(self.principal).__name__}"
            )
        if type(self.decision_index) is not int:
            raise VerificationError(
                f"chain link {self.warrant_id}: expected an integer decision index, "
                f"found {type(self.decision_index).__name__}"
            )


@dataclass(frozen=True)
class Revoked:
    """The revocation that revokes a warrant.

    Attributes:
        kind: ``"warrant"`` (a warrant of the chain or a presented block) or ``"principal"``.
        target: the revoked warrant id, block id or principal name.
        warrant_id: the warrant of the chain it revokes (``""`` for a presented block).
    """

    kind: str
    target: str
    warrant_id: str = ""


def find_revoked(
    chain: Iterable[ChainLink],
    *,
    is_revoked: Callable[[str, str], bool],
    principal_revoked_index: Callable[[str], int | None],
    presented: Iterable[str] = (),
) -> Revoked | None:
    """The first revocation that revokes a warrant (the numbered rules of the module).

    Args:
        chain: the warrant and its ancestors, nearest first.
        is_revoked: whether ``(kind, target)`` is revoked.
        principal_revoked_index: the log index of the principal's latest revocation,
            or ``None`` if it was never revoked.
        presented: further revocation ids of the presented copy (its blocks').

    Returns:
        What revokes it, or ``None`` when nothing does.
    """
    for link in chain:
        if is_revoked("warrant", link.warrant_id):  # 1a
            return Revoked("warrant", link.warrant_id, link.warrant_id)
        if link.principal is not None:  # 1b
            revoked_at = principal_revoked_index(link.principal)
            if revoked_at is not None and revoked_at > link.decision_index:
                return Revoked("principal", link.principal, link.warrant_id)
    for block_id in presented:  # 2
        if is_revoked("warrant", block_id):
            return Revoked("warrant", block_id)
    return None
