"""verify_version_forward: a bundle's version must go beyond every version accepted before."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proctor.errors import BundleError
from proctor.policy import PolicyBundle
from proctor.policy.bundle import verify_version_forward

FILES = {"exec.cedar": 'permit(principal, action, resource == Proctor::Executable::"/bin/true");\n'}
OTHER = {"exec.cedar": 'permit(principal, action, resource == Proctor::Executable::"/bin/false");\n'}


def test_any_version_is_acceptable_when_none_was_accepted() -> None:
    verify_version_forward(PolicyBundle(FILES, version=0), highest=None)


@pytest.mark.parametrize(
    ("files", "version", "expected"),
    [
        (FILES, 4, "is the bundle accepted last"),
        (OTHER, 4, "reuses version 4 of bundle"),
        (FILES, 3, "older than the bundle accepted last (rollback)"),
        (OTHER, 0, "older than the bundle accepted last (rollback)"),
    ],
    ids=["same-bundle", "same-version-other-content", "older-same-content", "version-0"],
)
def test_a_version_not_above_the_highest_is_refused(
    files: dict[str, str], version: int, expected: str
) -> None:
    highest = (4, PolicyBundle(FILES, version=4).digest)
    with pytest.raises(BundleError) as refused:
        verify_version_forward(PolicyBundle(files, version=version), highest=highest)
    assert expected in str(refused.value)
    assert "expected a version above 4" in str(refused.value)


@given(st.integers(0, 2**40), st.integers(0, 2**40))
def test_acceptance_is_exactly_version_greater_than_highest(highest: int, version: int) -> None:
    bundle = PolicyBundle(OTHER, version=version)
    try:
        verify_version_forward(bundle, highest=(highest, "sha256:" + "0" * 64))
        accepted = True
    except BundleError:
        accepted = False
    assert accepted == (version > highest)
