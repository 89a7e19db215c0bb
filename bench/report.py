"""``docs/benchmarks.md`` and ``docs/images/bench-*.png``, generated from ``bench/results.json``.

``python -m bench --report`` (or any run that writes the default results file) calls
:func:`render`. Nothing here measures: the page is a function of the records, so a
figure in the page is always one in ``results.json``.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from pathlib import Path

from bench.lib import REPO, Record, fmt, fmt_ratio, ratio

DOC = REPO / "docs" / "benchmarks.md"
IMAGES = REPO / "docs" / "images"

CURVES: dict[str, tuple[str, str, bool]] = {
    "decision-vs-policies": ("Decision latency vs rules (in process)", "rules in the policy", True),
    "proof-vs-log-size": ("Inclusion proof generation vs log size", "entries in the log", True),
    "renew-vs-leases": (
        "Lease renewal latency vs leases held (fixed request rate)",
        "concurrent leases",
        True,
    ),
    "revoke-vs-executions": ("Revoke call → tree dead vs running executions", "executions running", False),
    "authz-vs-workers": (
        "Throughput vs governor processes (proctor serve --workers N)",
        "worker processes",
        False,
    ),
}
"""Each scale plot: title, x label, logarithmic axes."""

__all__ = ["CURVES", "markdown", "plotted", "render"]


_START_BEYOND = "start beyond the governor's answers (measure, warrant checked, contained start)"


def _members() -> list[tuple[str, str, str]]:
    from bench.suite import MEMBERS  # noqa: PLC0415 - the suite imports proctor; the report reads it

    return [(m.name, m.title, m.meaning) for m in MEMBERS]


def plot(records: Sequence[Record], curve: str, path: Path) -> bool:
    """Draw ``curve``'s series (median solid, p99 dotted) into ``path``; False if it has no points."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    points = [r for r in records if r.curve == curve and r.x is not None and r.median is not None]
    if not points:
        return False
    title, xlabel, log = CURVES[curve]
    fig, ax = plt.subplots(figsize=(7.5, 4.4), dpi=100)
    series: dict[str, list[Record]] = {}
    for r in points:
        series.setdefault(r.series, []).append(r)
    for i, (name, rows) in enumerate(series.items()):
        rows.sort(key=lambda r: r.x or 0)
        xs = [float(r.x or 0) for r in rows]
        color = f"C{i}"
        ax.plot(
            xs, [float(r.median or math.nan) for r in rows], marker="o", color=color, label=f"{name} (median)"
        )
        if any(r.p99 is not None for r in rows):
            ax.plot(xs, [float(r.p99 if r.p99 is not None else math.nan) for r in rows], linestyle=":", color=color,
                    alpha=0.7, label=f"{name} (p99)")  # fmt: skip
    if log:
        ax.set_xscale("log")
        ax.set_yscale("log")
    unit = points[0].unit
    ax.set_xlabel(xlabel)
    ax.set_ylabel(unit)
    ax.set_title(title, fontsize=11)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    mode = sorted({r.mode for r in points})
    load = sorted({r.machine.get("load", [0])[0] for r in points})
    fig.text(0.01, 0.01, f"python -m bench --{'/'.join(mode)}; load average at start {load[0]:.1f}-{load[-1]:.1f}",
             fontsize=7, alpha=0.7)  # fmt: skip
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return True


def _find(records: Sequence[Record], member: str, group: str, *, baseline: bool | None = None,
          series: str | None = None) -> Record | None:  # fmt: skip
    for r in records:
        if r.member == member and r.group == group and r.median is not None:
            if baseline is not None and r.baseline != baseline:
                continue
            if series is not None and r.series != series:
                continue
            return r
    return None


def _ratio_text(r: Record, records: Sequence[Record]) -> str:
    if r.baseline:
        return "= 1"
    value = ratio(r, records)
    return "" if value is None else fmt_ratio(value)


def headlines(records: Sequence[Record]) -> list[str]:
    """What the figures mean for a user, one line each (those whose records exist), each
    with the mode and the load average its member started at."""
    lines: list[str] = []

    def add(member: str, line: str) -> None:
        rows = [r for r in records if r.member == member]
        load = statistics.median(r.machine.get("load", [math.nan])[0] for r in rows)
        lines.append(f"{line} [`--{rows[0].mode}`, load {load:.1f}]")

    direct = _find(records, "mcp", "tools/call over stdio", baseline=True)
    gateway = _find(records, "mcp", "tools/call over stdio", series="proctor gateway")
    if direct and gateway and direct.median is not None and gateway.median is not None:
        add(
            "mcp",
            f"**Governing an MCP tool call adds {gateway.median - direct.median:.1f} ms** (median, stdio: "
            f"{gateway.median:.1f} ms through `proctor gateway mcp` against {direct.median:.1f} ms direct; "
            "the governor decides, mints a warrant and commits the decision durably for every call).",
        )
        peers = [r for r in records if r.member == "mcp" and r.group == "tools/call over stdio" and r.peer
                 and r.median is not None]  # fmt: skip
        for p in peers:
            if p.median is not None:
                add("mcp", f"{p.series} adds {p.median - direct.median:.1f} ms on the same call (it decides "
                             "locally and keeps no signed record).")  # fmt: skip
        relay = _find(records, "mcp", "tools/call over stdio", series="pass-through relay")
        alone = _find(records, "mcp", "tools/call over stdio", series="governor round trip")
        if relay and alone and relay.median is not None and alone.median is not None:
            least = relay.median - direct.median + alone.median
            add("mcp", f"What any gateway that asks a governor per call must add, measured in the same run: "
                       f"{least:.1f} ms (being in the path, the gateway's transport copying messages: "
                       f"{relay.median - direct.median:.1f} ms; the governor's signed round trip with its "
                       f"durable commit, alone: {alone.median:.1f} ms). proctor's gateway adds "
                       f"{gateway.median - direct.median - least:.1f} ms beyond that floor.")  # fmt: skip
    sizes = sorted({int(r.x) for r in records if r.curve == "decision-vs-policies" and r.x is not None})
    for n in sorted({n for n in sizes if n == 500} | set(sizes[-1:])):
        ours = _find(records, "policy", f"decision, {n} rules", series="proctor PolicyEngine.decide")
        agt = _find(records, "policy", f"decision, {n} rules", baseline=True)
        if ours and ours.median is not None:
            tail = ""
            if agt and agt.median:
                tail = f"; agent-governance-toolkit's `PolicyEngine` takes {fmt(agt.median)} µs ({agt.median / ours.median:,.0f}x)"
            add(
                "policy",
                f"A policy decision among {n:,} rules takes **{fmt(ours.median)} µs** in process{tail}.",
            )
    n = 500 if 500 in sizes else (sizes[-1] if sizes else 0)
    auth = _find(records, "policy", f"governed call + audit, {n} rules", series="proctor Governor.authorize")
    if auth and auth.median is not None:
        add("policy", f"A full authorization in process (decision, warrant, durable signed log entry) takes "
                     f"**{auth.median / 1000:.2f} ms** at {n:,} rules.")  # fmt: skip
    rt = _find(records, "workers", "one request at a time", baseline=False)
    floor = _find(records, "workers", "one request at a time", baseline=True)
    if rt and floor and rt.median is not None and floor.median is not None:
        add("workers", f"Over HTTP, one signed authorization round trip takes **{rt.median:.2f} ms** "
                     f"(`GET /healthz` on the same server: {floor.median:.2f} ms).")  # fmt: skip
    best = [
        r
        for r in records
        if r.member == "workers" and r.series == "authorizations/s" and r.median is not None
    ]
    if best:
        top = max(best, key=lambda r: r.median or 0)
        add("workers", f"One two-core host authorizes up to **{top.median:,.0f} signed calls/s** "
                     f"({top.name.split(', ', 1)[-1]}).")  # fmt: skip
    run = _find(
        records,
        "run",
        "start true and wait",
        series="proctor run -- true (authorize, lease, contained, finish)",
    )
    plain = _find(records, "run", "start true and wait", baseline=True)
    if run and plain and run.median is not None and plain.median is not None:
        add("run", f"`proctor run true` takes **{fmt(run.median)} ms** against {plain.median:.1f} ms for "
                     "`subprocess.run(['true'])`: a governed command pays the CLI's start and two round trips once.")  # fmt: skip
    inside = "governed run of true, in process"
    start = _find(records, "run", inside, series=_START_BEYOND)
    waits = _find(records, "run", inside, series="waits for the governor (authorize, start, finish)")
    clock = "the command's start, in process (date's own clock reading)"
    began = _find(records, "run", clock, series="the command started, beyond the governor's answers")
    date = _find(records, "run", clock, baseline=True)
    if start and waits and start.median is not None and waits.median is not None:
        if began and date and began.median is not None and date.median is not None:
            add("run", f"Beyond the governor's answers ({waits.median:.1f} ms for three), a governed command is "
                         f"running **{began.median:.2f} ms** after its run began (`subprocess.run`: "
                         f"{date.median:.2f} ms to the same instant); the enforcer's start returns at "
                         f"{start.median:.2f} ms (the child set up while the governor decides, ADR 0024; the "
                         "warrant verified while the start is recorded, ADR 0026).")  # fmt: skip
        else:
            add("run", f"Beyond the governor's answers ({waits.median:.1f} ms for three), the enforcer's own "
                         f"start of a contained command takes **{start.median:.2f} ms** (the child is set up "
                         "while the governor decides, ADR 0024).")  # fmt: skip
    revokes = [r for r in records if r.member == "revoke" and not r.baseline and r.median is not None]
    if revokes:
        r0 = min(revokes, key=lambda r: r.x or 0)
        r1 = max(revokes, key=lambda r: r.x or 0)
        add("revoke", f"A revoked execution's process tree is dead **{r0.median:.1f} ms** after the revocation "
                     f"call is sent ({r0.x:.0f} running; {r1.median:.1f} ms with {r1.x:.0f} running).")  # fmt: skip
    renews = [r for r in records if r.member == "leases" and not r.baseline and r.median is not None]
    if renews:
        big = max(renews, key=lambda r: r.x or 0)
        add("leases", f"A lease renewal takes **{big.median:.2f} ms** with {big.x:,.0f} leases held.")
    verify = _find(records, "warrant", "verify", series="proctor warrant")
    jwt = _find(records, "warrant", "verify", baseline=True)
    if verify and verify.median is not None:
        tail = f" (a JWT chain's: {fmt(jwt.median)} µs)" if jwt else ""
        add(
            "warrant",
            f"Verifying a warrant for the request about to run takes **{fmt(verify.median)} µs**{tail}.",
        )
    proofs = [r for r in records if r.member == "log" and r.series == "proctor Log.inclusion_proof"
              and r.median is not None]  # fmt: skip
    if proofs:
        big = max(proofs, key=lambda r: r.x or 0)
        add("log", f"An inclusion proof from a log of {big.x:,.0f} entries takes **{fmt(big.median)} µs**.")
    return lines


def _machine_line(rows: Sequence[Record]) -> str:
    m = rows[0].machine
    loads = [r.machine.get("load", [math.nan])[0] for r in rows]
    when = sorted({r.machine.get("when", "?") for r in rows})
    return (f"`--{rows[0].mode}`, {when[0]}, commit {m.get('commit', '?')}; {m.get('cpu', '?')}, "
            f"{m.get('nproc', '?')} CPUs, Python {m.get('python', '?')}; load average (1 min) at its start "
            f"{statistics.median(loads):.2f}")  # fmt: skip


def markdown(records: Sequence[Record], images: dict[str, str]) -> str:
    """The page."""
    out = [
        "<!-- Generated by `python -m bench --report` from bench/results.json: do not edit by hand. -->",
        "",
        "# Benchmarks",
        "",
        "What governing costs, measured side by side with the alternatives in the same run, on the same",
        "machine, with the same inputs: every figure below sits beside a yardstick or a peer measured",
        "with it, and the tables give each figure's ratio to it. The ratios are what to read: this",
        "machine's speed varies about 3x from day to day, and other work shares it (the load average at",
        "the start of each member is given; 2 means both cores were busy with something else).",
        "",
        "The measurements of earlier issues, with their findings, profiles and history, are in",
        "[benchmarks-history.md](benchmarks-history.md).",
        "",
        "## What it means",
        "",
    ]
    out += [f"- {line}" for line in headlines(records)]
    modes = sorted({r.mode for r in records})
    loads = [r.machine.get("load", [math.nan])[0] for r in records]
    cpus = sorted({str(r.machine.get("cpu")) for r in records})
    out += [
        "",
        "## Machine",
        "",
        f"{', '.join(cpus)}; {records[0].machine.get('nproc')} CPUs, {records[0].machine.get('memory')}, "
        f"Linux {records[0].machine.get('kernel')}, Python {records[0].machine.get('python')}, SQLite "
        f"{records[0].machine.get('sqlite')}, cedarpy {records[0].machine.get('cedarpy')}. Modes: "
        f"{', '.join('`--' + m + '`' for m in modes)}. Load average (1 min) at the members' starts: "
        f"{min(loads):.2f} to {max(loads):.2f}: other work (other developers' test suites) was running on "
        "the same two cores, so absolute figures are slower and p99s wider than on an idle machine; the "
        "ratios to the yardsticks measured in the same seconds hold better.",
        "",
        "## How to reproduce",
        "",
        "```sh",
        "pip install -e '.[bench]'           # PyJWT, pymerkle, matplotlib (pinned in constraints.txt)",
        "python -m bench                     # --quick: every member, small ranges",
        "python -m bench --full              # the full ranges (the 10M-entry log is built once under .bench/)",
        "python -m bench --only policy,log   # some members; their records replace theirs in bench/results.json",
        "python -m bench --report            # regenerate this page and the plots from bench/results.json",
        "```",
        "",
        "Peers whose dependencies cannot share proctor's pinned environment (agent-governance-toolkit,",
        "mcp-airlock, mcp-zero-trust-layer) are installed on first use, pinned, into virtualenvs of their",
        "own under `.bench/peers/`; bubblewrap is Debian's `bubblewrap` (`scripts/setup` installs it). A",
        'peer that cannot be installed shows as "n/a (why)".',
        "",
        "## How to read the tables",
        "",
        "- **median** and **p99** (nearest rank) over **n** measurements; throughputs (`/s`) are the",
        "  median over rounds, without a p99.",
        "- **ratio**: the figure's median over its group's baseline (`= 1`), the yardstick or peer",
        "  measured beside it. For times, below 1 is faster than the baseline; for `/s`, above 1 is more.",
        "",
    ]
    for name, title, meaning in _members():
        rows = [r for r in records if r.member == name]
        out += [f"## {title}", ""]
        if not rows:
            out += ["Not measured in this results file (`python -m bench --only " + name + "`).", ""]
            continue
        out += [meaning, "", f"Measured: {_machine_line(rows)}.", ""]
        out += ["| group | figure | median | p99 | unit | n | ratio |", "|---|---|---:|---:|---|---:|---:|"]
        order: dict[str, int] = {}
        for r in rows:
            order.setdefault(r.group, len(order))
        last = None
        for r in sorted(rows, key=lambda r: order[r.group]):
            group = r.group if r.group != last else ""
            last = r.group
            figure = r.name + (f" ({r.peer})" if r.peer and r.peer not in r.name else "")
            if r.median is None:
                out.append(f"| {group} | {figure} | {r.note or 'n/a'} | | {r.unit} | 0 | |")
            else:
                out.append(f"| {group} | {figure} | {fmt(r.median)} | {fmt(r.p99)} | {r.unit} | {r.samples} | "
                           f"{_ratio_text(r, rows)} |")  # fmt: skip
        out.append("")
        for curve, image in images.items():
            if any(r.curve == curve for r in rows):
                out += [f"![{CURVES[curve][0]}](images/{image})", ""]
    return "\n".join(out).rstrip() + "\n"


def plotted(records: Sequence[Record]) -> dict[str, str]:
    """The curves that have points in ``records``, and their image file names."""
    return {
        curve: f"bench-{curve}.png"
        for curve in CURVES
        if any(r.curve == curve and r.x is not None and r.median is not None for r in records)
    }


def render(records: Sequence[Record], doc: Path = DOC, images: Path = IMAGES) -> None:
    """Write the plots and the page from ``records``."""
    drawn = plotted(records)
    for curve, name in drawn.items():
        plot(records, curve, images / name)
    doc.write_text(markdown(records, drawn))
    print(f"wrote {doc} and {len(drawn)} plots in {images}")
