"""Where a policy is written: the Cedar statement a decision names, found in a bundle.

A decision records the names of the policies that determined it (``@id`` annotations,
or Cedar's positional ids ``policy0``, ``policy1``, … for policies without one). To show
a person the rule behind a decision, :func:`policy_source` finds that statement's text
in the bundle's files, as written, with its file and line.

Statements are split at ``;`` outside string literals and ``//`` comments (Cedar has
no other comments); blank and comment lines before a statement are not part of it.
Positional ids count statements over the files in name order, as
:meth:`~proctor.policy.engine.PolicyEngine.compile` does. Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

__all__ = ["PolicySource", "policy_source", "policy_statements"]

_ID = re.compile(r'@id\s*\(\s*"((?:[^"\\]|\\.)*)"\s*\)')
_EFFECT = re.compile(r"\b(?:permit|forbid)\s*\(")
_POSITIONAL = re.compile(r"policy(\d+)")


@dataclass(frozen=True)
class PolicySource:
    """One Cedar policy statement as written in a bundle.

    Attributes:
        file: the bundle's file name.
        line: the line (from 1) of the statement's first annotation or keyword.
        text: the statement, from its first annotation to its closing ``;``.
    """

    file: str
    line: int
    text: str

    @property
    def policy_id(self) -> str | None:
        """The ``@id`` annotation's value (before the effect, never in a condition), if any."""
        effect = _EFFECT.search(self.text)
        found = _ID.search(self.text, 0, effect.start() if effect else len(self.text))
        return found.group(1) if found else None


def policy_statements(name: str, text: str) -> Iterator[PolicySource]:
    """Each statement of one Cedar file, in order.

    Args:
        name: the file's name in the bundle.
        text: its Cedar text.

    Yields:
        The statements ending in ``;`` (text after the last one is not a statement).
    """
    start = i = 0
    while i < len(text):
        if text[i] == '"':
            i += 1
            while i < len(text) and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
        elif text.startswith("//", i):
            end = text.find("\n", i)
            i = len(text) if end < 0 else end
            continue
        elif text[i] == ";":
            lines = text[start : i + 1].split("\n")
            skip = 0
            while skip < len(lines) - 1 and (
                not lines[skip].strip() or lines[skip].lstrip().startswith("//")
            ):
                skip += 1
            line = text.count("\n", 0, start) + 1 + skip
            yield PolicySource(name, line, "\n".join(lines[skip:]).strip())
            start = i + 1
        i += 1


def policy_source(files: Mapping[str, str], policy_id: str) -> PolicySource | None:
    """The statement of ``policy_id`` in a bundle's files (:attr:`PolicyBundle.files`).

    Args:
        files: file name to Cedar policy text.
        policy_id: a policy name as a decision records it: an ``@id``, or ``policyN``
            for the N-th statement (from 0) when that statement has no ``@id``.

    Returns:
        The statement, or ``None`` when no statement has that id.
    """
    statements = [s for name in sorted(files) for s in policy_statements(name, files[name])]
    for statement in statements:
        if statement.policy_id == policy_id:
            return statement
    positional = _POSITIONAL.fullmatch(policy_id)
    if positional is not None:
        index = int(positional.group(1))
        if index < len(statements) and statements[index].policy_id is None:
            return statements[index]
    return None
