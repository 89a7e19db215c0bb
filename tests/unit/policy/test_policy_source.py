"""policy_source: the statement a decision names, found in a bundle's files as written."""

from __future__ import annotations

import pytest

from proctor.demo import POLICY
from proctor.policy import PolicyBundle
from proctor.policy.engine import PolicyEngine
from proctor.policy.source import PolicySource, policy_source, policy_statements

TRICKY = """\
// a comment; with a semicolon
@id("semi")
permit (principal, action == Proctor::Action::"exec", resource)
when { context.command_line like "a;b*" };  // trailing; comment

@id("quoted")
forbid (principal, action == Proctor::Action::"exec", resource)
when { context.command_line like "say \\"hi\\"; @id(\\"semi\\")*" };
permit (principal, action == Proctor::Action::"exec", resource) when { context.argc == 1 };"""


def test_the_demo_policies_are_found_by_id_with_file_and_line() -> None:
    files = {"demo.cedar": POLICY}
    dev = policy_source(files, "dev-shell")
    assert dev == PolicySource(
        "demo.cedar",
        2,
        '@id("dev-shell")\n@lease_ttl_s("3")\n@max_duration_s("3600")\n'
        'permit (principal, action == Proctor::Action::"exec", resource)\n'
        'when { principal.role == "dev" && context.argc <= 8 };',
    )
    forbid = policy_source(files, "no-recursive-delete")
    assert forbid is not None
    assert forbid.line == 9
    assert forbid.text.endswith('when { context.command_line like "rm -r*" };')
    assert POLICY.splitlines()[forbid.line - 1] == '@id("no-recursive-delete")'


def test_semicolons_in_strings_and_comments_do_not_split_a_statement() -> None:
    statements = list(policy_statements("t.cedar", TRICKY))
    assert [s.policy_id for s in statements] == ["semi", "quoted", None]
    assert [s.line for s in statements] == [2, 6, 9]
    assert statements[0].text.endswith('like "a;b*" };')
    assert statements[1].text.endswith('@id(\\"semi\\")*" };')


def test_an_id_inside_a_condition_is_not_the_policy_id() -> None:
    found = policy_source({"t.cedar": TRICKY}, "semi")
    assert found is not None
    assert found.line == 2


@pytest.mark.parametrize(
    ("policy_id", "line"),
    [("policy2", 9), ("policy0", None), ("policy3", None), ("nope", None)],
    ids=["positional-without-id", "positional-of-an-annotated-policy", "past-the-end", "unknown"],
)
def test_positional_ids_count_statements_as_the_engine_does(policy_id: str, line: int | None) -> None:
    found = policy_source({"t.cedar": TRICKY}, policy_id)
    assert (found.line if found else None) == line


def test_positional_ids_agree_with_the_engine_across_files() -> None:
    """Cedar's positional ids over files in name order: the engine's count and ours agree."""
    files = {
        "b.cedar": 'permit (principal, action == Proctor::Action::"exec", resource) when { context.argc == 2 };',
        "a.cedar": POLICY,
    }
    engine = PolicyEngine.compile(PolicyBundle(files=files))
    for compiled in engine.policies:
        source = policy_source(files, compiled.name)
        assert source is not None, compiled.name
        assert source.file == compiled.file
        assert _effect_of(source) == compiled.effect


def _effect_of(source: PolicySource) -> str:
    return "forbid" if "\nforbid (" in "\n" + source.text else "permit"
