"""Parts of receipt verification (:mod:`proctor.receipts.check`): the events of a
receipt and their roles and links (step 5), the Statement they imply (step 7), and the
strict readers of the receipt's fields. Private; the steps themselves are numbered in
``check.py``."""

from __future__ import annotations

import base64
import binascii
import hmac
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from proctor.errors import IntegrityError, ProctorError
from proctor.lineage.checkpoint import Checkpoint
from proctor.lineage.events import Event
from proctor.verification.measurement import measured_resource

__all__ = [
    "DIGEST",
    "MAX_INDEX",
    "ROLES",
    "TERMINAL",
    "Entry",
    "Execution",
    "StepError",
    "b64decode",
    "bounded_list",
    "bounded_str",
    "describe",
    "link_roles",
    "measured_subject",
    "note_signatures_canonical",
    "outputs",
    "read_index",
    "seconds",
    "sha256_hex",
    "subjects_and_predicate",
]

DIGEST = re.compile(r"sha256:([0-9a-f]{64})")
TERMINAL = ("execution.terminated", "execution.completed")
ROLES = frozenset(
    {"key.declared", "policy.activated", "decision", "warrant.issued", "execution.started"}
    | {"execution.verified", *TERMINAL}
)
MAX_INDEX = 2**53 - 1


class StepError(Exception):
    """One verification step failed; the message says what was expected and found."""


@dataclass(frozen=True)
class Entry:
    """One proven event of the receipt."""

    index: int
    event: Event
    hash: bytes

    @property
    def kind(self) -> str:
        return self.event.type

    @property
    def where(self) -> str:
        return f"{self.event.type} at index {self.index}"

    def field(self, name: str, kind: type[Any]) -> Any:
        value = self.event.data.get(name)
        if type(value) is not kind:
            raise StepError(f"{self.where}: expected {name} to be a {kind.__name__}, found {value!r:.80}")
        return value

    def follow(self, by_index: Mapping[int, Entry], expected: str) -> Entry:
        # Authorization ancestry (docs/architecture.md, "Lineage events"): a parent link
        # names an earlier event by index *and* RFC 9162 leaf hash.
        link = self.event.parent
        if link is None:
            raise StepError(f"{self.where}: expected a parent link to a {expected} event")
        target = by_index.get(link.index)
        if target is None:
            raise StepError(f"{self.where}: its parent, index {link.index}, is not in the receipt")
        if not hmac.compare_digest(link.leaf_hash, target.hash) or target.index >= self.index:
            raise StepError(f"{self.where}: its parent link does not match the event at {link.index}")
        if target.kind != expected:
            raise StepError(f"{self.where}: expected its parent to be {expected}, found {target.kind}")
        return target


@dataclass(frozen=True)
class Execution:
    """The roles of the events, as step 5 found them."""

    execution: str
    key: Entry
    started: Entry
    terminal: Entry
    issued: Mapping[str, Entry]
    decision: Entry


def sha256_hex(value: Any, where: str) -> str:
    match = DIGEST.fullmatch(value) if type(value) is str else None
    if match is None:
        raise StepError(f"{where}: expected sha256:<64 lowercase hex>, found {value!r:.80}")
    return match.group(1)


def seconds(entry: Entry) -> int:
    # events.py fixed the RFC 3339 UTC shape; whole seconds, as warrants count them.
    text = str(entry.event.data["time"])
    return int(datetime.fromisoformat(text[:19]).replace(tzinfo=UTC).timestamp())


def outputs(terminal: Entry) -> list[tuple[str, str]]:
    # The output digests a terminal event carries; absent or "" means not captured
    # (then the output is no subject), anything else must be a SHA-256 digest.
    found = []
    for name in ("stdout", "stderr"):
        value = terminal.event.data.get(f"{name}_digest", "")
        if value != "":
            found.append((name, sha256_hex(value, f"{terminal.where}: {name}_digest")))
    return found


def measured_subject(measurement: dict[str, Any]) -> tuple[str, str]:
    """What ran, as the Statement's first subject: the executable (its path and digest),
    or for a tool call the tool (``server/tool`` and its definition digest)."""
    if "tool" in measurement:
        try:
            tool = measured_resource(measurement)
        except IntegrityError as e:
            raise StepError(f"execution.started: {e}") from e
        return tool.path, sha256_hex(tool.digest, "execution.started measurement.tool.definition_digest")
    if type(measurement.get("executable")) is not str or not measurement["executable"]:
        raise StepError("execution.started: expected measurement.executable, a path")
    digest = sha256_hex(
        measurement.get("executable_digest"), "execution.started measurement.executable_digest"
    )
    return str(measurement["executable"]), digest


def link_roles(entries: Sequence[Entry], activated_index: int | None) -> Execution:
    """Step 5: give every event its role and check every parent link."""
    by_index = {e.index: e for e in entries}
    by_type: dict[str, list[Entry]] = {}
    for e in entries:
        if e.kind not in ROLES:
            raise StepError(f"{e.where} has no role in an execution receipt")
        by_type.setdefault(e.kind, []).append(e)

    def only(kind: str) -> Entry:
        found = by_type.get(kind, [])
        if len(found) != 1:
            raise StepError(f"expected exactly one {kind} event, found {len(found)}")
        return found[0]

    key = only("key.declared")
    if key.field("purpose", str) != "warrant" or key.field("algorithm", str) != "ed25519":
        raise StepError(f"key.declared at index {key.index}: expected an ed25519 key for purpose 'warrant'")
    key.field("public_key", str)
    started = only("execution.started")
    execution = started.field("execution", str)
    if not execution.startswith("ex_"):
        raise StepError(f"execution.started at {started.index}: expected an ex_… id, found {execution!r:.80}")
    terminals = [e for kind in TERMINAL for e in by_type.get(kind, [])]
    if len(terminals) != 1:
        raise StepError(
            f"expected exactly one execution.terminated or execution.completed, found {len(terminals)}"
        )
    terminal = terminals[0]
    # Every later event of the execution names the same id and follows from the start.
    for e in (*by_type.get("execution.verified", []), terminal):
        if e.field("execution", str) != execution:
            raise StepError(f"{e.where} names another execution than {execution}")
        e.follow(by_index, "execution.started")
        if e.index > terminal.index:
            raise StepError(f"{e.where} comes after the end of the execution")
    measured_subject(started.field("measurement", dict))
    if terminal.kind == "execution.completed":
        terminal.field("exit_status", int)
    else:
        terminal.field("reason", str)
    outputs(terminal)
    # Ancestry: start → warrant.issued → decision, for the execution and every ancestor.
    own = started.follow(by_index, "warrant.issued")
    if own.field("warrant", str) != started.field("warrant", str):
        raise StepError("execution.started names another warrant than its parent warrant.issued")
    issued: dict[str, Entry] = {}
    decided: set[int] = set()
    for w in by_type.get("warrant.issued", []):
        wid = w.field("warrant", str)
        d = w.follow(by_index, "decision")
        if wid in issued or d.index in decided:
            raise StepError(f"warrant.issued at index {w.index}: a warrant or decision appears twice")
        if d.field("decision", str) != "allow":
            raise StepError(
                f"decision at index {d.index}: expected allow, found {d.event.data['decision']!r:.40}"
            )
        if d.field("principal", str) != w.field("principal", str):
            raise StepError(f"warrant.issued at index {w.index}: principal differs from its decision's")
        d.field("now", int)
        issued[wid] = w
        decided.add(d.index)
    if decided != {d.index for d in by_type.get("decision", [])}:
        raise StepError("a decision in the receipt issued no warrant of the chain")
    if key.index > min(decided):
        raise StepError(f"the warrant key is declared at {key.index}, after a warrant it signed")
    decision = own.follow(by_index, "decision")
    if started.field("principal", str) != own.field("principal", str):
        raise StepError("execution.started: principal differs from its warrant's")
    if activated_index is None:
        if by_type.get("policy.activated"):
            raise StepError("a policy.activated event without the receipt's policy")
    else:
        activation = only("policy.activated")
        if activation.index != activated_index or activation.index > decision.index:
            raise StepError(
                f"policy.activated is at index {activation.index}; the receipt says {activated_index}, "
                f"and it must precede the decision at {decision.index}"
            )
        if activation.field("bundle", str) != decision.field("bundle", str):
            raise StepError("policy.activated names another bundle than the decision")
    return Execution(execution, key, started, terminal, issued, decision)


def subjects_and_predicate(
    ex: Execution, entries: Sequence[Entry], cp: Checkpoint
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """What the Statement must say, derived from the proven events."""
    started, end = ex.started.event.data, ex.terminal.event.data
    name, hex_digest = measured_subject(started["measurement"])
    subjects = [{"name": name, "digest": {"sha256": hex_digest}}]
    subjects += [{"name": name, "digest": {"sha256": hex_}} for name, hex_ in outputs(ex.terminal)]
    outcome: dict[str, Any]
    if ex.terminal.kind == "execution.completed":
        outcome = {"outcome": "completed", "exit_status": end["exit_status"]}
    else:
        outcome = {"outcome": "terminated", "reason": end["reason"]}
    predicate = {
        "execution": ex.execution,
        "warrant": started["warrant"],
        "principal": started["principal"],
        **outcome,
        "log": {"origin": cp.origin, "checkpoint_size": cp.size, "indices": [e.index for e in entries]},
    }
    return subjects, predicate


def b64decode(text: str, what: str) -> bytes:
    # Canonical standard base64 only: every byte of a receipt must be significant.
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        raise StepError(f"{what}: expected standard base64, found {text[:40]!r}") from e
    if base64.b64encode(raw).decode() != text:
        raise StepError(f"{what}: expected canonical padded base64, found {text[:40]!r}")
    return raw


def note_signatures_canonical(note: str) -> None:
    # open_note accepts any base64 that decodes (as Go's note package does); a receipt
    # also refuses the spellings that differ only in padding bits, so that changing
    # any character of the checkpoint is detected.
    for line in note[note.rfind("\n\n") + 2 : -1].split("\n"):
        b64decode(line.rpartition(" ")[2], "checkpoint signature")


def bounded_list(value: Any, what: str, low: int, high: int) -> list[Any]:
    if type(value) is not list or not low <= len(value) <= high:
        found = f"{len(value)} items" if type(value) is list else type(value).__name__
        raise StepError(f"{what}: expected an array of {low} to {high} items, found {found}")
    return value


def bounded_str(value: Any, what: str, high: int) -> str:
    if type(value) is not str or not 1 <= len(value) <= high:
        found = f"{len(value)} characters" if type(value) is str else type(value).__name__
        raise StepError(f"{what}: expected a string of 1 to {high} characters, found {found}")
    return value


def read_index(value: Any, what: str) -> int:
    if type(value) is not int or not 0 <= value <= MAX_INDEX:
        raise StepError(f"{what}: expected a log index in [0, 2**53), found {value!r:.40}")
    return value


def describe(error: BaseException) -> str:
    if isinstance(error, StepError):
        return str(error)
    reason = getattr(error, "reason", None)
    suffix = f" (reason {reason})" if isinstance(reason, str) else ""
    kind = "" if isinstance(error, ProctorError) else f"{type(error).__name__}: "
    return f"{kind}{error}{suffix}"
