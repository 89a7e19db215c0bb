"""The witness's HTTP application and the log's client, in process (Starlette's TestClient
over the plain ASGI app): routes, limits, readiness, and proctor log cosign's logic
(retries on 409, answers that are not cosignatures) against a real witness core."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient

from gov_server import free_port
from proctor.errors import ConfigError, VerificationError
from proctor.lineage.cosignature import generate_cosigner
from proctor.lineage.log import Log
from proctor.lineage.witness_policy import WitnessPolicy
from proctor.note import generate_signer
from proctor.orchestration.cosigning import check_witnessed, collect_cosignatures
from proctor.orchestration.witness import MAX_BODY, Witness
from proctor.orchestration.witness_http import WitnessApp, parse_listen
from proctor.orchestration.witness_state import WitnessState
from proctor.store.sqlite import SQLiteStore

URL = "http://testserver"


def _event(tag: str) -> dict[str, object]:
    return {"v": 1, "type": "approval", "time": "2026-01-01T00:00:00Z", "tag": tag}


class Setup:
    """A log on disk, its store, a witness app trusting it, and a policy naming both."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.log = Log.initialize(root / "log", origin="example.com/log")
        self.store = SQLiteStore(root / "log" / "proctor.db")
        self.state = WitnessState(root / "witness.db", create=True)
        self.state.add_log(self.log.verifier, added="2026-01-01T00:00:00Z")
        self.witness = Witness(self.state, generate_cosigner("witness.example/w1"))
        self.app = WitnessApp(self.witness, clock=lambda: 1_800_000_000.0)
        self.client = TestClient(self.app, base_url=URL)
        self.policy = WitnessPolicy.from_text(
            f"log {self.log.verifier_key()}\nwitness w1 {self.witness.cosigner.verifier.to_string()} {URL}\n"
            "quorum w1\n"
        )

    def cosign(self) -> dict[str, object]:
        return collect_cosignatures(self.log, self.store, self.policy, client=self.client).to_json()

    def close(self) -> None:
        self.client.close()
        self.state.close()
        self.store.close()
        self.log.close()


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    s = Setup(tmp_path)
    yield s
    s.close()


def test_routes_answer_as_the_spec_says(setup: Setup) -> None:
    c = setup.client
    assert c.get("/healthz").status_code == 200
    assert c.get("/readyz").json() == {"ready": True, "open_alarms": 0}
    assert c.get("/add-checkpoint").status_code == 405
    assert c.post("/readyz").status_code == 405
    assert c.get("/nothing").status_code == 404
    assert c.post("/add-checkpoint", content=b"x" * (MAX_BODY + 1)).status_code == 413
    assert c.post("/add-checkpoint", content=b"old 0\n").status_code == 400
    assert "proctor_witness_open_alarms 0.0" in c.get("/metrics").text


def test_log_cosign_stores_the_cosignature_and_the_log_is_witnessed(setup: Setup) -> None:
    setup.log.append_many([_event("a"), _event("b")])
    report = setup.cosign()
    assert report["quorum"]["satisfied"] is True  # type: ignore[index]
    [stored] = setup.store.cosignatures()
    assert stored.size == setup.log.checkpoint_size()
    assert stored.name == "witness.example/w1"
    witnessed = check_witnessed(setup.store, setup.log.verifier, setup.policy)
    assert witnessed.ok, witnessed.detail
    setup.log.append(_event("c"))
    behind = check_witnessed(setup.store, setup.log.verifier, setup.policy)
    assert not behind.ok
    assert behind.witnessed_size == stored.size
    assert "1 entries after it are not witnessed" in behind.detail
    assert setup.cosign()["witnesses"][0]["outcome"] == "cosigned"  # type: ignore[index]
    assert check_witnessed(setup.store, setup.log.verifier, setup.policy).ok


def test_log_cosign_follows_the_size_the_witness_says_it_holds(setup: Setup) -> None:
    setup.log.append(_event("a"))
    setup.cosign()
    # The witness cosigns a later checkpoint the log never stored a cosignature of (a
    # second submitter; a crash after the answer): asked from the old size, it answers
    # 409 with its size, and the log proves from there.
    setup.log.append(_event("b"))
    body = f"old 1\n{setup.log.consistency_proof(1)['hashes'][0]}\n\n{setup.log.checkpoint()}"
    assert setup.client.post("/add-checkpoint", content=body).status_code == 200
    setup.log.append(_event("c"))
    report = setup.cosign()
    assert report["witnesses"][0]["outcome"] == "cosigned"  # type: ignore[index]
    assert 'proctor_witness_requests_total{outcome="conflict"} 1.0' in setup.client.get("/metrics").text


def test_a_witness_ahead_of_the_log_is_reported(setup: Setup) -> None:
    setup.log.append(_event("a"))
    setup.log.close()
    shutil.copytree(setup.root / "log", setup.root / "behind")
    setup.log = Log.open(setup.root / "log")
    setup.log.append(_event("b"))
    setup.cosign()
    setup.log.close()
    setup.store.close()
    setup.log = Log.open(setup.root / "behind")  # the same log, entries lost
    setup.store = SQLiteStore(setup.root / "behind" / "proctor.db")
    report = setup.cosign()
    assert report["witnesses"][0]["outcome"] == "ahead"  # type: ignore[index]
    assert "entries were lost" in report["witnesses"][0]["detail"]  # type: ignore[index]


def test_an_answer_without_a_valid_cosignature_is_not_stored(setup: Setup) -> None:
    setup.log.append(_event("a"))
    other = generate_cosigner("witness.example/w1")  # same name, another key
    setup.witness.cosigner = other
    report = setup.cosign()
    assert report["witnesses"][0]["outcome"] == "invalid"  # type: ignore[index]
    assert setup.store.cosignatures() == []
    assert report["quorum"]["satisfied"] is False  # type: ignore[index]


def test_a_witness_that_cannot_be_reached_is_reported(setup: Setup) -> None:
    setup.log.append(_event("a"))
    nobody = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    policy = WitnessPolicy.from_text(
        f"witness w1 {setup.witness.cosigner.verifier.to_string()} {nobody}\nquorum w1\n"
    )
    with httpx.Client(timeout=5) as client:
        report = collect_cosignatures(setup.log, setup.store, policy, client=client).to_json()
    assert report["witnesses"][0]["outcome"] == "unreachable"


def test_a_policy_that_does_not_list_the_log_is_refused(setup: Setup) -> None:
    setup.log.append(_event("a"))
    witness_line = f"witness w1 {setup.witness.cosigner.verifier.to_string()} {URL}\nquorum w1\n"
    no_logs = WitnessPolicy.from_text(witness_line)  # the log is known from context: accepted
    assert collect_cosignatures(setup.log, setup.store, no_logs, client=setup.client).quorum.satisfied
    stranger = WitnessPolicy.from_text(
        f"log {generate_signer('example.com/log').verifier.to_string()}\n{witness_line}"
    )
    with pytest.raises(VerificationError, match="not one of the witness policy's logs"):
        collect_cosignatures(setup.log, setup.store, stranger, client=setup.client)
    assert not check_witnessed(setup.store, setup.log.verifier, stranger).ok


@pytest.mark.parametrize(
    ("listen", "expected"),
    [
        ("127.0.0.1:8710", ("127.0.0.1", 8710)),
        ("[::1]:9", ("::1", 9)),
        ("localhost:65535", ("localhost", 65535)),
    ],
)
def test_listen_addresses_parse(listen: str, expected: tuple[str, int]) -> None:
    assert parse_listen(listen) == expected


@pytest.mark.parametrize("listen", ["8710", ":8710", "host:", "host:0", "host:65536", "host:x"])
def test_bad_listen_addresses_are_refused(listen: str) -> None:
    with pytest.raises(ConfigError, match="HOST:PORT"):
        parse_listen(listen)
