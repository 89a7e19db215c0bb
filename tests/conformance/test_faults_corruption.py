"""Corrupted SQLite pages and rows: bytes flipped in the data directory's database file,
as a failing disk or a stray write would (not through SQL): a page header of the tiles
and of the entries table, a leaf hash in a complete tile and at the right edge, an
interior hash, an entry's bytes, the latest checkpoint's signature, an older
checkpoint's root.

``proctor log verify`` exits 1 and names what is wrong (the entry, the tile, the
checkpoint, the malformed page); a governor started on the damaged file refuses to start
or refuses to serve (not ready, every authorization denied), never allows anything on it,
and leaves the damage where it is for the operator (``proctor log verify`` still names it).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from fault_workload import echo
from figures import record
from gov_server import cli, free_port
from gov_support import POLICIES, signed_bundle
from proctor.authorization.keys import PrincipalKey
from proctor.client import GovernorClient
from proctor.errors import GovernorError
from proctor.governor.model import AuthorizeRequest
from proctor.governor.service import Governor, initialize
from proctor.store.base import Tile

AUTHORIZATIONS = 150  # 2 entries each (decision, warrant), after init's and setup's: one complete tile
COMPLETE, EDGE = 10, 270  # an entry in complete tile 0/0, one in the right edge's tile 0/1
WAIT = 60.0


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A governor's data directory with a complete tile and a partial one, stopped cleanly."""
    data = tmp_path_factory.mktemp("corruption") / "data"
    initialize(data, origin="corrupt.example/gov")
    with Governor(data) as gov:
        alice = PrincipalKey.generate("alice")
        alice.save(data / "alice.key")
        gov.add_principal("alice", alice.public_key_b64, attrs={"role": "dev"}, zone="", by="admin")
        gov.push_policy(signed_bundle(data, POLICIES / "basic"), by="admin")
        for i in range(AUTHORIZATIONS):
            request = AuthorizeRequest(**{**echo(f"c{i}"), "argv": ("echo", f"c{i}")})
            assert gov.authorize("alice", request).allowed
        assert gov.log.size > 256 + 8
    with sqlite3.connect(data / "proctor.db") as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # every page in the main file
    return data


# -- the damage -------------------------------------------------------------------------------


def _db(data: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{data / 'proctor.db'}?mode=ro", uri=True)


def _flip(data: Path, needle: bytes, at: int, mask: int = 0x01) -> None:
    """Flip bits of the byte ``at`` within the only occurrence of ``needle`` in the file."""
    path = data / "proctor.db"
    raw = path.read_bytes()
    assert raw.count(needle) == 1, (
        f"expected {needle[:16]!r}… once in the file, found it {raw.count(needle)} times"
    )
    _flip_offset(path, raw.index(needle) + at, mask)


def _flip_offset(path: Path, offset: int, mask: int) -> None:
    with path.open("r+b") as f:
        f.seek(offset)
        byte = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([byte ^ mask]))


def _leaf(data: Path, index: int) -> bytes:
    with contextlib.closing(_db(data)) as db:
        (raw,) = db.execute("SELECT data FROM entries WHERE idx = ?", (index,)).fetchone()
    return hashlib.sha256(b"\x00" + bytes(raw)).digest()


def _page_header(table: str) -> Callable[[Path], None]:
    def damage(data: Path) -> None:
        with contextlib.closing(_db(data)) as db:
            (size,) = db.execute("PRAGMA page_size").fetchone()
            leaves = [
                p
                for (p,) in db.execute(
                    "SELECT pageno FROM dbstat WHERE name = ? AND pagetype = 'leaf'", (table,)
                )
            ]
        _flip_offset(data / "proctor.db", (leaves[len(leaves) // 2] - 1) * size, 0xFF)  # the b-tree page type

    return damage


def _leaf_hash(index: int) -> Callable[[Path], None]:
    return lambda data: _flip(data, _leaf(data, index), 7)


def _interior_hash(data: Path) -> None:
    with contextlib.closing(_db(data)) as db:
        width, hashes = db.execute("SELECT width, hashes FROM tiles WHERE level = 0 AND idx = 0").fetchone()
    node = Tile(0, 0, int(width), bytes(hashes)).hash_at(3, 2)  # the node over entries 16..23
    assert node is not None
    _flip(data, node, 0)


def _entry_bytes(index: int) -> Callable[[Path], None]:
    def damage(data: Path) -> None:
        with contextlib.closing(_db(data)) as db:
            (raw,) = db.execute("SELECT data FROM entries WHERE idx = ?", (index,)).fetchone()
        raw = bytes(raw)
        _flip(data, raw, raw.index(b'"time":"') + 20)  # a digit of its time: still a valid event

    return damage


def _checkpoint(which: str) -> Callable[[Path], None]:
    def damage(data: Path) -> None:
        with contextlib.closing(_db(data)) as db:
            order = "DESC" if which == "latest" else "ASC"
            (note,) = db.execute(
                f"SELECT note FROM checkpoints WHERE size > 10 ORDER BY size {order} LIMIT 1"
            ).fetchone()
        # Its signature, or its root hash (the body's third line): one base64 character
        # becomes another, so the note still parses and only the signature check fails.
        text = note.rstrip("\n").rsplit(" ", 1)[1] if which == "latest" else note.split("\n")[2]
        at = next(i for i, c in enumerate(text) if c.isalnum() and chr(ord(c) ^ 1).isalnum())
        _flip(data, text.encode(), at)

    return damage


@dataclass(frozen=True)
class Damage:
    flip: Callable[[Path], None]
    named: tuple[str, ...]  # what `proctor log verify` says, each substring in its message
    governor_sees: bool = True  # whether a governor's start-up check reads what is damaged


CASES: dict[str, Damage] = {
    "tiles-page-header": Damage(_page_header("tiles"), ("malformed",)),
    "entries-page-header": Damage(_page_header("entries"), ("malformed",)),
    "leaf-hash-in-a-complete-tile": Damage(_leaf_hash(COMPLETE), (f"index {COMPLETE}", "leaf hash")),
    "leaf-hash-at-the-right-edge": Damage(_leaf_hash(EDGE), (f"index {EDGE}", "leaf hash")),
    "interior-hash-of-a-complete-tile": Damage(_interior_hash, ("tile 0/0",)),
    "entry-bytes": Damage(_entry_bytes(100), ("index 100",)),
    "latest-checkpoint-signature": Damage(_checkpoint("latest"), ("checkpoint of size", "does not verify")),
    # Only `proctor log verify` reads every stored checkpoint; a governor serves from the
    # latest one (see the report's "left undone").
    "older-checkpoint-root": Damage(_checkpoint("oldest"), ("checkpoint of size",), governor_sees=False),
}


@pytest.fixture
def damaged(pristine: Path, tmp_path: Path, request: pytest.FixtureRequest) -> tuple[str, Path, Damage]:
    data = tmp_path / "data"
    shutil.copytree(pristine, data, symlinks=True)
    case = CASES[request.param]
    case.flip(data)
    return request.param, data, case


_named: dict[str, str] = {}  # case -> what verify said (filled by passing tests only)
_governor: dict[str, str] = {}  # case -> what the governor did


@pytest.fixture(scope="module", autouse=True)
def figures() -> Iterator[None]:
    """Record the figures once every case passed both tests (a failure publishes none)."""
    yield
    seen = [c for c in CASES if CASES[c].governor_sees]
    if set(_named) != set(CASES) or set(_governor) != set(seen):
        return
    record(
        "faults-corruption",
        section="Faults injected",
        summary=[
            f"{len(CASES)} kinds of damage flipped into the SQLite file of a stopped governor, one each"
        ],
        columns=("damage", "proctor log verify", "governor started on it"),
        rows=[
            [c, _named[c], _governor.get(c, "not read at start-up: it serves from the latest checkpoint")]
            for c in CASES
        ],
    )


def _verify(data: Path) -> subprocess.CompletedProcess[str]:
    return cli("log", "verify", "--data", str(data), "--json", check=False, timeout=WAIT)


def _assert_named(proc: subprocess.CompletedProcess[str], case: Damage) -> str:
    """Check that verify failed naming the damage; return its message."""
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)  # VERIFY_FAILED
    assert "Traceback" not in proc.stderr, proc.stderr
    for text in case.named:
        assert text in proc.stderr, (text, proc.stderr)
    if proc.stdout.strip():
        assert json.loads(proc.stdout)["ok"] is False
    return proc.stderr.strip().splitlines()[-1].removeprefix("proctor: ")


@pytest.mark.parametrize("damaged", list(CASES), indirect=True)
def test_log_verify_names_each_kind_of_damage_to_the_database_file(damaged: tuple[str, Path, Damage]) -> None:
    """`proctor log verify` exits 1 naming the damage when bytes of the database file flip."""
    name, data, case = damaged
    _named[name] = "exit 1: " + _assert_named(_verify(data), case)


def _entries(data: Path) -> list[dict[str, object]]:
    with contextlib.closing(_db(data)) as db:
        try:
            rows = db.execute("SELECT data FROM entries ORDER BY idx").fetchall()
        except sqlite3.DatabaseError:
            return []  # a malformed page: nothing can be read past it
    out: list[dict[str, object]] = []
    for (raw,) in rows:
        with contextlib.suppress(ValueError):
            out.append(json.loads(bytes(raw)))
    return out


@pytest.mark.parametrize("damaged", [c for c in CASES if CASES[c].governor_sees], indirect=True)
def test_a_governor_refuses_to_serve_on_a_damaged_log_and_allows_nothing_on_it(
    damaged: tuple[str, Path, Damage], tmp_path: Path
) -> None:
    """A governor started on a damaged database file refuses to start or to serve (not
    ready, everything denied), allows nothing, and leaves the damage named."""
    name, data, case = damaged
    before = _entries(data)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with (tmp_path / "serve.err").open("w+") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "proctor", "serve", "--data", str(data), "--port", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
        try:
            up = _answering(url, proc)
            if not up:  # it refused to start: exit 3 (unavailable), the damage named
                assert proc.wait(timeout=WAIT) == 3
                err.seek(0)
                said = err.read()
                assert "Traceback" not in said, said
                assert "error:" in said, said
                outcome = "exit 3: " + said.strip().splitlines()[-1].removeprefix("proctor: ")
            else:
                ready = httpx.get(f"{url}/readyz", timeout=WAIT)
                assert ready.status_code == 503, ready.text
                said = json.dumps(ready.json()["checks"])
                alice = PrincipalKey.load(data / "alice.key")
                with GovernorClient(url, alice, timeout=WAIT) as client, contextlib.suppress(GovernorError):
                    answer = client.authorize(echo("on-damage"))
                    assert answer["decision"]["allow"] is False, answer
                outcome = "not ready, every authorization denied: " + ready.json()["checks"]["store"]
        finally:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=WAIT)
    assert any(word in said for word in ("malformed", "tile", "entry", "checkpoint", "hash")), said
    # Nothing allowed on the damaged log: whatever was appended is a deny, and the damage is still named.
    after = _entries(data)
    added = after[len(before) :] if before else []
    assert all(e.get("type") == "decision" and e.get("decision") == "deny" for e in added), added
    _assert_named(_verify(data), case)
    _governor[name] = outcome.replace(str(data), "<data>")


def _answering(url: str, proc: subprocess.Popen[bytes]) -> bool:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline and proc.poll() is None:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return True
        time.sleep(0.05)
    return False
