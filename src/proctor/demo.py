"""``proctor demo``: the runtime governance demonstration, end to end, without input.

Why one module: the demo is one script read from top to bottom. Its scenes run in
order against one governor and one data directory, each printing the exact command line
it runs; the file reads as the walkthrough it prints, and splitting it would scatter one
story over several files.

It teaches: each scene prints the Cedar policy that decided it (the statement named by
the logged decision, read from the bundle the governor activated), the exact
``proctor`` command line that does the same with this run's server, data directory and
key files (the demo runs exactly those lines), and what happened, in full.

1. A fresh data directory, a principal ``agent`` (role ``dev``), a signed policy bundle;
   ``proctor serve`` on a free loopback port, checked to hold this directory's log key.
2. ``proctor run`` three times, as an agent platform would: an allowed backup (its
   receipt verifies offline), a denied ``rm -rf`` (it never starts: exit 77), and a long
   job revoked while it runs (its whole process tree dies: exit 79). The revocation
   latency is measured at the governor, from the log: the ``revocation`` event's
   ``time`` (the governor accepted the request) to the ``execution.terminated`` event's
   ``time`` (the enforcer reported the tree dead). The end-to-end figure, CLI start-up
   included, is printed beside it, labelled.
3. As an outsider, with nothing but the log's verifier key: a tampered receipt fails
   (naming the step), the log is consistent across the run, a full audit passes.
4. With ``keep`` the governor keeps running (a session of its own, its output in a file)
   and every file stays, and a long job (``sleep 3600``) runs under it, also in a session
   of its own, for a person to revoke from the console and watch die; the demo prints
   the pages' URLs, the job's execution id, how to sign in, what to try next and how to
   stop it all. Without it the governor is stopped, and a temporary directory removed
   if all held.

The governor's web pages (console, proof viewer, lineage explorer, health, API
reference) are printed with its URL as soon as it answers.

A scene that does not go as described (a timeout included) fails the demo: it exits
VERIFY_FAILED and keeps its files.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console

from proctor.authorization.keys import PrincipalKey
from proctor.canonical import canonicalize
from proctor.errors import PolicyError
from proctor.exitcodes import ExitCode
from proctor.governor.service import Governor, initialize
from proctor.lineage.checkpoint import open_checkpoint
from proctor.lineage.log import Log
from proctor.lineage.proofs import ConsistencyProof
from proctor.note import NoteVerifier
from proctor.policy import PolicyBundle
from proctor.policy.bundle import SignedBundle
from proctor.policy.source import policy_source
from proctor.receipts import check_receipt

__all__ = ["LONG_JOB", "PAGES", "run_demo"]

POLICY = """\
// Agents with the dev role may run shell jobs, leased for 3 s at a time, an hour at most.
@id("dev-shell")
@lease_ttl_s("3")
@max_duration_s("3600")
permit (principal, action == Proctor::Action::"exec", resource)
when { principal.role == "dev" && context.argc <= 8 };

// Nobody deletes recursively.
@id("no-recursive-delete")
forbid (principal, action == Proctor::Action::"exec", resource)
when { context.command_line like "rm -r*" };
"""

_TIMEOUT_S = 60.0
#: The governor's web pages (proctor.console), printed with its URL.
PAGES = (
    ("console", "/console"),
    ("proof viewer", "/proofs"),
    ("lineage", "/lineage"),
    ("health", "/health"),
    ("API reference", "/docs"),
)
#: The job ``--keep`` leaves running, for a person to revoke.
LONG_JOB = ("sleep", "3600")
_SCENES = 4
_INDENT = "    "


# -- processes and the log --------------------------------------------------------


def _program() -> list[str]:
    """How a user starts this ``proctor``: the start of every command printed and run."""
    script = Path(sys.executable).parent / "proctor"
    if not (script.is_file() and os.access(script, os.X_OK)):
        return [sys.executable, "-m", "proctor"]
    found = shutil.which("proctor")
    if found is not None and Path(found).resolve() == script.resolve():
        return ["proctor"]
    return [str(script)]


def _run(argv: Sequence[str], timeout: float = _TIMEOUT_S) -> subprocess.CompletedProcess[str] | None:
    """Run a command to its end; ``None`` if it did not end within ``timeout`` (killed)."""
    try:
        return subprocess.run(  # noqa: S603 - our own CLI, with our own arguments
            list(argv), stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return None


def _stop(process: subprocess.Popen[Any]) -> None:
    """SIGTERM, then SIGKILL if it is still there 10 s later; reaped either way."""
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def _answers(url: str, own_key: str, server: subprocess.Popen[bytes]) -> bool:
    """Whether ``server`` came up at ``url`` (within 30 s) holding the log key ``own_key``."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and server.poll() is None:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                # Ours, not another process's on a port taken before ours bound it.
                return httpx.get(f"{url}/v1/log/key", timeout=5).text.strip() == own_key
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _events(root: Path, start: int) -> list[tuple[int, dict[str, Any]]]:
    """The log's entries from ``start`` on, as (index, event); read as any reader does."""
    with Log.open(root) as log:
        return [(i, json.loads(log.leaf(i))) for i in range(start, log.size)]


def _log_size(root: Path) -> int:
    with Log.open(root) as log:
        return log.size


def _find(root: Path, start: int, kind: str, **fields: Any) -> tuple[int, dict[str, Any]] | None:
    """The first event of type ``kind`` with these ``fields`` from index ``start`` on,
    waiting up to 10 s for it to be committed."""
    deadline = time.monotonic() + 10
    while True:
        for index, event in _events(root, start):
            if event.get("type") == kind and all(event.get(k) == v for k, v in fields.items()):
                return index, event
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.05)


def _time_ms(event: Mapping[str, Any]) -> int:
    """An event's ``time`` (RFC 3339, UTC) in Unix milliseconds.

    Raises:
        TypeError: the event has no time string.
        ValueError: the time is not RFC 3339.
    """
    text = event.get("time")
    if not isinstance(text, str):
        raise TypeError(f"expected an RFC 3339 time in the event, found {text!r}")
    return round(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


def _exit(code: int | None) -> str:
    if code is None:
        return f"no exit: still running after {_TIMEOUT_S:.0f} s, killed"
    name = ExitCode(code).name if code in ExitCode.__members__.values() else "unexpected"
    return f"exit {code}, {name}"


def _verdict(path: Path, log_key: str) -> str:
    if not path.exists():
        return "no receipt"
    report = check_receipt(json.loads(path.read_text()), log_key=log_key, replay=True)
    if report.ok:
        return f"verified ({len(report.steps)} steps, the decision replayed)"
    failed = report.failed
    return f"FAILED at step {failed.number if failed else '?'}"


# -- the demo ---------------------------------------------------------------------


class _Demo:
    """One run: its files, its governor, what it printed and whether everything held."""

    def __init__(self, console: Console, base: Path, root: Path, *, keep: bool) -> None:
        self.console = console
        self.base = base
        self.root = root
        self.keep = keep
        self.program = _program()
        self.agent_key = base / "agent.key"
        self.log_pub = root / "keys" / "log.pub"
        self.url = ""
        self.log_key = ""
        self.files: Mapping[str, str] = {}
        self.number = 0
        self.ok = True
        self.revocation_index: int | None = None

    def say(self, text: str, indent: str = "") -> None:
        """Print text as it is: no markup, no wrapping (command lines stay whole)."""
        for line in text.splitlines() or [""]:
            self.console.print(indent + line, markup=False, highlight=False, soft_wrap=True)

    def command(self, *args: str) -> list[str]:
        return [*self.program, *args]

    def setup(self) -> int:
        """Data directory, principal, signed policy; the log size after them."""
        initialize(self.root, origin="demo.proctor.local/log")
        agent = PrincipalKey.generate("agent")
        agent.save(self.agent_key)
        policies = self.base / "policies"
        policies.mkdir()
        (policies / "demo.cedar").write_text(POLICY)
        admin = PrincipalKey.load(self.root / "keys" / "admin.key")
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: PLC0415

        signed = PolicyBundle.from_directory(policies, version=1).signed(
            Ed25519PrivateKey.from_private_bytes(admin.private_bytes()), admin.name
        )
        with Governor(self.root) as gov:
            gov.add_principal("agent", agent.public_key_b64, attrs={"role": "dev"}, zone="", by="admin")
            pushed = gov.push_policy(signed.to_json(), by="admin")
            active = gov.active_policy()
            first_size = gov.log.size
        # The policy printed is the one the governor activated, read back from it.
        bundle = SignedBundle.from_json(active).bundle if active is not None else None
        if bundle is None or bundle.digest != pushed["bundle"]:
            found = bundle.digest if bundle is not None else None
            raise PolicyError(f"expected bundle {pushed['bundle']} active after the push, found {found}")
        self.files = bundle.files
        self.say(
            f"policy {pushed['bundle'][:23]}… active ({policies / 'demo.cedar'}); principal agent (role dev)"
        )
        return first_size

    def start_governor(self) -> subprocess.Popen[bytes] | None:
        """``proctor serve`` on a free port, answering with this data directory's log key."""
        own_key = self.log_pub.read_text().strip()
        with (self.base / "governor.log").open("ab") as output:
            for _attempt in range(3):  # another process may take the free port first
                port = _free_port()
                url = f"http://127.0.0.1:{port}"
                server = subprocess.Popen(  # noqa: S603 - our own CLI, with our own arguments
                    self.command("serve", "--data", str(self.root), "--port", str(port)),
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=output,
                    start_new_session=self.keep,  # kept: outlives this terminal's job
                )
                if _answers(url, own_key, server):
                    self.url, self.log_key = url, own_key
                    self.console.print(f"governor on {url} (pid {server.pid})")
                    for label, path in PAGES:
                        self.say(f"{label + ':':<15}{url}{path}", _INDENT)
                    return server
                _stop(server)
        return None

    def scene(
        self,
        title: str,
        *,
        policy: Sequence[str],
        commands: Sequence[Sequence[str]],
        note: str = "",
        outcome: str,
        happened: Sequence[str],
    ) -> None:
        """Print one scene: policy, command lines, what happened (all of it)."""
        self.number += 1
        self.console.print(f"\n[bold]── {self.number}/{_SCENES} {title} ──[/bold]")
        for line in policy:
            self.say(line)
        self.say(f"command{'s' if len(commands) > 1 else ''}{note}:")
        for argv in commands:
            self.say(shlex.join(argv), _INDENT)
        self.say(f"what happened ({outcome}):")
        for line in happened:
            self.say(line, _INDENT)

    def policy(self, ids: Sequence[str], role: str) -> list[str]:
        """The text of each deciding policy, as written in the active bundle."""
        if not ids:
            return ["policy: none applies, so Cedar denies (default deny)"]
        lines = []
        for policy_id in ids:
            source = policy_source(self.files, policy_id)
            if source is None:
                self.ok = False
                lines.append(f"policy {policy_id!r}: NOT FOUND in the active bundle")
                continue
            lines.append(f"policy ({role}; {source.file}, line {source.line}):")
            lines.extend(_INDENT + line for line in source.text.splitlines())
        return lines

    def decision(self, start: int) -> tuple[list[str], list[str]]:
        """The policies named by the first decision logged from ``start`` on, and a line on it."""
        found = _find(self.root, start, "decision")
        if found is None:
            self.ok = False
            return [], ["NO decision found in the log"]
        index, event = found
        policies = [str(p) for p in event.get("policies", [])]
        return policies, [f"log #{index}: decision {event.get('decision')}: {event.get('reason')}"]

    def allowed(self) -> None:
        start = _log_size(self.root)
        receipt = self.base / "backup.json"
        argv = self.command(
            *self.run_args, "--receipt", str(receipt), "--", "sh", "-c", "echo backup of db1 done"
        )
        done = _run(argv)
        policies, logged = self.decision(start)
        verdict = _verdict(receipt, self.log_key)
        code = done.returncode if done else None
        self.ok &= code == ExitCode.OK and verdict.startswith("verified")
        output = (done.stdout + done.stderr).splitlines() if done else []
        self.scene(
            "backup (allowed)",
            policy=self.policy(policies, "it allowed this"),
            commands=[argv],
            outcome=_exit(code),
            happened=[*output, *logged, f"receipt {receipt.name}, offline with the log key only: {verdict}"],
        )

    def denied(self) -> None:
        start = _log_size(self.root)
        victim = self.base / "precious"
        victim.mkdir()
        argv = self.command(*self.run_args, "--", "rm", "-rf", str(victim))
        done = _run(argv)
        policies, logged = self.decision(start)
        code = done.returncode if done else None
        self.ok &= code == ExitCode.DENIED and victim.exists()
        fate = f"{victim} still exists: rm never ran" if victim.exists() else f"{victim} WAS DELETED"
        self.scene(
            "rm -rf (denied)",
            policy=self.policy(policies, "it forbade this"),
            commands=[argv],
            outcome=_exit(code),
            happened=[*(done.stderr.splitlines() if done else []), *logged, fate],
        )

    @property
    def admin_args(self) -> list[str]:
        """This demo's server and data directory (for the admin key)."""
        return ["--server", self.url, "--data", str(self.root)]

    @property
    def run_args(self) -> list[str]:
        """``run`` with this demo's server and the agent's key."""
        return ["run", "--server", self.url, "--key", str(self.agent_key)]

    def revoked(self) -> None:
        start = _log_size(self.root)
        receipt = self.base / "job.json"
        argv = self.command(
            *self.run_args, "--receipt", str(receipt), "--", "sh", "-c", "sleep 60 & sleep 60; wait"
        )
        job = subprocess.Popen(  # noqa: S603 - our own CLI, with our own arguments
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        first = job.stderr.readline() if job.stderr else ""
        match = re.search(r"execution (ex_[a-z0-9]+) started", first)
        execution = match.group(1) if match else "EXECUTION"
        revoke = self.command("revoke", "--execution", execution, "--reason", "demo", *self.admin_args)
        done = None
        started = time.monotonic()
        if match is not None:
            time.sleep(0.5)
            started = time.monotonic()
            done = _run(revoke)
        try:
            out, err = job.communicate(timeout=_TIMEOUT_S if match else 5)
        except subprocess.TimeoutExpired:
            job.kill()
            out, err = job.communicate()
        elapsed_ms = (time.monotonic() - started) * 1000
        policies, logged = self.decision(start)
        latency = self.latency(start, execution) if match else ["the job did not start: nothing to revoke"]
        code = job.returncode
        verdict = _verdict(receipt, self.log_key)
        self.ok &= bool(match) and done is not None and done.returncode == ExitCode.OK
        self.ok &= code == ExitCode.TERMINATED and verdict.startswith("verified")
        end_to_end = (
            f"end to end, as a user sees it: {elapsed_ms:.0f} ms from launching `proctor revoke` to "
            "`proctor run` exiting (both CLIs' start-up included)"
        )
        self.scene(
            "long job (revoked while it runs)",
            policy=self.policy(policies, "it allowed this; the revocation overrides it"),
            commands=[argv, revoke],
            note=" (the second from another terminal, while the first runs)",
            outcome=_exit(code),
            happened=[
                *(first + err + out).splitlines(),
                *logged,
                f"proctor revoke: {_exit(done.returncode if done else None)}",
                *latency,
                end_to_end,
                f"receipt {receipt.name}, offline with the log key only: {verdict}",
            ],
        )

    def latency(self, start: int, execution: str) -> list[str]:
        """Revocation latency at the governor, from the two events' logged times."""
        target = {"kind": "execution", "id": execution}
        revocation = _find(self.root, start, "revocation", target=target)
        terminated = _find(self.root, start, "execution.terminated", execution=execution)
        if revocation is None or terminated is None:
            self.ok = False
            return ["revocation latency at the governor: the revocation or termination is NOT in the log"]
        (r_index, r_event), (t_index, t_event) = revocation, terminated
        self.revocation_index = r_index
        try:
            ms = _time_ms(t_event) - _time_ms(r_event)
        except (TypeError, ValueError) as e:
            self.ok = False
            return [f"revocation latency at the governor: {e}"]
        self.ok &= t_index > r_index and ms >= 0
        killed = f"{t_event.get('processes_killed')} processes killed ({t_event.get('signal')})"
        return [
            f"log #{r_index}: revocation by {r_event.get('by')} ({r_event.get('reason')!r}); "
            f"log #{t_index}: execution.terminated, {t_event.get('reason')}, {killed}",
            f"revocation latency at the governor: {ms} ms, from log #{r_index} revocation at "
            f"{r_event.get('time')} to log #{t_index} execution.terminated at {t_event.get('time')}",
        ]

    def tampered(self) -> None:
        source = self.base / "backup.json"
        target = self.base / "tampered.json"
        argv = self.command("verify", str(target), "--log-key", str(self.log_pub))
        policy = ["policy: none; a receipt is checked offline, with nothing but the log's verifier key"]
        if not source.exists():  # scene 1 failed: so has the demo
            self.ok = False
            return
        # Rewrite history: the backup's last event says it failed (valid JSON, canonical).
        doc = json.loads(source.read_text())
        event = json.loads(base64.b64decode(doc["events"][-1]["leaf"]))
        was = event.get("exit_status")
        event["exit_status"] = 1 if was == 0 else 0
        doc["events"][-1]["leaf"] = base64.b64encode(canonicalize(event)).decode()
        target.write_text(json.dumps(doc, indent=2))
        done = _run(argv)
        report = check_receipt(doc, log_key=self.log_key)
        failed = report.failed
        verdict = f"rejected at step {failed.number} ({failed.name})" if failed else "ACCEPTED (bad!)"
        code = done.returncode if done else None
        self.ok &= code == ExitCode.VERIFY_FAILED and not report.ok
        self.scene(
            "tampered receipt",
            policy=policy,
            commands=[argv],
            outcome=_exit(code),
            happened=[
                f"{target.name} is {source.name} whose last event ({event.get('type')}) now says "
                f"exit_status {event['exit_status']} instead of {was}",
                f"{verdict}: {failed.detail}" if failed else verdict,
            ],
        )

    def audit(self, first_size: int) -> None:
        """The log's consistency since the start, and a full audit."""
        self.console.print()
        with Log.open(self.root) as log:
            verifier = NoteVerifier.from_string(log.verifier_key())
            now = open_checkpoint(log.checkpoint(), verifier)
            proof = ConsistencyProof.from_json(log.consistency_proof(first_size, now.size))
            proof.verify(log.root(first_size), now.root_hash)
            report = log.check_all()
        self.console.print(
            f"log grew {first_size} → {now.size} entries: consistent (append-only), proof verified"
        )
        self.console.print(f"full audit of the stored log: {'intact' if report.ok else report.error}")
        self.ok &= report.ok

    def long_job(self) -> tuple[int, str] | None:
        """``--keep``: start :data:`LONG_JOB` under the governor, in a session of its own
        (it outlives the demo), output in a file; its pid and execution id once started."""
        output = self.base / "long-job.log"
        argv = self.command(*self.run_args, "--", *LONG_JOB)
        with output.open("ab") as out:
            job = subprocess.Popen(  # noqa: S603 - our own CLI, with our own arguments
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True
            )
        deadline = time.monotonic() + _TIMEOUT_S
        while time.monotonic() < deadline and job.poll() is None:
            match = re.search(r"execution (ex_[a-z0-9]+) started", output.read_text(errors="replace"))
            if match is not None:
                return job.pid, match.group(1)
            time.sleep(0.1)
        self.ok = False
        if job.poll() is None:
            _stop(job)
        self.say(f"the long job did not start ({_exit(job.returncode)}); its output:")
        self.say(output.read_text(errors="replace")[-2000:], _INDENT)
        return None

    def revoke_job(self, job: tuple[int, str]) -> None:
        """How to revoke the long job from the console (and from a terminal)."""
        pid, execution = job
        c, data = self.console, ["--data", str(self.root)]
        c.print(f"\n[bold]a long job runs under the governor: execution {execution}[/bold]")
        where = f"pid {pid}, output in {self.base / 'long-job.log'}"
        self.say(f"{shlex.join(LONG_JOB)} through proctor run ({where})", _INDENT)
        c.print("[bold]revoke it from the console and watch it die[/bold]:")
        self.say(f"1. open {self.url}/console/signin; sign in with the token this prints:", _INDENT)
        self.say(shlex.join(self.command("console", "token", *data)), _INDENT * 2)
        self.say(f"2. in {self.url}/console, revoke execution {execution}: proctor run exits 79", _INDENT)
        self.say(f"3. {self.url}/lineage shows its timeline; {self.url}/health its lease gone", _INDENT)
        self.say("or from a terminal:", _INDENT)
        revoke = ["revoke", "--execution", execution, "--reason", "demo", *self.admin_args]
        self.say(shlex.join(self.command(*revoke)), _INDENT * 2)

    def kept(self, pid: int, *, data_given: bool, job: int | None = None) -> None:
        """What is left running, where, what to try and how to stop it."""
        c, key, log_key = self.console, str(self.agent_key), str(self.log_pub)
        c.print(f"\n[bold]the governor keeps running (--keep), pid {pid}[/bold]")
        for label, value in (
            ("server", f"{self.url}   (API documentation: {self.url}/docs)"),
            ("data dir", str(self.root)),
            ("admin key", str(self.root / "keys" / "admin.key")),
            ("agent key", key),
            ("log key", log_key),
            ("policy", str(self.base / "policies" / "demo.cedar")),
            ("governor output", str(self.base / "governor.log")),
        ):
            self.say(f"{label + ':':<17}{value}", _INDENT)
        hello, data = str(self.base / "hello.json"), ["--data", str(self.root)]
        rm = [*self.run_args, "--", "rm", "-rf", str(self.base / "precious")]
        tries = [
            ("an allowed job, its receipt written", [*self.run_args, "--receipt", hello, "--", "echo", "hi"]),
            ("its receipt, checked with the log key alone", ["verify", hello, "--log-key", log_key]),
            ("forbidden by the policy: exit 77, it never starts", rm),
            ("audit the whole log: every hash and checkpoint", ["log", "verify", *data]),
        ]
        if self.revocation_index is not None:
            entry = ["log", "entry", str(self.revocation_index), *data]
            tries.append(("scene 3's revocation event, as the log holds it", entry))
        c.print("[bold]try next[/bold] (copy and paste):")
        for comment, args in tries:
            self.say(f"# {comment}", _INDENT)
            self.say(shlex.join(self.command(*args)), _INDENT)
        c.print("[bold]stop it[/bold] (and remove its files):")
        if job is not None:
            self.say(f"kill {job}", _INDENT)  # the long job first (revoked: gone already)
        self.say(f"kill {pid}", _INDENT)
        remove = [str(self.base)] if not data_given else [str(self.root), str(self.base)]
        self.say(shlex.join(["rm", "-rf", *remove]), _INDENT)


def run_demo(data: Path | None, *, keep: bool = False) -> ExitCode:
    """Run the demo in ``data`` (a new temporary directory when ``None``).

    Args:
        data: a directory that is not yet initialised, or ``None``.
        keep: leave the governor running and every file in place, and print the
            server URL, the files, commands to try next and how to stop it.

    Returns:
        The process exit code: OK when every check passed, VERIFY_FAILED otherwise.

    Raises:
        ProctorError: the data directory or the policy could not be set up.
    """
    console = Console(highlight=False, width=max(Console().width, 110))
    base = Path(tempfile.mkdtemp(prefix="proctor-demo-"))
    root = data if data is not None else base / "data"
    demo = _Demo(console, base, root, keep=keep)
    demo.say(f"proctor demo — data directory {root}")
    first_size = demo.setup()
    server = demo.start_governor()
    if server is None:
        console.print(f"[red]the governor did not start; its output: {base / 'governor.log'}[/red]")
        demo.say((base / "governor.log").read_text(errors="replace")[-4000:], _INDENT)
        return ExitCode.VERIFY_FAILED
    kept = False
    job: tuple[int, str] | None = None
    try:
        demo.allowed()
        demo.denied()
        demo.revoked()
        demo.tampered()
        if keep:
            demo.audit(first_size)  # the log as the running governor has it
            job = demo.long_job()
            kept = True
    finally:
        if not kept:  # an error on the way stops it even with keep: nothing is left unannounced
            _stop(server)
    if not kept:
        demo.audit(first_size)  # the log as the stopped governor left it
    else:
        if job is not None:
            demo.revoke_job(job)
        demo.kept(server.pid, data_given=data is not None, job=job[0] if job is not None else None)
    ok = demo.ok
    console.print("[bold green]demo: OK[/bold green]" if ok else "[bold red]demo: FAILED[/bold red]")
    if data is None and ok and not kept:
        shutil.rmtree(base, ignore_errors=True)
    elif not kept:
        console.print(f"files kept in {base}")
    return ExitCode.OK if ok else ExitCode.VERIFY_FAILED
