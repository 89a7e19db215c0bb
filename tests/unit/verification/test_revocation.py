"""The revocation chain (proctor.verification.revocation): which revocation, if any,
revokes a warrant, rule by rule (the numbers are the module docstring's)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from proctor.errors import VerificationError
from proctor.verification.revocation import ChainLink, Revoked, find_revoked

CHILD = ChainLink("wr_child", "bob", decision_index=20)
PARENT = ChainLink("wr_parent", "alice", decision_index=10)
CHAIN = (CHILD, PARENT)


class Revocations:
    """A record of revocations: ``(kind, target) -> log index``; counts what is asked."""

    def __init__(self, **revoked: int) -> None:
        self.index: dict[tuple[str, str], int] = {}
        for key, at in revoked.items():
            kind, _, target = key.partition("__")
            self.index[(kind, target)] = at
        self.asked: list[tuple[str, str]] = []

    def is_revoked(self, kind: str, target: str) -> bool:
        self.asked.append((kind, target))
        return (kind, target) in self.index

    def principal_revoked_index(self, name: str) -> int | None:
        self.asked.append(("principal", name))
        return self.index.get(("principal", name))

    def find(self, chain: Any = CHAIN, presented: tuple[str, ...] = ()) -> Revoked | None:
        return find_revoked(
            chain,
            is_revoked=self.is_revoked,
            principal_revoked_index=self.principal_revoked_index,
            presented=presented,
        )


def test_nothing_revoked_is_none() -> None:
    assert Revocations().find(presented=("b1", "b2")) is None


def test_rule_1a_the_warrant_itself() -> None:
    assert Revocations(warrant__wr_child=30).find() == Revoked("warrant", "wr_child", "wr_child")


def test_rule_1a_an_ancestor() -> None:
    assert Revocations(warrant__wr_parent=30).find() == Revoked("warrant", "wr_parent", "wr_parent")


def test_rule_1b_its_principal_revoked_after_its_decision() -> None:
    assert Revocations(principal__bob=21).find() == Revoked("principal", "bob", "wr_child")


def test_rule_1b_an_ancestors_principal_revoked_after_the_ancestors_decision() -> None:
    assert Revocations(principal__alice=15).find() == Revoked("principal", "alice", "wr_parent")


@pytest.mark.parametrize("at", [5, 20], ids=["before", "at-the-decision"])
def test_rule_1b_a_principal_revoked_before_the_decision_does_not_revoke_it(at: int) -> None:
    """Revoked, then resumed: the warrants issued since stand."""
    assert Revocations(principal__bob=at).find(chain=(CHILD,)) is None


def test_rule_1b_is_skipped_for_a_link_with_no_issue_record() -> None:
    revocations = Revocations(principal__bob=99)
    assert revocations.find(chain=(ChainLink("wr_child"),)) is None
    assert ("principal", "bob") not in revocations.asked


def test_rule_2_a_block_of_the_presented_copy() -> None:
    assert Revocations(warrant__b2=30).find(presented=("b1", "b2")) == Revoked("warrant", "b2")


def test_the_nearest_revocation_answers_and_the_walk_stops_there() -> None:
    revocations = Revocations(warrant__wr_child=30, warrant__wr_parent=31, warrant__b1=32)
    read: list[str] = []

    def lazy() -> Iterator[ChainLink]:
        for link in CHAIN:
            read.append(link.warrant_id)
            yield link

    assert revocations.find(chain=lazy(), presented=("b1",)) == Revoked("warrant", "wr_child", "wr_child")
    assert read == ["wr_child"]  # the parent was never read
    assert revocations.asked == [("warrant", "wr_child")]


def test_the_order_is_warrant_then_its_principal_then_the_next_link() -> None:
    revocations = Revocations()
    revocations.find(presented=("b1",))
    assert revocations.asked == [
        ("warrant", "wr_child"),
        ("principal", "bob"),
        ("warrant", "wr_parent"),
        ("principal", "alice"),
        ("warrant", "b1"),
    ]


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (("",), "expected a warrant id"),
        ((None,), "expected a warrant id"),
        (("wr_x", 3), "expected a principal name or None"),
        (("wr_x", "bob", "10"), "expected an integer decision index"),
    ],
    ids=["empty-id", "no-id", "principal-not-text", "index-not-int"],
)
def test_a_malformed_chain_link_is_refused(args: tuple[Any, ...], match: str) -> None:
    with pytest.raises(VerificationError, match=match):
        ChainLink(*args)
