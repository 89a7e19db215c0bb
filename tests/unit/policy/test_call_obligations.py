"""Approval and call-limit obligations: parsed strictly, combined so every one holds."""

from __future__ import annotations

import pytest

from proctor.policy.obligations import CallLimit, call_limits, combine_obligations, read_annotations


def test_approval_required_annotation_is_the_approval_required_obligation() -> None:
    parsed, problems = read_annotations({"approval": "required", "approval_timeout_s": "60"}, effect="permit")
    assert problems == ()
    assert dict(parsed.obligations) == {"approval_required": True, "approval_timeout_s": 60}


def test_approval_required_old_spelling_still_works() -> None:
    parsed, problems = read_annotations({"approval_required": "true"}, effect="permit")
    assert problems == ()
    assert dict(parsed.obligations) == {"approval_required": True}
    both, problems = read_annotations({"approval": "required", "approval_required": "false"}, effect="permit")
    assert problems == ()
    assert both.obligations["approval_required"] is True  # never weakened by the other spelling


@pytest.mark.parametrize(
    ("annotations", "fragment"),
    [
        ({"approval": "true"}, 'expected "required"'),
        ({"approval": ""}, 'expected "required"'),
        ({"approval": "required", "approval_timeout_s": "0"}, "from 1 to 604800"),
        ({"approval": "required", "approval_timeout_s": "5m"}, "from 1 to 604800"),
        ({"approval": "required", "approval_timeout_s": "604801"}, "from 1 to 604800"),
        ({"approval_timeout_s": "60"}, 'only beside @approval("required")'),
        ({"rate": "10"}, 'expected "N/Ws"'),
        ({"rate": "10/60"}, 'expected "N/Ws"'),
        ({"rate": "0/60s"}, 'expected "N/Ws"'),
        ({"rate": "10/0s"}, 'expected "N/Ws"'),
        ({"rate": "010/60s"}, 'expected "N/Ws"'),
        ({"budget": "10/31536001s"}, 'expected "N/Ws"'),
        ({"blast_radius": "-1/60s"}, 'expected "N/Ws"'),
        ({"blast_radius": " 5/60s"}, 'expected "N/Ws"'),
        ({"rates": "5/60s"}, "unknown annotation"),
        ({"blastradius": "5/60s"}, "unknown annotation"),
    ],
    ids=[
        "approval-true",
        "approval-empty",
        "timeout-zero",
        "timeout-unit",
        "timeout-too-long",
        "timeout-without-approval",
        "rate-no-window",
        "rate-no-unit",
        "rate-zero-calls",
        "rate-zero-window",
        "rate-leading-zero",
        "budget-window-too-long",
        "blast-negative",
        "blast-space",
        "misspelt-rate",
        "misspelt-blast-radius",
    ],
)
def test_call_obligations_malformed_values_refuse_the_bundle(
    annotations: dict[str, str], fragment: str
) -> None:
    _, problems = read_annotations(annotations, effect="permit")
    assert any(fragment in p for p in problems), problems


def test_call_obligations_on_a_forbid_are_problems() -> None:
    _, problems = read_annotations({"rate": "5/60s"}, effect="forbid")
    assert problems
    assert "permit" in problems[0]


def test_call_limits_combine_so_every_one_holds() -> None:
    a, _ = read_annotations({"rate": "10/60s", "budget": "100/86400s"}, effect="permit")
    b, _ = read_annotations(
        {"rate": "100/3600s", "blast_radius": "5/60s", "approval": "required"}, effect="permit"
    )
    c, _ = read_annotations({"approval": "required", "approval_timeout_s": "30"}, effect="permit")
    d, _ = read_annotations({"approval": "required", "approval_timeout_s": "90"}, effect="permit")
    combined = combine_obligations([a, b, c, d])
    assert combined["rate"] == "10/60s,100/3600s"
    assert combined["approval_required"] is True
    assert combined["approval_timeout_s"] == 30
    assert call_limits(combined) == (
        CallLimit("rate", 10, 60),
        CallLimit("rate", 100, 3600),
        CallLimit("budget", 100, 86400),
        CallLimit("blast_radius", 5, 60),
    )


def test_call_limits_refuse_a_malformed_obligation() -> None:
    with pytest.raises(ValueError, match="N/Ws"):
        call_limits({"rate": "10/60s,lots"})
    with pytest.raises(ValueError, match="expected a string"):
        call_limits({"budget": 5})
