"""Commitments to a request's arguments: the public log proves *that* a decision was
about certain arguments without showing them.

An argument vector (``--password=…``) or a tool call's arguments can be secret, and
the lineage log is public (``GET /v1/log/entries``). So the ``request`` a ``decision``
event logs carries, instead of ``argv`` and ``arguments``, one commitment::

    args_commitment = "sha256:" + hex(SHA-256(DOMAIN || salt || JCS({"argv", "arguments"})))

with a fresh 16-byte salt per decision that never enters the log (RFC 8785 JCS over
the canonical subset; the domain string separates it from every other hash proctor
computes). The governor keeps the *opening* (salt and arguments) in its private state;
a receipt carries the openings of its decisions, so its holder can prove and replay
what ran. Without the salt, guessing the arguments does not test against the log.

Policy still sees the arguments at decision time: only the logged form is redacted,
and the logged ``request_digest`` is the digest of that redacted form.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from proctor.canonical import canonicalize
from proctor.errors import PolicyError

__all__ = ["DOMAIN", "ArgumentOpening", "redact", "reveal"]

DOMAIN = b"proctor/args-commitment/v1\x00"
_SALT_BYTES = 16
_COMMITMENT = re.compile(r"sha256:[0-9a-f]{64}")


@dataclass(frozen=True)
class ArgumentOpening:
    """What opens one commitment: the salt and the arguments.

    Attributes:
        salt: 16 random bytes.
        argv: the argument vector (``exec``), ``()`` otherwise.
        arguments: the tool arguments, or ``None``.
    """

    salt: bytes
    argv: tuple[str, ...] = ()
    arguments: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        """Validate the salt."""
        if type(self.salt) is not bytes or len(self.salt) != _SALT_BYTES:
            raise PolicyError(f"opening salt: expected {_SALT_BYTES} bytes")

    @classmethod
    def new(cls, argv: Sequence[str], arguments: Mapping[str, Any] | None) -> ArgumentOpening:
        """A fresh opening (random salt) for these arguments."""
        return cls(secrets.token_bytes(_SALT_BYTES), tuple(argv), arguments)

    def commitment(self) -> str:
        """The commitment this opens (``sha256:<hex>``).

        Raises:
            CanonicalizationError: the arguments are outside the canonical JSON subset.
        """
        value = {
            "argv": list(self.argv),
            "arguments": dict(self.arguments) if self.arguments is not None else None,
        }
        return "sha256:" + hashlib.sha256(DOMAIN + self.salt + canonicalize(value)).hexdigest()

    def to_json(self) -> dict[str, Any]:
        """``{"salt": <base64>, "argv": [...], "arguments": {...} | null}``."""
        return {
            "salt": base64.b64encode(self.salt).decode(),
            "argv": list(self.argv),
            "arguments": dict(self.arguments) if self.arguments is not None else None,
        }

    @classmethod
    def from_json(cls, doc: Any) -> ArgumentOpening:
        """Parse :meth:`to_json` output.

        Raises:
            PolicyError: not exactly that shape.
        """
        if type(doc) is not dict or set(doc) != {"salt", "argv", "arguments"}:
            raise PolicyError(f"opening: expected exactly salt, argv and arguments, found {doc!r:.80}")
        salt, argv, arguments = doc["salt"], doc["argv"], doc["arguments"]
        if type(argv) is not list or any(type(a) is not str for a in argv):
            raise PolicyError("opening.argv: expected an array of strings")
        if arguments is not None and type(arguments) is not dict:
            raise PolicyError("opening.arguments: expected an object or null")
        try:
            raw = base64.b64decode(salt, validate=True) if type(salt) is str else b""
        except ValueError as e:
            raise PolicyError(f"opening.salt: expected base64: {e}") from e
        return cls(raw, tuple(argv), arguments)


def redact(request: Mapping[str, Any], opening: ArgumentOpening) -> dict[str, Any]:
    """The loggable form of a request (:meth:`PolicyRequest.to_json`): its arguments
    replaced by their commitment.

    Args:
        request: the full request.
        opening: the opening of its arguments.

    Returns:
        The request with ``argv: []``, ``arguments: null`` and ``args_commitment``.
    """
    return {**request, "argv": [], "arguments": None, "args_commitment": opening.commitment()}


def reveal(redacted: Mapping[str, Any], opening: ArgumentOpening) -> dict[str, Any]:
    """The full request back from its logged form and the opening.

    Steps: 1. the logged form carries a commitment and no arguments; 2. the opening's
    commitment equals it (constant-time); 3. the arguments are put back.

    Raises:
        PolicyError: a step fails (the message says which).
    """
    logged = redacted.get("args_commitment")
    if type(logged) is not str or _COMMITMENT.fullmatch(logged) is None:
        raise PolicyError(f"request.args_commitment: expected sha256:<64 hex>, found {logged!r:.80}")
    if redacted.get("argv") != [] or redacted.get("arguments") is not None:
        raise PolicyError("a redacted request carries its arguments only as a commitment")
    if not hmac.compare_digest(opening.commitment().encode(), logged.encode()):
        raise PolicyError("the opening does not match the logged argument commitment")
    full = {k: v for k, v in redacted.items() if k != "args_commitment"}
    full["argv"] = list(opening.argv)
    full["arguments"] = dict(opening.arguments) if opening.arguments is not None else None
    return full
