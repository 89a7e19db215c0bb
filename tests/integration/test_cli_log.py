"""The ``proctor`` CLI on a real data directory, as a user runs it (a child process)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from proctor.lineage.checkpoint import open_checkpoint
from proctor.lineage.merkle import leaf_hash
from proctor.lineage.proofs import ConsistencyProof, InclusionProof
from proctor.note import NoteVerifier


def run(*args: str, stdin: bytes | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "proctor", *args],
        check=False,
        input=stdin.decode() if stdin is not None else None,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"proctor {' '.join(args)} exited {proc.returncode}: {proc.stderr}")
    return proc


def events(n: int, start: int = 0) -> bytes:
    lines = [
        json.dumps({"v": 1, "type": "decision", "time": "2026-11-26T06:00:00Z", "n": i})
        for i in range(start, start + n)
    ]
    return ("\n".join(lines) + "\n").encode()


@pytest.fixture
def data(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    out = json.loads(run("init", "--data", str(d), "--origin", "cli.example/log").stdout)
    assert out["origin"] == "cli.example/log"
    assert out["log_key"].startswith("cli.example/log+")
    return d


def test_help_and_version() -> None:
    help_text = run("--help").stdout
    for command in ("init", "log", "demo"):
        assert command in help_text
    log_help = run("log", "--help").stdout
    for command in ("key", "checkpoint", "entry", "proof", "consistency", "verify"):
        assert command in log_help
    assert run("--version").stdout.startswith("proctor ")


def test_init_refuses_to_overwrite(data: Path) -> None:
    proc = run("init", "--data", str(data), check=False)
    assert proc.returncode == 2
    assert "already initialised" in proc.stderr


def test_commands_on_an_uninitialised_directory_fail_clearly(tmp_path: Path) -> None:
    proc = run("log", "checkpoint", "--data", str(tmp_path / "nothing"), check=False)
    assert proc.returncode == 2
    assert "proctor init" in proc.stderr


def test_append_prove_and_verify_offline(data: Path) -> None:
    d = str(data)
    # `proctor init` logged two events (the warrant key, the admin): ours start at 2.
    appended = json.loads(run("log", "append", "--data", d, stdin=events(5, 2)).stdout)
    assert appended["indices"] == [2, 3, 4, 5, 6]
    old = open_checkpoint(
        run("log", "checkpoint", "--data", d).stdout,
        NoteVerifier.from_string(run("log", "key", "--data", d).stdout.strip()),
    )
    assert old.size == 7
    run("log", "append", "--data", d, stdin=events(300, 7))
    verifier = NoteVerifier.from_string(run("log", "key", "--data", d).stdout.strip())
    cp = open_checkpoint(run("log", "checkpoint", "--data", d).stdout, verifier)
    assert cp.size == 307

    def leaf_of(index: int) -> bytes:
        event = json.loads(run("log", "entry", str(index), "--data", d).stdout)["event"]
        return json.dumps(event, separators=(",", ":"), sort_keys=True).encode()

    for index in (2, 6, 255, 256, 306):
        entry = json.loads(run("log", "entry", str(index), "--data", d).stdout)
        assert entry["index"] == index
        assert entry["event"]["n"] == index
        proof = json.loads(run("log", "proof", "--index", str(index), "--data", d).stdout)
        assert set(proof) == {"leaf_index", "tree_size", "hashes"}
        InclusionProof.from_json(proof).verify(leaf_hash(leaf_of(index)), cp.root_hash)
    sized = json.loads(run("log", "proof", "--index", "2", "--size", "7", "--data", d).stdout)
    assert sized["tree_size"] == 7
    InclusionProof.from_json(sized).verify(leaf_hash(leaf_of(2)), old.root_hash)
    consistency = json.loads(run("log", "consistency", "--old", "7", "--data", d).stdout)
    assert set(consistency) == {"old_size", "new_size", "hashes"}
    ConsistencyProof.from_json(consistency).verify(old.root_hash, cp.root_hash)
    report = json.loads(run("log", "verify", "--data", d).stdout)
    assert report == {"ok": True, "size": 307, "checkpoints": report["checkpoints"]}


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("log", "proof", "--index", "99"), "expected a leaf index"),
        (("log", "proof", "--index", "0", "--size", "99"), "expected a tree size"),
        (("log", "consistency", "--old", "9"), "expected an old size"),
        (("log", "entry", "99"), "expected an index"),
    ],
    ids=["index-beyond", "size-beyond", "old-beyond", "entry-beyond"],
)
def test_out_of_range_requests_are_clear_errors(data: Path, args: tuple[str, ...], expected: str) -> None:
    run("log", "append", "--data", str(data), stdin=events(3))
    proc = run(*args, "--data", str(data), check=False)
    assert proc.returncode == 2
    assert expected in proc.stderr


@pytest.mark.parametrize(
    ("stdin", "expected"),
    [
        (b"this is not json\n", "line 1: expected JSON text"),
        (events(1) + b'{"v":1,"type":"decision","time":"2026-11-26T06:00:00Z","x":NaN}\n', "line 2"),
        (b'{"v":1,"type":"decision","time":"2026-11-26T06:00:00Z","x":9007199254740993}\n', "IEEE 754"),
        (b'{"v":1,"type":"decision","time":"2026-11-26T06:00:00Z","x":"' + b"a" * 70000 + b'"}\n', "65536"),
        (b'{"v":"1","type":"decision","time":"2026-11-26T06:00:00Z"}\n', "v: expected"),
        (b'{"v":1,"type":"decision","time":"yesterday"}\n', "time: expected"),
        (b"[1,2,3]\n", "expected a JSON object"),
        (b"\n\n", "found none"),
    ],
    ids=["non-json", "nan-second-line", "lossy", "oversize", "wrong-type", "bad-time", "array", "empty"],
)
def test_bad_input_is_refused_and_the_log_is_untouched(data: Path, stdin: bytes, expected: str) -> None:
    d = str(data)
    run("log", "append", "--data", d, stdin=events(2))
    before = run("log", "checkpoint", "--data", d).stdout
    proc = run("log", "append", "--data", d, stdin=stdin, check=False)
    assert proc.returncode == 2
    assert expected in proc.stderr
    assert run("log", "checkpoint", "--data", d).stdout == before
    assert json.loads(run("log", "verify", "--data", d).stdout)["size"] == 4  # init's two + 2


def _sql(data: Path, *statements: tuple[str, tuple[Any, ...]]) -> None:
    with sqlite3.connect(data / "proctor.db") as conn:
        for sql, params in statements:
            conn.execute(sql, params)


def _entry(data: Path, index: int) -> bytes:
    with sqlite3.connect(data / "proctor.db") as conn:
        return bytes(conn.execute("SELECT data FROM entries WHERE idx = ?", (index,)).fetchone()[0])


def _flip_byte(data: Path, index: int) -> None:
    raw = bytearray(_entry(data, index))
    raw[raw.index(b'"n":') + 4] ^= 0x01  # a digit becomes another digit: still valid JSON
    _sql(data, ("UPDATE entries SET data = ? WHERE idx = ?", (bytes(raw), index)))


def _delete(data: Path, index: int) -> None:
    _sql(data, ("DELETE FROM entries WHERE idx = ?", (index,)))


def _swap(data: Path, index: int) -> None:
    a, b = _entry(data, index), _entry(data, index + 1)
    _sql(
        data,
        ("UPDATE entries SET data = ? WHERE idx = ?", (b, index)),
        ("UPDATE entries SET data = ? WHERE idx = ?", (a, index + 1)),
    )


@pytest.mark.parametrize(
    "tamper", [_flip_byte, _delete, _swap], ids=["byte-changed", "row-deleted", "rows-reordered"]
)
@pytest.mark.parametrize("index", [2, 137, 301])  # entries 0 and 1 are init's
def test_tampering_is_found_and_the_index_named(data: Path, tamper: Any, index: int) -> None:
    d = str(data)
    run("log", "append", "--data", d, stdin=events(301, 2))
    assert run("log", "verify", "--data", d).returncode == 0
    tamper(data, index)
    proc = run("log", "verify", "--data", d, check=False)
    assert proc.returncode == 1
    report = json.loads(proc.stdout)
    assert report["ok"] is False
    assert report["index"] == index
    assert f"at index {index}" in proc.stderr


def test_tampered_checkpoint_is_found(data: Path) -> None:
    d = str(data)
    run("log", "append", "--data", d, stdin=events(8, 2))
    with sqlite3.connect(data / "proctor.db") as conn:
        note = conn.execute("SELECT note FROM checkpoints WHERE size = 10").fetchone()[0]
    _sql(data, ("UPDATE checkpoints SET note = ? WHERE size = 10", (note.replace("\n10\n", "\n11\n"),)))
    proc = run("log", "verify", "--data", d, check=False)
    assert proc.returncode == 1
    assert "checkpoint" in json.loads(proc.stdout)["error"]


def test_demo_runs_to_completion_without_input(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "proctor", "demo", "--no-browser", "--data", str(tmp_path / "demo")],
        check=False,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "demo: OK" in proc.stdout
    assert "rejected at step" in proc.stdout
    assert "never ran" in proc.stdout
