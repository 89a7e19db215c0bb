"""Interoperability with Go's ``golang.org/x/mod/sumdb/note`` and ``sumdb/tlog``.

proctor claims its checkpoints are C2SP signed notes and its proofs RFC 9162 proofs
that Go's transparency-log packages accept unchanged. These tests hand proctor's
output, byte for byte, to a small Go program (``tests/interop/go/main.go``) built
against Debian's ``golang-golang-x-mod-dev`` sources, and require Go to verify:

- the checkpoint note (``note.NewVerifier`` + ``note.Open``), and that Go's
  ``note.Sign`` with the same key reproduces proctor's note exactly;
- every inclusion proof (``tlog.CheckRecord`` over ``tlog.RecordHash(leaf)``);
- consistency proofs from every older checkpoint (``tlog.CheckTree``).

Negative controls show the Go side really checks: tampered signatures, proofs,
leaves and keys must each be rejected, for the expected reason.

Without ``go`` or the x/mod sources the interop tests skip, loudly; with
``PROCTOR_REQUIRE_GO=1`` (as in CI) they fail instead.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import pytest

from proctor.datadir import DataDir
from proctor.lineage.log import Log
from proctor.note import NoteSigner, NoteVerifier, generate_signer, open_note, sign_note

REPO = Path(__file__).resolve().parents[2]
GO_MAIN = REPO / "tests" / "interop" / "go" / "main.go"
GOCODE = Path("/usr/share/gocode")
SUMDB = GOCODE / "src" / "golang.org" / "x" / "mod" / "sumdb"

ORIGIN = "interop.example/proctor"
# Sizes around the power-of-two and 256-entry tile boundaries.
SIZES = [1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 255, 256, 257, 511, 512, 513, 1000]

# The example from golang.org/x/mod/sumdb/note/example_test.go (ExampleSign, ExampleOpen).
GO_EXAMPLE_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_EXAMPLE_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_EXAMPLE_TEXT = (
    "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
)
GO_EXAMPLE_NOTE = (
    GO_EXAMPLE_TEXT + "\n"
    "\u2014 PeterNeumann "
    "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
)


# The installed console script when there is one (as users run it), else its entry point.
_SCRIPT = Path(sys.executable).with_name("proctor")
PROCTOR = (
    [str(_SCRIPT)] if _SCRIPT.is_file() else [sys.executable, "-c", "from proctor.cli import main; main()"]
)


# -- the Go verifier -------------------------------------------------------------


def _unavailable_or_required(reason: str) -> NoReturn:
    message = (
        f"Go interop tests cannot run: {reason}. Install Go and the x/mod sources "
        "(apt-get install golang-go golang-golang-x-mod-dev) to check proctor against "
        "golang.org/x/mod/sumdb/note and sumdb/tlog."
    )
    if os.environ.get("PROCTOR_REQUIRE_GO") == "1":
        pytest.fail(f"{message} PROCTOR_REQUIRE_GO=1 is set, so this is a failure, not a skip.")
    pytest.skip(message)


@pytest.fixture(scope="module")
def go_verifier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build tests/interop/go/main.go once (GOPATH mode, offline) and return the binary."""
    go = shutil.which("go")
    if go is None:
        _unavailable_or_required("'go' is not on PATH")
    missing = [p for p in (SUMDB / "note" / "note.go", SUMDB / "tlog" / "tlog.go") if not p.is_file()]
    if missing:
        _unavailable_or_required(f"{', '.join(map(str, missing))} not found")
    work = tmp_path_factory.mktemp("go-verify")
    binary = work / "proctor-go-verify"
    env = {
        **os.environ,
        "GO111MODULE": "off",
        "GOPATH": str(GOCODE),
        "GOFLAGS": "",
        "GOPROXY": "off",
        "GOTOOLCHAIN": "local",
        "GOENV": "off",
        "GOCACHE": str(work / "gocache"),
        "CGO_ENABLED": "0",
    }
    try:
        built = subprocess.run(
            [go, "build", "-o", str(binary), GO_MAIN.name],
            cwd=GO_MAIN.parent,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("building the Go verifier took more than 120 s")
    if built.returncode != 0:
        pytest.fail(f"building {GO_MAIN} failed (exit {built.returncode}):\n{built.stdout}{built.stderr}")
    return binary


@dataclass
class GoResult:
    returncode: int
    output: dict[str, Any]
    stderr: str

    @property
    def error(self) -> str:
        return str(self.output.get("error", ""))


def run_go(binary: Path, doc: dict[str, Any]) -> GoResult:
    done = subprocess.run(
        [str(binary)],
        input=json.dumps(doc),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    try:
        output = json.loads(done.stdout)
    except ValueError:
        pytest.fail(
            f"the Go verifier printed no JSON (exit {done.returncode}): {done.stdout!r} {done.stderr!r}"
        )
    assert isinstance(output, dict)
    return GoResult(done.returncode, output, done.stderr)


def assert_go_accepts(binary: Path, doc: dict[str, Any]) -> dict[str, Any]:
    result = run_go(binary, doc)
    assert result.returncode == 0, f"Go rejected proctor's output: {result.error}"
    assert result.output["ok"] is True
    return result.output


# -- a log grown through many sizes ------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _event(i: int) -> dict[str, Any]:
    types = ["decision", "warrant.issued", "execution.started", "execution.completed", "revocation"]
    return {
        "v": 1,
        "type": types[i % len(types)],
        "time": "2026-11-26T06:00:00Z",
        "seq": i,
        "note": f"entry {i} \u00e9\u2014\U0001f512",
        "nested": {"z": [i, str(i)], "a": None, "m": i % 2 == 0},
    }


@dataclass
class Step:
    """What the log showed when it had exactly ``size`` entries."""

    size: int
    checkpoint: str
    inclusion: dict[int, list[str]] = field(default_factory=dict)
    consistency: dict[int, list[str]] = field(default_factory=dict)


@dataclass
class GrownLog:
    data: Path
    vkey: str
    skey: str
    steps: dict[int, Step]
    leaves: list[bytes]

    def step(self, size: int) -> Step:
        return self.steps[size]


@pytest.fixture(scope="module")
def grown_log(tmp_path_factory: pytest.TempPathFactory) -> GrownLog:
    """A log appended to in batches up to each size in SIZES; at each size, the
    checkpoint, every inclusion proof and consistency proofs from every older
    checkpoint are taken while the log had exactly that size."""
    data = tmp_path_factory.mktemp("grown") / "data"
    log = Log.initialize(data, origin=ORIGIN)
    try:
        steps: dict[int, Step] = {}
        size = 0
        for target in SIZES:
            log.append_many([_event(i) for i in range(size, target)])
            size = target
            assert log.checkpoint_size() == size
            step = Step(size, log.checkpoint())
            for i in range(size):
                step.inclusion[i] = log.inclusion_proof(i)["hashes"]
            for old in steps:
                proof = log.consistency_proof(old)
                assert (proof["old_size"], proof["new_size"]) == (old, size)
                step.consistency[old] = proof["hashes"]
            steps[size] = step
        leaves = [log.leaf(i) for i in range(size)]
        vkey = log.verifier_key()
    finally:
        log.close()
    skey = DataDir.open(data).log_signer().to_string()
    return GrownLog(data, vkey, skey, steps, leaves)


def _doc(grown: GrownLog, size: int, *, leaves: list[int] | None = None) -> dict[str, Any]:
    """The Go verifier's input for the checkpoint of ``size``: its inclusion proofs
    (all, or those of ``leaves``) and consistency proofs from every older size."""
    step = grown.step(size)
    indices = range(size) if leaves is None else leaves
    return {
        "vkey": grown.vkey,
        "checkpoint": step.checkpoint,
        "leaves": [
            {"index": i, "data_b64": _b64(grown.leaves[i]), "proof": step.inclusion[i]} for i in indices
        ],
        "consistency": [
            {
                "old_checkpoint": grown.step(old).checkpoint,
                "old_size": old,
                "new_size": size,
                "hashes": hashes,
            }
            for old, hashes in step.consistency.items()
        ],
    }


# -- Go accepts proctor's output ---------------------------------------------------


@pytest.mark.interop
@pytest.mark.parametrize("size", SIZES)
def test_go_verifies_checkpoint_inclusion_and_consistency(
    go_verifier: Path, grown_log: GrownLog, size: int
) -> None:
    doc = _doc(grown_log, size)
    doc["skey"] = grown_log.skey  # Go re-signs the checkpoint text: bytes must match
    out = assert_go_accepts(go_verifier, doc)
    assert out["origin"] == ORIGIN
    assert out["size"] == size
    assert out["extensions"] == 0
    assert out["resigned_identical"] is True
    assert out["key_hash"] == NoteVerifier.from_string(grown_log.vkey).key_id.hex()
    assert out["leaves_verified"] == size
    assert out["consistency_verified"] == len([s for s in SIZES if s < size])


@pytest.mark.interop
def test_go_verifies_proofs_served_later_against_old_checkpoints(
    go_verifier: Path, grown_log: GrownLog
) -> None:
    """Proofs for an old tree size, asked of the full log (not taken at the time),
    are the same as those taken at the time, and Go accepts them."""
    with Log.open(grown_log.data) as log:
        for size in SIZES:
            step = grown_log.step(size)
            for i in range(size):
                assert log.inclusion_proof(i, size)["hashes"] == step.inclusion[i], (i, size)
            for old, hashes in step.consistency.items():
                assert log.consistency_proof(old, size)["hashes"] == hashes, (old, size)
            assert _b64(log.root(size)) == step.checkpoint.split("\n")[2]
    for size in SIZES:
        assert_go_accepts(go_verifier, _doc(grown_log, size))


@pytest.mark.interop
def test_go_verifies_cli_output_unchanged(go_verifier: Path, tmp_path: Path) -> None:
    """The CLI's printed key, checkpoints and proofs, passed on as printed."""
    data = tmp_path / "data"

    def cli(*args: str) -> str:
        done = subprocess.run(
            [*PROCTOR, *args, "--data", str(data)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, f"proctor {' '.join(args)} failed: {done.stderr}"
        return done.stdout

    def append(events: list[dict[str, Any]], name: str) -> None:
        path = tmp_path / name
        path.write_text("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in events), encoding="utf-8")
        cli("log", "append", str(path))

    init = json.loads(cli("init", "--origin", "cli.interop.example/log"))
    # `proctor init` logs two events (warrant key, admin principal): the tree starts at 2.
    append([_event(i) for i in range(3)], "first.jsonl")
    old_checkpoint = cli("log", "checkpoint")
    append([_event(i) for i in range(3, 11)], "second.jsonl")
    vkey = cli("log", "key").strip()
    assert vkey == init["log_key"]
    checkpoint = cli("log", "checkpoint")
    assert checkpoint.endswith("=\n"), "expected the note exactly as signed, with no extra newline"

    with Log.open(data) as log:
        leaves = {i: log.leaf(i) for i in range(13)}
    doc_leaves = []
    for i in (0, 5, 12):
        entry = json.loads(cli("log", "entry", str(i)))
        proof = json.loads(cli("log", "proof", "--index", str(i)))
        assert (entry["index"], proof["leaf_index"], proof["tree_size"]) == (i, i, 13)
        doc_leaves.append(
            {
                "index": i,
                "data_b64": _b64(leaves[i]),
                "leaf_hash": entry["leaf_hash"],  # Go checks tlog.RecordHash(leaf) equals it
                "proof": proof["hashes"],
            }
        )
    consistency = json.loads(cli("log", "consistency", "--old", "5"))
    assert (consistency["old_size"], consistency["new_size"]) == (5, 13)
    doc = {
        "vkey": vkey,
        "checkpoint": checkpoint,
        "leaves": doc_leaves,
        "consistency": [
            {
                "old_checkpoint": old_checkpoint,
                "old_size": 5,
                "new_size": 13,
                "hashes": consistency["hashes"],
            }
        ],
    }
    out = assert_go_accepts(go_verifier, doc)
    assert (out["size"], out["leaves_verified"], out["consistency_verified"]) == (13, 3, 1)

    # A proof for an older tree size, checked against the older checkpoint.
    proof = json.loads(cli("log", "proof", "--index", "3", "--size", "5"))
    old_doc = {
        "vkey": vkey,
        "checkpoint": old_checkpoint,
        "leaves": [{"index": 3, "data_b64": _b64(leaves[3]), "proof": proof["hashes"]}],
    }
    assert assert_go_accepts(go_verifier, old_doc)["size"] == 5


# -- negative controls: Go must reject tampering -------------------------------------


def _flip_signature_byte(note: str, offset: int) -> str:
    """Flip one byte of the decoded signature line (offset 0-3 is the key ID)."""
    text, sig_line = note[:-1].rsplit("\n", 1)
    prefix, b64 = sig_line.rsplit(" ", 1)
    raw = bytearray(base64.b64decode(b64))
    raw[offset] ^= 0x01
    return f"{text}\n{prefix} {_b64(bytes(raw))}\n"


def _flip_hash_bit(b64: str, bit: int = 0) -> str:
    raw = bytearray(base64.b64decode(b64))
    raw[bit // 8] ^= 1 << (bit % 8)
    return _b64(bytes(raw))


def _edit_body(note: str, line: int, replace: Callable[[str], str]) -> str:
    lines = note.split("\n")
    lines[line] = replace(lines[line])
    return "\n".join(lines)


def _other_signer() -> NoteSigner:
    return generate_signer(ORIGIN)  # same name, different key


def _forged_key_id(vkey: str) -> str:
    name, key_id, key = vkey.split("+", 2)
    return f"{name}+{int(key_id, 16) ^ 1:08x}+{key}"


def _modified_leaf(data_b64: str) -> str:
    raw = bytearray(base64.b64decode(data_b64))
    raw[raw.index(b'"seq":') + 6] ^= 0x01  # one digit of the sequence number
    return _b64(bytes(raw))


def _foreign_checkpoint(note: str) -> str:
    """The same checkpoint text signed by a different key of the same name."""
    return sign_note(note.split("\n\n", maxsplit=1)[0] + "\n", _other_signer())


Mutation = Callable[[dict[str, Any], GrownLog], None]

CONTROL_SIZE = 257
CONTROL_LEAVES = [0, 1, 128, 255, 256]


def _set(key: str, value: Callable[[Any], Any]) -> Mutation:
    def mutate(doc: dict[str, Any], grown: GrownLog) -> None:
        doc[key] = value(doc[key])

    return mutate


def _leaf(i: int, key: str, value: Callable[[Any], Any]) -> Mutation:
    def mutate(doc: dict[str, Any], grown: GrownLog) -> None:
        doc["leaves"][i][key] = value(doc["leaves"][i][key])

    return mutate


def _consistency(i: int, key: str, value: Callable[[Any], Any]) -> Mutation:
    def mutate(doc: dict[str, Any], grown: GrownLog) -> None:
        doc["consistency"][i][key] = value(doc["consistency"][i][key])

    return mutate


def _wrong_old_checkpoint(doc: dict[str, Any], grown: GrownLog) -> None:
    """Pair the consistency proof from 256 with the checkpoint of 255."""
    entry = doc["consistency"][-1]
    assert entry["old_size"] == 256
    entry["old_checkpoint"] = grown.step(255).checkpoint
    del entry["old_size"]


def _proof_for_another_leaf(doc: dict[str, Any], grown: GrownLog) -> None:
    """Leaf 128's data with leaf 129's proof, claimed as index 128."""
    doc["leaves"][2]["proof"] = grown.step(CONTROL_SIZE).inclusion[129]


SIG_ERROR = f"invalid signature for key {ORIGIN}+"
UNVERIFIED = "note has no verifiable signatures"
PROOF_FAILED = "invalid transparency proof"

MUTATIONS: dict[str, tuple[Mutation, str]] = {
    "signature byte flipped": (_set("checkpoint", lambda n: _flip_signature_byte(n, 20)), SIG_ERROR),
    "last signature byte flipped": (_set("checkpoint", lambda n: _flip_signature_byte(n, 67)), SIG_ERROR),
    "key ID in signature flipped": (_set("checkpoint", lambda n: _flip_signature_byte(n, 0)), UNVERIFIED),
    "checkpoint size edited": (
        _set("checkpoint", lambda n: _edit_body(n, 1, lambda s: str(int(s) + 1))),
        SIG_ERROR,
    ),
    "checkpoint root edited": (_set("checkpoint", lambda n: _edit_body(n, 2, _flip_hash_bit)), SIG_ERROR),
    "checkpoint signed by another key": (_set("checkpoint", _foreign_checkpoint), UNVERIFIED),
    "wrong verifier key, same origin": (
        _set("vkey", lambda _: _other_signer().verifier.to_string()),
        UNVERIFIED,
    ),
    "wrong verifier key, other origin": (
        _set("vkey", lambda _: generate_signer("other.example/log").verifier.to_string()),
        UNVERIFIED,
    ),
    "verifier key with a forged key ID": (_set("vkey", _forged_key_id), "invalid verifier hash"),
    "inclusion proof bit flipped": (
        _leaf(2, "proof", lambda p: [*p[:3], _flip_hash_bit(p[3], 77), *p[4:]]),
        PROOF_FAILED,
    ),
    "inclusion proof hash dropped": (_leaf(3, "proof", lambda p: p[:-1]), PROOF_FAILED),
    "inclusion proof hash added": (_leaf(3, "proof", lambda p: [*p, p[0]]), PROOF_FAILED),
    "inclusion proof of another leaf": (_proof_for_another_leaf, PROOF_FAILED),
    "leaf modified": (_leaf(1, "data_b64", _modified_leaf), PROOF_FAILED),
    "leaf index shifted": (_leaf(2, "index", lambda i: i + 1), PROOF_FAILED),
    "proctor leaf hash disagrees with tlog.RecordHash": (
        _leaf(0, "leaf_hash", _flip_hash_bit),
        "tlog.RecordHash gives",
    ),
    "consistency proof bit flipped": (
        _consistency(-1, "hashes", lambda p: [_flip_hash_bit(p[0], 255), *p[1:]]),
        PROOF_FAILED,
    ),
    "consistency proof hash dropped": (_consistency(-2, "hashes", lambda p: p[1:]), PROOF_FAILED),
    "consistency proof against the wrong old checkpoint": (_wrong_old_checkpoint, PROOF_FAILED),
    "old checkpoint signature flipped": (
        _consistency(0, "old_checkpoint", lambda n: _flip_signature_byte(n, 30)),
        SIG_ERROR,
    ),
}


@pytest.fixture(scope="module")
def control_doc(go_verifier: Path, grown_log: GrownLog) -> dict[str, Any]:
    """A document Go accepts; each negative control changes one thing in it."""
    doc = _doc(grown_log, CONTROL_SIZE, leaves=CONTROL_LEAVES)
    with Log.open(grown_log.data) as log:
        doc["leaves"][0]["leaf_hash"] = _b64(log.leaf_hash(CONTROL_LEAVES[0]))
    out = assert_go_accepts(go_verifier, doc)
    assert out["leaves_verified"] == len(CONTROL_LEAVES)
    assert out["consistency_verified"] == len([s for s in SIZES if s < CONTROL_SIZE])
    return doc


@pytest.mark.interop
@pytest.mark.parametrize("name", list(MUTATIONS))
def test_go_rejects_tampering(
    go_verifier: Path, grown_log: GrownLog, control_doc: dict[str, Any], name: str
) -> None:
    mutate, expected = MUTATIONS[name]
    doc = copy.deepcopy(control_doc)
    mutate(doc, grown_log)
    assert doc != control_doc, "the mutation changed nothing"
    result = run_go(go_verifier, doc)
    assert result.returncode != 0, f"Go accepted a tampered document ({name}): {result.output}"
    assert result.output["ok"] is False
    assert expected in result.error, f"expected Go to fail with {expected!r}, found {result.error!r}"


# -- Go's own signed-note example, through proctor (pure Python) -----------------------


def test_go_note_example_signed_and_opened_by_proctor() -> None:
    signer = NoteSigner.from_string(GO_EXAMPLE_SKEY)
    assert signer.name == "PeterNeumann"
    assert signer.key_id.hex() == "c74f20a3"
    assert signer.to_string() == GO_EXAMPLE_SKEY
    assert signer.verifier.to_string() == GO_EXAMPLE_VKEY
    signed = sign_note(GO_EXAMPLE_TEXT, signer)
    assert signed.encode() == GO_EXAMPLE_NOTE.encode()
    opened = open_note(GO_EXAMPLE_NOTE.encode(), [NoteVerifier.from_string(GO_EXAMPLE_VKEY)])
    assert opened.text == GO_EXAMPLE_TEXT
    assert [(s.name, s.key_id.hex()) for s in opened.verified] == [("PeterNeumann", "c74f20a3")]
    assert opened.unverified == ()


def test_go_note_example_matches_the_go_sources() -> None:
    """The constants above are Go's; check them against the installed example when present."""
    example = SUMDB / "note" / "example_test.go"
    if not example.is_file():
        pytest.skip(f"{example} not installed (golang-golang-x-mod-dev); constants are checked above")
    source = example.read_text(encoding="utf-8")
    assert f'"{GO_EXAMPLE_SKEY}"' in source
    assert f'"{GO_EXAMPLE_VKEY}"' in source
    assert "// " + GO_EXAMPLE_NOTE.rstrip("\n").split("\n")[-1] in source


# -- one tree from several writers (ADR 0015) ------------------------------------------


def _shared_writer(data: str, name: str, count: int) -> None:
    with Log.open(data, shared=True) as log:
        for i in range(count):
            log.append({**_event(i), "writer": name})


@pytest.mark.interop
def test_go_verifies_one_tree_written_by_three_processes(go_verifier: Path, tmp_path: Path) -> None:
    """Three processes append to one log in turns; every checkpoint any of them signed
    is consistent with the final one, and every entry is included, as Go checks them."""
    import multiprocessing

    data = tmp_path / "data"
    Log.initialize(data, origin=ORIGIN).close()
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_shared_writer, args=(str(data), f"w{n}", 120)) for n in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    with Log.open(data) as log:
        size = log.size
        assert size == 360
        final = log.checkpoint()
        leaves = [log.leaf(i) for i in range(size)]
        doc = {
            "vkey": log.verifier_key(),
            "checkpoint": final,
            "leaves": [
                {"index": i, "data_b64": _b64(leaves[i]), "proof": log.inclusion_proof(i)["hashes"]}
                for i in range(size)
            ],
            "consistency": [
                {
                    "old_checkpoint": note,
                    "old_size": old,
                    "new_size": size,
                    "hashes": log.consistency_proof(old, size)["hashes"],
                }
                for old, note in log._store.checkpoints()
                if 0 < old < size
            ],
        }
    assert len(doc["consistency"]) > 3  # several writers' checkpoints, not one
    writers = {json.loads(leaf)["writer"] for leaf in leaves}
    assert writers == {"w0", "w1", "w2"}
    assert_go_accepts(go_verifier, doc)
