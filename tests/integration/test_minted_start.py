"""A start of a warrant this governor process minted checks it by its exact bytes
(:mod:`proctor.authorization.minted`), not by opening it again; every check that can
change after minting still runs. In process, with the real log, state and minting.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gov_support import EXE, POLICIES, signed_bundle
from proctor.authorization import minted as minted_module
from proctor.authorization.keys import PrincipalKey
from proctor.authorization.warrants import attenuate_warrant, verify_warrant_bounds
from proctor.errors import WarrantError
from proctor.governor.model import AuthorizeRequest
from proctor.governor.service import Governor

MEASURED = {
    "executable": "/bin/echo",
    "executable_digest": EXE,
    "files": [{"path": "/bin/echo", "digest": EXE, "role": "executable"}],
    "script_index": None,
}


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The tokens the start opened and verified in full."""
    tokens: list[str] = []

    def counted(token: str, **kw: Any) -> Any:
        tokens.append(token)
        return verify_warrant_bounds(token, **kw)

    monkeypatch.setattr(minted_module, "verify_warrant_bounds", counted)
    return tokens


def _warrant(gov: Governor, argv: tuple[str, ...] = ("echo", "hi")) -> str:
    result = gov.authorize(
        "alice", AuthorizeRequest(action="exec", resource="/bin/echo", argv=argv, executable_digest=EXE)
    )
    assert result.warrant is not None, result.decision.reason
    return result.warrant


def _start(
    gov: Governor, token: str, argv: tuple[str, ...] = ("echo", "hi"), **changes: Any
) -> dict[str, Any]:
    body = {"warrant": token, "action": "exec", "resource": "/bin/echo", "argv": list(argv),
            "measurement": MEASURED, **changes}  # fmt: skip
    return dict(gov.executions.start("alice", body))


def test_a_warrant_minted_here_starts_without_being_opened_again(
    governor: Governor, opened: list[str]
) -> None:
    started = _start(governor, _warrant(governor))
    assert started["execution"]
    assert opened == []
    assert governor.executions.renew("alice", started["execution"], {"integrity": "ok"})["ok"] is True


def test_a_warrant_revoked_after_it_was_minted_is_refused(governor: Governor, opened: list[str]) -> None:
    token = _warrant(governor)
    claims = verify_warrant_bounds(
        token, root_public_key=governor.warrant_public_key, now=int(governor.now()), request=None
    ).claims
    governor.revoke("warrant", claims.warrant_id, reason="test", by="admin")
    with pytest.raises(WarrantError) as refused:
        _start(governor, token)
    assert refused.value.reason == "revoked"
    assert opened == []


def test_a_start_for_other_arguments_is_refused(governor: Governor, opened: list[str]) -> None:
    with pytest.raises(WarrantError) as refused:
        _start(governor, _warrant(governor), argv=("echo", "bye"))
    assert refused.value.reason == "scope"


def test_an_attenuated_copy_is_opened_and_verified_in_full(governor: Governor, opened: list[str]) -> None:
    token = _warrant(governor)
    copy = attenuate_warrant(token, root_public_key=governor.warrant_public_key, resource="/bin/echo")
    assert _start(governor, copy)["execution"]
    assert opened == [copy]


def test_a_warrant_the_minting_helper_returned_is_opened_and_verified_in_full(
    gov_data: Path, opened: list[str]
) -> None:
    """The helper's answers are paired with their claims by order only: its tokens are
    never taken as known."""
    with Governor(gov_data, mint_helper=True) as helped:
        alice = PrincipalKey.generate("alice")
        helped.add_principal("alice", alice.public_key_b64, attrs={"role": "dev"}, zone="", by="admin")
        helped.push_policy(signed_bundle(gov_data, POLICIES / "basic"), by="admin")
        helped.log.busy = True  # as after a batch of several callers: the helper mints
        token = _warrant(helped)
        assert _start(helped, token)["execution"]
        assert opened == [token]
