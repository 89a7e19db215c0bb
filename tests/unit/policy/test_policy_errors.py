"""A policy author's mistakes say where they are: Cedar syntax errors carry
``file:line:column``, and a bundle may be one ``*.cedar`` file as well as a directory."""

from __future__ import annotations

from pathlib import Path

import cedarpy
import pytest

from proctor.errors import BundleError, PolicyValidationError
from proctor.policy import PolicyBundle, PolicyEngine
from proctor.policy._locate import locate_parse_error

GOOD = 'permit(principal, action == Proctor::Action::"exec", resource);\n'


def _error(text: str) -> str:
    with pytest.raises(ValueError) as e:
        cedarpy.policies_to_json_str(text)
    return str(e.value)


@pytest.mark.parametrize(
    ("text", "at"),
    [
        # an unexpected token: where the token starts
        ('permit(principal, action, resource)\nwhen { principal.role == "dev" ;\n', (2, 32)),
        # in the second policy of a file
        (
            "permit(principal, action, resource);\nforbid(principal, action, resource) when { 1 + };\n",
            (2, 48),
        ),
        # a name the message quotes after a colon
        ("permit(principal, action, resource);\npermit(principal, acton, resource);\n", (2, 19)),
        # an unterminated string: where it starts
        ('permit(principal, action, resource) when { "abc };\n', (1, 44)),
        # a function Cedar does not have
        ("permit(principal, action, resource) when { principal.x == 1 } unless { fo(1) };\n", (1, 72)),
        # the text stops too soon: after its last token
        ("permit(principal, action, resource)\n\n", (1, 35)),
    ],
)
def test_a_syntax_error_is_located(text: str, at: tuple[int, int]) -> None:
    assert locate_parse_error(text, _error(text), cedarpy.policies_to_json_str) == at


def test_no_position_is_claimed_for_a_message_the_text_does_not_fail_with() -> None:
    def parse(text: str) -> object:
        raise ValueError(f"error {len(text)}")

    assert locate_parse_error("abcdef", "something else", parse) is None
    assert locate_parse_error("abcdef", "error 6", parse) == (1, 6)  # only the whole fails so


def test_the_engine_names_file_line_and_column(tmp_path: Path) -> None:
    (tmp_path / "a.cedar").write_text(GOOD)
    (tmp_path / "b.cedar").write_text(
        GOOD + 'permit(principal, action, resource)\nwhen { principal.role == "dev" ;\n'
    )
    with pytest.raises(PolicyValidationError) as e:
        PolicyEngine.compile(PolicyBundle.from_directory(tmp_path, version=1))
    assert e.value.diagnostics == ("b.cedar:3:32: unexpected token `;`",)


def test_a_bundle_can_be_one_cedar_file(tmp_path: Path) -> None:
    (tmp_path / "only.cedar").write_text(GOOD)
    bundle = PolicyBundle.from_path(tmp_path / "only.cedar", version=3)
    assert dict(bundle.files) == {"only.cedar": GOOD}
    assert bundle.version == 3
    assert PolicyEngine.compile(bundle).policies  # it compiles, with the default schema
    assert PolicyBundle.from_path(tmp_path, version=3).digest == bundle.digest  # as its directory


def test_anything_else_is_refused_with_what_was_expected(tmp_path: Path) -> None:
    (tmp_path / "policy.txt").write_text(GOOD)
    with pytest.raises(BundleError, match=r"expected a directory of \*\.cedar files or one \*\.cedar file"):
        PolicyBundle.from_path(tmp_path / "policy.txt", version=1)
    with pytest.raises(BundleError, match="cannot read the policy file"):
        PolicyBundle.from_path(tmp_path / "missing.cedar", version=1)


def test_a_denial_reads_as_one_sentence() -> None:
    from proctor.policy.decision import describe_denial

    decision = {"reason": "denied: no permit policy matched (default deny)", "policies": []}
    assert describe_denial(decision, principal="alice", action="exec", resource="/bin/ls") == (
        "denied: alice exec /bin/ls (the principal's zone): no permit policy matched (default deny)"
    )
    forbid = {"reason": "denied by forbid policy 'no-touch'", "policies": ["no-touch"]}
    assert describe_denial(forbid, principal="bob", action="exec", resource="/usr/bin/touch", zone="dev") == (
        "denied: bob exec /usr/bin/touch (zone 'dev'): by forbid policy 'no-touch'"
    )
    two = {"reason": "denied by forbid policy 'a'", "policies": ["a", "b"]}
    assert describe_denial(two).endswith("by forbid policy 'a'; determining policies: b")
    assert describe_denial({}) == "denied: no reason given"
