"""The lineage log beside pymerkle (its in-memory and SQLite trees): appends and proofs.

The same entries go into both: the canonical bytes of ~580-byte governor ``decision``
events (:func:`bench.lib.decision_event`). Figures:

- a durable append of one entry: proctor's ``Log.append`` (the SQLite commit with
  ``synchronous=FULL`` and a signed checkpoint over the new tree) vs pymerkle's
  ``SqliteTree.append_entry`` (one SQLite commit, no signature) and its in-memory tree;
- appends of 256 entries at once (``append_many`` vs ``append_entries``);
- inclusion proofs (RFC 9162 for proctor; pymerkle's own) at each tree size, generated
  for random entries against that size, and verified against the root; consistency
  proofs from a random earlier size. Proof time against log size is a curve: 10k and
  100k entries in ``--quick``, up to 10M in ``--full``, where proctor's log is built
  once and cached under ``.bench/`` (pymerkle's trees are built in the run, to 1M: its
  in-memory tree holds every entry in Python objects).

Before timing, proctor's proofs and pymerkle's are checked to verify.
"""

from __future__ import annotations

import json
import random
import shutil
import time
from pathlib import Path
from typing import Any

from bench.lib import Context, Member, Record, decision_event, time_calls, version_of
from proctor.canonical import canonicalize
from proctor.lineage.log import Log
from proctor.lineage.merkle import leaf_hash
from proctor.lineage.proofs import ConsistencyProof, InclusionProof

BATCH = 4096


def entry(i: int) -> bytes:
    """The leaf bytes of entry ``i`` (as the log stores them)."""
    return canonicalize(decision_event(i))


def cached_log(ctx: Context, size: int) -> Path:
    """A data directory holding a log of at least ``size`` entries, built once under
    ``.bench/`` (a marker file says it is complete) and reused by later runs."""
    data = ctx.cache / f"log-{size}"
    marker = data / "bench-log.json"
    if marker.exists():
        return data
    if data.exists():
        shutil.rmtree(data)
    data.parent.mkdir(parents=True, exist_ok=True)
    Log.initialize(data, origin="bench.local/log").close()
    t0 = time.perf_counter()
    with Log.open(data, batch_size=BATCH) as log:
        while log.size < size:
            lo = log.size
            log.append_many([decision_event(i) for i in range(lo, min(lo + BATCH, size))])
            if log.size // 200_000 != lo // 200_000:
                ctx.status(f"building the {size:,}-entry log once (cached): {log.size:,}")
    marker.write_text(json.dumps({"size": size, "seconds": time.perf_counter() - t0}))
    return data


def pymerkle_trees(ctx: Context, size: int) -> tuple[Any, Any, str] | str:
    """pymerkle's in-memory and SQLite trees of ``size`` entries, or why there are none."""
    try:
        import pymerkle  # type: ignore[import-untyped]  # noqa: PLC0415 - the bench extra
    except ImportError as e:
        return f"pymerkle not installed ({e}); pip install -e '.[bench]'"
    memory = pymerkle.InmemoryTree(algorithm="sha256")
    sqlite = pymerkle.SqliteTree(str(ctx.work / "pymerkle.db"), algorithm="sha256")
    for lo in range(0, size, BATCH):
        chunk = [entry(i) for i in range(lo, min(lo + BATCH, size))]
        memory.append_entries(chunk)
        sqlite.append_entries(chunk)
        if lo % 200_000 == 0 and lo:
            ctx.status(f"pymerkle trees: {lo:,} entries")
    return memory, sqlite, f"pymerkle {version_of('pymerkle')}"


def measure(ctx: Context) -> list[Record]:
    cfg = ctx.config
    sizes: list[int] = cfg["sizes"]
    samples, seconds = cfg["samples"], cfg["seconds"]
    peer_max = cfg["peer_max"]
    rng = random.Random(9162)
    out: list[Record] = []

    # -- appends, on fresh logs ----------------------------------------------------------
    ctx.status("durable appends")
    fresh = Log.initialize(ctx.work / "fresh", origin="bench.local/log")
    n = cfg["appends"]
    try:
        single = time_calls(
            lambda i: fresh.append(decision_event(i)), samples=n, seconds=seconds * 4, warmup=5
        )
        base = fresh.size
        many = time_calls(
            lambda i: fresh.append_many([decision_event(base + 256 * i + k) for k in range(256)]),
            samples=n // 4 or 1, seconds=seconds * 4,
        )  # fmt: skip
    finally:
        fresh.close()
    out.append(ctx.record("proctor Log.append (fsync, signed checkpoint)", single, "µs",
                          group="durable append, 1 entry"))  # fmt: skip
    out.append(ctx.record("proctor Log.append_many(256)", [x / 256 for x in many], "µs/entry",
                          group="append 256 at once"))  # fmt: skip
    trees = pymerkle_trees(ctx, min(max(sizes), peer_max))
    if isinstance(trees, str):
        for group in ("durable append, 1 entry", "append 256 at once"):
            out.append(ctx.unavailable("pymerkle SqliteTree", "µs", trees, group=group, baseline=True))
        memory = sqlite = None
        peer = "pymerkle"
    else:
        memory, sqlite, peer = trees
        import pymerkle  # noqa: PLC0415

        scratch = pymerkle.SqliteTree(str(ctx.work / "append.db"), algorithm="sha256")
        mem2 = pymerkle.InmemoryTree(algorithm="sha256")
        for tree, label, base_ in ((scratch, "pymerkle SqliteTree.append_entry (one commit)", True),
                                   (mem2, "pymerkle InmemoryTree.append_entry", False)):  # fmt: skip
            values = time_calls(
                lambda i: tree.append_entry(entry(i)), samples=n, seconds=seconds * 4, warmup=5
            )
            out.append(
                ctx.record(label, values, "µs", group="durable append, 1 entry", baseline=base_, peer=peer)
            )
        for tree, label, base_ in ((scratch, "pymerkle SqliteTree.append_entries(256)", True),
                                   (mem2, "pymerkle InmemoryTree.append_entries(256)", False)):  # fmt: skip
            values = time_calls(lambda i: tree.append_entries([entry(10**7 + 256 * i + k) for k in range(256)]),
                                samples=n // 4 or 1, seconds=seconds * 4)  # fmt: skip
            out.append(ctx.record(label, [x / 256 for x in values], "µs/entry", group="append 256 at once",
                                  baseline=base_, peer=peer))  # fmt: skip
        scratch.con.close()

    # -- proofs against the tree size -----------------------------------------------------
    data = cached_log(ctx, max(sizes))
    log = Log.open(data)
    try:
        for size in sizes:
            ctx.status(f"proofs at {size:,} entries")
            indices = [rng.randrange(size) for _ in range(samples)]
            olds = [rng.randrange(1, size) for _ in range(samples)]
            root = log.root(size)
            for i in indices[:3]:  # the proofs verify, and the leaves are pymerkle's entries
                InclusionProof.from_json(log.inclusion_proof(i, size)).verify(leaf_hash(log.leaf(i)), root)
                if log.leaf(i) != entry(i):
                    raise AssertionError(f"entry {i}: the log holds other bytes than pymerkle would")
            for i in indices:  # warm the tile cache, as pymerkle's subroot cache is warmed below
                log.inclusion_proof(i, size)
            g = f"inclusion proof, {size:,} entries"
            curve = {"curve": "proof-vs-log-size", "x": size}
            out.append(ctx.record(f"proctor inclusion proof, {size:,}", time_calls(
                lambda k: log.inclusion_proof(indices[k % samples], size), samples=samples, seconds=seconds),
                "µs", group=g, series="proctor Log.inclusion_proof", **curve))  # fmt: skip
            docs = [
                (json.loads(json.dumps(log.inclusion_proof(i, size))), leaf_hash(log.leaf(i)))
                for i in indices
            ]
            vg = f"verify inclusion proof, {size:,} entries"
            out.append(ctx.record(f"proctor verify inclusion, {size:,}", time_calls(
                lambda k: InclusionProof.from_json(docs[k % samples][0]).verify(docs[k % samples][1], root),
                samples=samples, seconds=seconds), "µs", group=vg, series="proctor verify"))  # fmt: skip
            cg = f"consistency proof, {size:,} entries"
            out.append(ctx.record(f"proctor consistency proof, {size:,}", time_calls(
                lambda k: log.consistency_proof(olds[k % samples], size), samples=samples, seconds=seconds),
                "µs", group=cg, series="proctor Log.consistency_proof"))  # fmt: skip
            cdoc = json.loads(json.dumps(log.consistency_proof(olds[0], size)))
            ConsistencyProof.from_json(cdoc).verify(log.root(olds[0]), root)
            if memory is None or size > peer_max:
                why = (f"pymerkle trees built to {peer_max:,} entries in this run" if memory is not None
                       else str(trees))  # fmt: skip
                for group in (g, vg, cg):
                    out.append(
                        ctx.unavailable(
                            f"pymerkle, {size:,}", "µs", why, group=group, baseline=True, peer=peer
                        )
                    )
                continue
            out += pymerkle_proofs(
                ctx, memory, sqlite, peer, size, indices, olds, samples, seconds, g, vg, cg, root
            )
    finally:
        log.close()
    return out


def pymerkle_proofs(
    ctx: Context, memory: Any, sqlite: Any, peer: str, size: int, indices: list[int], olds: list[int],
    samples: int, seconds: float, g: str, vg: str, cg: str, expected_root: bytes,
) -> list[Record]:  # fmt: skip
    """pymerkle's figures at ``size`` (its indices count from 1), after checking that its
    root is the log's ``expected_root`` (both are RFC 6962 trees of the same entries)."""
    import pymerkle  # noqa: PLC0415

    out: list[Record] = []
    curve = {"curve": "proof-vs-log-size", "x": size}
    for tree, label, base in ((sqlite, "SqliteTree", True), (memory, "InmemoryTree", False)):
        root = tree.get_root(size)
        if root != expected_root:
            raise AssertionError(
                f"pymerkle's {label} root at {size} differs from the log's: not the same entries"
            )
        proof = tree.prove_inclusion(indices[0] + 1, size)
        pymerkle.verify_inclusion(leaf_hash(entry(indices[0])), root, proof)
        for i in indices:
            tree.prove_inclusion(i + 1, size)  # warm its caches
        out.append(ctx.record(f"pymerkle {label} inclusion proof, {size:,}", time_calls(
            lambda k: tree.prove_inclusion(indices[k % samples] + 1, size), samples=samples, seconds=seconds),
            "µs", group=g, series=f"pymerkle {label}", baseline=base, peer=peer, **curve))  # fmt: skip
        proofs = [(leaf_hash(entry(i)), tree.prove_inclusion(i + 1, size).serialize()) for i in indices[:500]]
        out.append(ctx.record(f"pymerkle {label} verify inclusion, {size:,}", time_calls(
            lambda k: pymerkle.verify_inclusion(
                proofs[k % len(proofs)][0], root, pymerkle.InclusionProof.deserialize(proofs[k % len(proofs)][1])),
            samples=samples, seconds=seconds), "µs", group=vg, series=f"pymerkle {label} verify",
            baseline=base, peer=peer))  # fmt: skip
        out.append(ctx.record(f"pymerkle {label} consistency proof, {size:,}", time_calls(
            lambda k: tree.prove_consistency(olds[k % samples], size), samples=samples, seconds=seconds),
            "µs", group=cg, series=f"pymerkle {label}", baseline=base, peer=peer))  # fmt: skip
    return out


MEMBER = Member(
    name="log",
    title="Lineage log: appends and proofs vs pymerkle",
    quick={"sizes": [10_000, 100_000], "peer_max": 100_000, "samples": 1000, "seconds": 0.4, "appends": 100},
    full={
        "sizes": [10_000, 100_000, 1_000_000, 10_000_000],
        "peer_max": 1_000_000,
        "samples": 20000,
        "seconds": 4.0,
        "appends": 400,
    },
    run=measure,
    meaning=(
        "What recording costs, and what proving costs as the record grows. Each authorization "
        "appends a decision durably (grouped with concurrent ones into one commit and one signed "
        "checkpoint); anyone holding a receipt can later ask for an inclusion proof, and an auditor "
        "for a consistency proof. Proof time grows with the logarithm of the log's size."
    ),
)
