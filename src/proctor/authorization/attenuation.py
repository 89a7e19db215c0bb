"""The attenuation blocks proctor accepts, checked before any Datalog runs.

Whoever holds a warrant can append blocks to it offline, so everything after the
authority block is hostile input. Biscuit would evaluate whatever Datalog a block
holds, and its time limit is only looked at between rule applications: one block with
200 facts and a three-way join runs for seconds before the limit is noticed. So a
block is read as text first (``Biscuit.block_source``) and accepted only in the shapes
that :func:`~proctor.authorization.warrants.attenuate_warrant` writes:

1. no third-party signature (``block_external_key`` is ``None``);
2. at most :data:`MAX_BLOCK_LINES` lines and :data:`MAX_BLOCK_CHARS` characters;
3. every line one of::

       check if time($t), $t < DATE;
       check if req_resource($r), $r == "TEXT" or inspection(true);
       check if req_args_digest($d), $d == "TEXT" or inspection(true);
       check if req_zone($z), $z == "TEXT" or inspection(true);

   with ``TEXT`` free of ``"``. No facts, no rules, no other checks, no ``trusting``
   scopes. A line of any other shape rejects the whole warrant (reason ``shape``).

Why reading the printed source is sound: biscuit-python prints each fact, rule and
check of a block as its own statement, and prints strings without escaping. A string
can therefore contain a line break or quotes, but every quote in a matching line must
be one of the two delimiters, so the text between ``check if`` and the string, and
after it, is exactly the fixed shape: no predicate, join or expression can hide there.
A string that spells extra lines only adds lines that are checked in turn. The bounds
read from the lines (:class:`AttenuationBounds`) may thus include conditions that are
not real, but never miss a real one: the earliest expiry read is at or before the real
earliest expiry, which is the safe direction for everything that uses it.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from biscuit_auth import Biscuit

from proctor.errors import WarrantError

__all__ = ["MAX_BLOCK_CHARS", "MAX_BLOCK_LINES", "AttenuationBounds", "attenuation_bounds"]

MAX_BLOCK_LINES = 8
"""Most lines an attenuation block may print as (``attenuate_warrant`` writes at most 5)."""
MAX_BLOCK_CHARS = 4 * 1024 + 512
"""Longest printed attenuation block (one resource of up to 4096 characters and the rest)."""

_TIME = re.compile(r"check if time\(\$t\), \$t < (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ);")
_EQUALS = re.compile(
    r"check if req_(resource|args_digest|zone)\(\$([rdz])\), \$\2 == \"([^\"]*)\" or inspection\(true\);"
)
_VARIABLE = {"resource": "r", "args_digest": "d", "zone": "z"}


@dataclass(frozen=True)
class AttenuationBounds:
    """What a warrant's appended blocks narrow it to (read by :func:`attenuation_bounds`).

    Attributes:
        expires: the earliest ``time`` bound of any block (unix seconds), or ``None``.
        resources: every resource a block requires (the request must equal each).
        args_digests: every argument digest a block requires.
        zones: every zone a block requires.
        blocks: how many blocks were read.
    """

    expires: int | None = None
    resources: frozenset[str] = frozenset()
    args_digests: frozenset[str] = frozenset()
    zones: frozenset[str] = frozenset()
    blocks: int = 0


def _shape_error(index: int, detail: str) -> WarrantError:
    return WarrantError(
        f"attenuation block {index}: {detail}; expected only the checks proctor's attenuation writes "
        "(time, req_resource, req_args_digest, req_zone)",
        reason="shape",
    )


def attenuation_bounds(biscuit: Biscuit) -> AttenuationBounds:
    """Check every appended block's shape (module docstring, steps 1-3) and read its bounds.

    Args:
        biscuit: a token whose signature chain verified
            (:func:`~proctor.authorization.tokens.open_token`).

    Returns:
        The bounds of all appended blocks together.

    Raises:
        WarrantError: (reason ``shape``) a block is not of an accepted shape.
    """
    expires: int | None = None
    values: dict[str, set[str]] = {"resource": set(), "args_digest": set(), "zone": set()}
    count = biscuit.block_count()
    for index in range(1, count):
        # Step 1: a third-party block is signed by another key; proctor writes none.
        if biscuit.block_external_key(index) is not None:
            raise _shape_error(index, "signed by a third party")
        source = biscuit.block_source(index)
        # Step 2: bounded before any line is matched.
        if len(source) > MAX_BLOCK_CHARS:
            raise _shape_error(index, f"{len(source)} characters, more than {MAX_BLOCK_CHARS}")
        lines = source.rstrip("\n").split("\n") if source.strip() else []
        if not lines:
            raise _shape_error(index, "no checks")
        if len(lines) > MAX_BLOCK_LINES:
            raise _shape_error(index, f"{len(lines)} statements, more than {MAX_BLOCK_LINES}")
        # Step 3: each line is one of the accepted checks.
        for line in lines:
            if (m := _TIME.fullmatch(line)) is not None:
                when = int(dt.datetime.fromisoformat(m.group(1)).timestamp())
                expires = when if expires is None else min(expires, when)
            elif (m := _EQUALS.fullmatch(line)) is not None and _VARIABLE[m.group(1)] == m.group(2):
                values[m.group(1)].add(m.group(3))
            else:
                raise _shape_error(index, f"a statement of another shape ({line[:80]!r})")
    return AttenuationBounds(
        expires=expires,
        resources=frozenset(values["resource"]),
        args_digests=frozenset(values["args_digest"]),
        zones=frozenset(values["zone"]),
        blocks=count - 1,
    )
