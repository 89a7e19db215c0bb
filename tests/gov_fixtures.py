"""Shared fixtures for governor tests: an initialised data directory with a policy.

Imported by the conftest of every test directory that needs them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gov_support import POLICIES, signed_bundle
from proctor.authorization.keys import PrincipalKey
from proctor.governor.service import Governor, initialize


@pytest.fixture
def gov_data(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    initialize(data, origin="test.example/gov")
    return data


@pytest.fixture
def governor(gov_data: Path) -> Iterator[Governor]:
    with Governor(gov_data) as gov:
        alice = PrincipalKey.generate("alice")
        alice.save(gov_data / "alice.key")
        gov.add_principal("alice", alice.public_key_b64, attrs={"role": "dev"}, zone="", by="admin")
        bob = PrincipalKey.generate("bob")
        bob.save(gov_data / "bob.key")
        gov.add_principal("bob", bob.public_key_b64, attrs={"role": "ops"}, zone="", by="admin")
        gov.push_policy(signed_bundle(gov_data, POLICIES / "basic"), by="admin")
        yield gov
