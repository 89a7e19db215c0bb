"""Witness policies (c2sp.org/tlog-policy): which logs, which witnesses, what quorum.

Pure: no I/O, no clock. A policy file is lines of::

    log <vkey> [<url>]                          a log (Ed25519 note key, type 0x01)
    witness <name> <vkey> [<url>]               a witness (cosignature/v1 key, type 0x04)
    group <name> <all|any|k> <member>...        k of these witnesses or groups
    quorum <name>                               the witness or group a checkpoint needs

A checkpoint satisfies the policy when it is signed by one of the listed logs (or by the
log key the caller names, when the policy lists none) and cosigned so that the quorum
is met (:meth:`WitnessPolicy.check`). Parsing follows the spec (items separated by
spaces and tabs; blank lines and lines whose first non-blank character is ``#`` are
ignored; names are defined before they are used; each member at most once per group;
``1 <= k <= n``; one quorum line; no two logs or two witnesses with the same public key;
only tab, newline, 0x20-0x7E and 0x80-0xFF) with proctor's fail-closed additions:

- ``quorum none`` is refused: a policy that asks for no witness would let a verifier
  pass ``--witness-policy`` and check nothing (STYLE.md: quorum 0 is an error).
- A witness or group name may not be ``none``; a name and a URL have no spaces.
- At most :data:`MAX_ENTRIES` logs, witnesses and groups each, and
  :data:`MAX_POLICY_BYTES` of text: checking stays bounded.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from proctor.errors import ConfigError, KeyFormatError, VerificationError
from proctor.lineage.checkpoint import Checkpoint
from proctor.lineage.cosignature import Cosignature, CosignerKey, cosignatures_in
from proctor.note import NoteVerifier, open_note

__all__ = [
    "MAX_ENTRIES",
    "MAX_POLICY_BYTES",
    "PolicyWitness",
    "PolicyGroup",
    "WitnessPolicy",
    "QuorumResult",
]

MAX_ENTRIES = 256
MAX_POLICY_BYTES = 256 << 10
_BAD_OCTETS = re.compile(rb"[\x00-\x08\x0b-\x1f\x7f]")
_THRESHOLD = re.compile(r"[1-9][0-9]{0,3}")


@dataclass(frozen=True)
class PolicyWitness:
    """A ``witness`` line: its policy name, key and (optional) submission URL."""

    name: str
    key: CosignerKey
    url: str = ""


@dataclass(frozen=True)
class PolicyGroup:
    """A ``group`` line: at least ``threshold`` of ``members`` (witness or group names)."""

    name: str
    threshold: int
    members: tuple[str, ...]


@dataclass(frozen=True)
class QuorumResult:
    """What :meth:`WitnessPolicy.check` found on one checkpoint note.

    Attributes:
        checkpoint: the checkpoint, signed by a log of the policy.
        log_key: the verifier key of the log that signed it.
        cosigned: each policy witness (by policy name) that validly cosigned, and its
            cosignature.
        satisfied: whether the quorum is met.
        detail: one sentence: which quorum, and who cosigned.
    """

    checkpoint: Checkpoint
    log_key: str
    cosigned: Mapping[str, Cosignature]
    satisfied: bool
    detail: str

    def to_json(self) -> dict[str, object]:
        """``{"satisfied", "size", "log_key", "witnesses": {name: time}, "detail"}``."""
        return {
            "satisfied": self.satisfied,
            "size": self.checkpoint.size,
            "log_key": self.log_key,
            "witnesses": {name: c.timestamp for name, c in sorted(self.cosigned.items())},
            "detail": self.detail,
        }


@dataclass(frozen=True)
class WitnessPolicy:
    """A parsed witness policy. Make one with :meth:`from_text`.

    Attributes:
        logs: the logs whose checkpoints the policy accepts (may be empty).
        log_urls: each log key string's URL ("" if none).
        witnesses: the witnesses by name.
        groups: the groups by name.
        quorum: the name of the witness or group a checkpoint needs.
    """

    logs: tuple[NoteVerifier, ...]
    witnesses: Mapping[str, PolicyWitness]
    groups: Mapping[str, PolicyGroup]
    quorum: str
    log_urls: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_text(cls, text: str | bytes) -> WitnessPolicy:
        """Parse a policy file (c2sp.org/tlog-policy, "Policy file syntax and structure").

        Raises:
            ConfigError: a line is malformed, a name is used before it is defined or
                defined twice, a threshold is out of range, a key repeats, there is no
                quorum line or more than one, or the quorum is ``none``.
        """
        raw = text.encode() if isinstance(text, str) else bytes(text)
        if len(raw) > MAX_POLICY_BYTES:
            raise ConfigError(f"witness policy: expected at most {MAX_POLICY_BYTES} bytes, found {len(raw)}")
        bad = _BAD_OCTETS.search(raw)
        if bad is not None:
            at = raw.count(b"\n", 0, bad.start()) + 1
            raise ConfigError(
                f"witness policy line {at}: expected only tab, newline and printable characters, "
                f"found byte 0x{bad.group()[0]:02x}"
            )
        builder = _Builder()
        for number, line in enumerate(raw.decode("utf-8", errors="surrogateescape").split("\n"), 1):
            items = line.replace("\t", " ").split()
            if not items or items[0].startswith("#"):
                continue
            try:
                builder.add(items[0], items[1:])
            except ConfigError as e:
                raise ConfigError(
                    f"witness policy line {number}: expected {e}, found {line.strip()!r}"
                ) from None
        if builder.quorum is None:
            raise ConfigError("witness policy: expected a 'quorum <name>' line, found none")
        return cls(tuple(builder.logs), builder.witnesses, builder.groups, builder.quorum, builder.log_urls)

    def cosigner_keys(self) -> list[CosignerKey]:
        """Every witness's key."""
        return [w.key for w in self.witnesses.values()]

    def _met(self, name: str, cosigned: Mapping[str, Cosignature]) -> bool:
        # Groups only name earlier definitions, so this recursion ends (no cycles).
        group = self.groups.get(name)
        if group is None:
            return name in cosigned
        return sum(self._met(m, cosigned) for m in group.members) >= group.threshold

    def check(self, note: str | bytes, *, log: NoteVerifier | None = None) -> QuorumResult:
        """Check a checkpoint note against the policy; a quorum not met is a result.

        Steps (c2sp.org/tlog-policy, "What is a policy?"):
          1. The logs: the policy's, or ``log`` when the policy lists none; when both are
             there, ``log`` must be one of the policy's.
          2. The note carries a valid signature by one of those logs (c2sp.org/signed-note),
             and its body is a checkpoint of that log's origin (c2sp.org/tlog-checkpoint).
          3. Every cosignature line by a policy witness verifies
             (c2sp.org/tlog-cosignature); lines by other keys are ignored.
          4. The quorum is evaluated over the witnesses that cosigned.

        Raises:
            VerificationError: the log is not the policy's, or the note is not a
                checkpoint validly signed by it (:class:`NoteError`,
                :class:`CheckpointError`), or a policy witness's cosignature line is
                malformed or invalid (:class:`NoteError`).
        """
        # Step 1
        if self.logs and log is not None:
            if not any(log.to_string() == known.to_string() for known in self.logs):
                raise VerificationError(
                    f"the log key {log.to_string()} is not one of the witness policy's logs "
                    f"({', '.join(k.to_string() for k in self.logs)})"
                )
            logs = [log]
        elif self.logs:
            logs = list(self.logs)
        elif log is not None:
            logs = [log]
        else:
            raise VerificationError("the witness policy lists no log and no log key was given")
        # Step 2
        opened = open_note(note, logs)
        signer = next(
            v for v in logs if any(s.key_id == v.key_id and s.name == v.name for s in opened.verified)
        )
        checkpoint = Checkpoint.from_text(opened.text)
        if checkpoint.origin != signer.name:
            raise VerificationError(
                f"expected a checkpoint of log {signer.name!r}, found origin {checkpoint.origin!r}"
            )
        # Step 3
        found = cosignatures_in(opened.text, opened.unverified, self.cosigner_keys())
        by_key = {w.key: w.name for w in self.witnesses.values()}
        cosigned = {by_key[key]: c for key, c in found.items()}
        # Step 4
        satisfied = self._met(self.quorum, cosigned)
        names = ", ".join(sorted(cosigned)) or "no witness of the policy"
        what = "met" if satisfied else "not met"
        detail = f"quorum {self.quorum!r} {what} at size {checkpoint.size}: cosigned by {names}"
        return QuorumResult(checkpoint, signer.to_string(), cosigned, satisfied, detail)

    def verify(self, note: str | bytes, *, log: NoteVerifier | None = None) -> QuorumResult:
        """Like :meth:`check`, but a quorum not met raises too.

        Raises:
            VerificationError: as :meth:`check`, or the quorum is not met.
        """
        result = self.check(note, log=log)
        if not result.satisfied:
            raise VerificationError(result.detail)
        return result


class _Builder:
    """The definitions read so far; :meth:`add` raises :class:`ConfigError` saying what
    the line should have been (the caller adds where)."""

    def __init__(self) -> None:
        self.logs: list[NoteVerifier] = []
        self.log_urls: dict[str, str] = {}
        self.witnesses: dict[str, PolicyWitness] = {}
        self.groups: dict[str, PolicyGroup] = {}
        self.quorum: str | None = None

    def _new_name(self, name: str, what: str) -> None:
        if name == "none" or name in self.witnesses or name in self.groups:
            raise ConfigError(f"a new {what} name (not 'none', not defined before), {name!r}")

    def add(self, keyword: str, args: list[str]) -> None:
        if keyword == "log":
            self._log(args)
        elif keyword == "witness":
            self._witness(args)
        elif keyword == "group":
            self._group(args)
        elif keyword == "quorum":
            self._quorum(args)
        else:
            raise ConfigError("a line starting with log, witness, group, quorum or #")
        if max(len(self.logs), len(self.witnesses), len(self.groups)) > MAX_ENTRIES:
            raise ConfigError(f"at most {MAX_ENTRIES} logs, witnesses and groups each")

    def _log(self, args: list[str]) -> None:
        if len(args) not in (1, 2):
            raise ConfigError("'log <vkey> [<url>]'")
        try:
            log = NoteVerifier.from_string(args[0])
        except KeyFormatError as e:
            raise ConfigError(f"a log verifier key (Ed25519, type 0x01): {e}") from e
        if any(known.public_key == log.public_key for known in self.logs):
            raise ConfigError("each log's key once")
        self.logs.append(log)
        self.log_urls[log.to_string()] = args[1] if len(args) == 2 else ""

    def _witness(self, args: list[str]) -> None:
        if len(args) not in (2, 3):
            raise ConfigError("'witness <name> <vkey> [<url>]'")
        self._new_name(args[0], "witness")
        try:
            key = CosignerKey.from_string(args[1])
        except KeyFormatError as e:
            raise ConfigError(f"a witness verifier key (cosignature/v1, type 0x04): {e}") from e
        if any(w.key.public_key == key.public_key for w in self.witnesses.values()):
            raise ConfigError("each witness's key once (the cosignature does not sign the name)")
        self.witnesses[args[0]] = PolicyWitness(args[0], key, args[2] if len(args) == 3 else "")

    def _group(self, args: list[str]) -> None:
        if len(args) < 3:
            raise ConfigError("'group <name> <all|any|k> <member>...' with at least one member")
        name, kind, members = args[0], args[1], tuple(args[2:])
        self._new_name(name, "group")
        for member in members:
            if member not in self.witnesses and member not in self.groups:
                raise ConfigError(f"members defined on earlier lines; {member!r} is not")
        if len(set(members)) != len(members):
            raise ConfigError("each member once")
        if kind == "all":
            threshold = len(members)
        elif kind == "any":
            threshold = 1
        elif _THRESHOLD.fullmatch(kind) and int(kind) <= len(members):
            threshold = int(kind)
        else:
            raise ConfigError(f"a threshold 'all', 'any' or k in 1..{len(members)}, not {kind!r}")
        self.groups[name] = PolicyGroup(name, threshold, members)

    def _quorum(self, args: list[str]) -> None:
        if len(args) != 1:
            raise ConfigError("'quorum <name>'")
        if self.quorum is not None:
            raise ConfigError("one quorum line; this is the second")
        if args[0] == "none":
            raise ConfigError(
                "a witness or group: 'quorum none' asks for no cosignature, and a witness policy "
                "that checks nothing is refused"
            )
        if args[0] not in self.witnesses and args[0] not in self.groups:
            raise ConfigError(f"a witness or group defined on an earlier line; {args[0]!r} is not")
        self.quorum = args[0]
