"""Witness policies (proctor.lineage.witness_policy, C2SP tlog-policy): parsing that fails
closed, and quorums evaluated over verified cosignatures."""

from __future__ import annotations

import pytest

from proctor.errors import ConfigError, NoteError, VerificationError
from proctor.lineage.cosignature import Cosigner, cosign, generate_cosigner
from proctor.lineage.witness_policy import MAX_ENTRIES, WitnessPolicy
from proctor.note import NoteSigner, generate_signer, sign_note

CHECKPOINT = "example.com/log\n3\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
LOG = generate_signer("example.com/log")
W = {name: generate_cosigner(f"witness.example/{name}") for name in ("X1", "X2", "X3", "Y1", "Y2", "Y3")}


def _vkey(name: str) -> str:
    return W[name].verifier.to_string()


# The spec's example: two of three X witnesses, and any one Y witness.
EXAMPLE = f"""
# comments and blank lines are ignored
log {LOG.verifier.to_string()} https://log.example/

witness X1 {_vkey("X1")}
witness X2 {_vkey("X2")}\thttps://x2.example/
witness X3 {_vkey("X3")}
group X-witnesses 2 X1 X2 X3

   witness Y1 {_vkey("Y1")}
witness Y2 {_vkey("Y2")}
witness Y3 {_vkey("Y3")}
group Y-witnesses any Y1 Y2 Y3

group X-and-Y all X-witnesses Y-witnesses
quorum X-and-Y
"""


def _note(*names: str, signer: NoteSigner = LOG, text: str = CHECKPOINT) -> str:
    return sign_note(text, signer) + "".join(cosign(text, W[n], timestamp=1000).to_line() for n in names)


def test_the_spec_example_parses() -> None:
    policy = WitnessPolicy.from_text(EXAMPLE)
    assert [k.name for k in policy.logs] == ["example.com/log"]
    assert policy.witnesses["X2"].url == "https://x2.example/"
    assert policy.groups["X-witnesses"].threshold == 2
    assert policy.groups["X-and-Y"].threshold == 2
    assert policy.quorum == "X-and-Y"


@pytest.mark.parametrize(
    ("cosigners", "met"),
    [
        ((), False),
        (("X1", "X2"), False),
        (("Y1", "Y2", "Y3"), False),
        (("X1", "Y1"), False),
        (("X1", "X2", "Y3"), True),
        (("X1", "X2", "X3", "Y1", "Y2", "Y3"), True),
    ],
    ids=["none", "two X only", "every Y only", "one X one Y", "two X one Y", "all"],
)
def test_the_quorum_is_evaluated_over_groups(cosigners: tuple[str, ...], met: bool) -> None:
    result = WitnessPolicy.from_text(EXAMPLE).check(_note(*cosigners))
    assert result.satisfied is met
    assert set(result.cosigned) == set(cosigners)
    assert result.checkpoint.size == 3


def test_verify_raises_when_the_quorum_is_not_met() -> None:
    with pytest.raises(VerificationError, match="not met"):
        WitnessPolicy.from_text(EXAMPLE).verify(_note("X1"))


def _simple(quorum_line: str = "quorum X1", *lines: str) -> str:
    return "\n".join([f"witness X1 {_vkey('X1')}", f"witness X2 {_vkey('X2')}", *lines, quorum_line]) + "\n"


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (_simple("quorum none"), "quorum none"),
        (_simple(""), "expected a 'quorum <name>' line"),
        (_simple("quorum X1\nquorum X2"), "one quorum line"),
        (_simple("quorum G"), "defined on an earlier line"),
        (_simple("quorum X1", "group G 0 X1"), "threshold"),
        (_simple("quorum X1", "group G 3 X1 X2"), "threshold"),
        (_simple("quorum X1", "group G most X1 X2"), "threshold"),
        (_simple("quorum X1", "group G 01 X1 X2"), "threshold"),
        (_simple("quorum X1", "group G any"), "at least one member"),
        (_simple("quorum X1", "group G any X1 X1"), "each member once"),
        (_simple("quorum X1", "group G any Z9"), "members defined on earlier lines"),
        (_simple("quorum X1", "group X1 any X2"), "a new group name"),
        (_simple("quorum X1", "group none any X2"), "a new group name"),
        (_simple("quorum X1", f"witness X1 {_vkey('X3')}"), "a new witness name"),
        (_simple("quorum X1", f"witness none {_vkey('X3')}"), "a new witness name"),
        (_simple("quorum X1", f"witness X9 {_vkey('X1')}"), "each witness's key once"),
        (_simple("quorum X1", f"witness X9 {LOG.verifier.to_string()}"), "type 0x04"),
        (_simple("quorum X1", f"log {_vkey('X3')}"), "type 0x01"),
        (
            _simple("quorum X1", f"log {LOG.verifier.to_string()}", f"log {LOG.verifier.to_string()}"),
            "log's key once",
        ),
        (_simple("quorum X1", "witness X9"), "'witness <name> <vkey> \\[<url>\\]'"),
        (_simple("quorum X1", "cosigner X9 key"), "a line starting with log, witness, group, quorum"),
        (_simple("quorum X1").replace("\n", "\r\n"), "byte 0x0d"),
        (_simple("quorum X1", "# a comment \x07 bell"), "byte 0x07"),
    ],
    ids=lambda v: v if isinstance(v, str) and len(v) < 40 else None,
)
def test_a_malformed_policy_is_refused(text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        WitnessPolicy.from_text(text)


def test_an_empty_policy_is_refused() -> None:
    with pytest.raises(ConfigError, match="quorum"):
        WitnessPolicy.from_text("")


def test_a_policy_too_large_is_refused() -> None:
    lines = [
        f"witness w{i} {generate_cosigner(f'w{i}').verifier.to_string()}" for i in range(MAX_ENTRIES + 1)
    ]
    with pytest.raises(ConfigError, match=f"at most {MAX_ENTRIES}"):
        WitnessPolicy.from_text("\n".join([*lines, "quorum w0"]))


def test_a_log_the_policy_does_not_list_is_refused() -> None:
    policy = WitnessPolicy.from_text(EXAMPLE)
    other = generate_signer("example.com/other")
    with pytest.raises(VerificationError, match="not one of the witness policy's logs"):
        policy.check(_note("X1", "X2", "Y1", signer=other), log=other.verifier)
    with pytest.raises(NoteError, match="no signature by a trusted key"):
        policy.check(_note("X1", "X2", "Y1", signer=other))


def test_without_log_lines_the_caller_names_the_log() -> None:
    policy = WitnessPolicy.from_text(_simple())
    with pytest.raises(VerificationError, match="lists no log"):
        policy.check(_note("X1"))
    assert policy.check(_note("X1"), log=LOG.verifier).satisfied


def test_a_checkpoint_of_another_origin_is_refused() -> None:
    text = CHECKPOINT.replace("example.com/log", "example.com/elsewhere")
    with pytest.raises(VerificationError, match="origin"):
        WitnessPolicy.from_text(EXAMPLE).check(_note("X1", text=text))


def test_a_forged_cosignature_by_a_policy_witness_fails_the_check() -> None:
    forger: Cosigner = generate_cosigner(W["X1"].name)  # the same name, another key
    note = _note("X2", "Y1") + cosign(CHECKPOINT, forger, timestamp=5).to_line()
    result = WitnessPolicy.from_text(EXAMPLE).check(note)  # another key ID: ignored
    assert not result.satisfied
    stolen = _note("X2", "Y1") + cosign(CHECKPOINT.replace("\n3\n", "\n2\n"), W["X1"], timestamp=5).to_line()
    with pytest.raises(NoteError, match="invalid cosignature by trusted witness"):
        WitnessPolicy.from_text(EXAMPLE).check(stolen)
