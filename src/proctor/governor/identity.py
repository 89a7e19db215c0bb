"""What a principal's zone and attributes may be: checked when it is registered.

Zones and attribute values reach Cedar entities, warrant claims, log events, shell
pipelines of operators and web pages of auditors; a strict grammar keeps every one of
them unambiguous there (no quotes to break out of, no control characters to rewrite a
terminal line, no invisible white space to tell ``prod`` from ``prod ``).

- A zone is ``""`` (none) or 1-64 characters of ``[A-Za-z0-9._-]`` starting with a
  letter or digit: the grammar warrants carry zones in, so every registered zone can
  be bound into a warrant.
- Attribute names are like Cedar identifiers: ``[A-Za-z_][A-Za-z0-9_]*``, at most 64
  characters; ``zone`` is not an attribute (it has its own field). At most
  :data:`MAX_ATTRIBUTES` of them.
- Attribute values are 1 to :data:`MAX_ATTRIBUTE_VALUE` printable characters
  (``str.isprintable``: no control, format, separator other than the ASCII space, or
  unassigned character), with no quote, backquote or backslash and no white space at
  either end.

This module does no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from proctor.authorization.keys import valid_principal_name
from proctor.governor.model import RequestShapeError

__all__ = ["MAX_ATTRIBUTES", "MAX_ATTRIBUTE_VALUE", "verify_attributes", "verify_zone"]

MAX_ATTRIBUTES = 32
MAX_ATTRIBUTE_VALUE = 256

_ATTRIBUTE_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_QUOTES = frozenset("\"'`\\")


def verify_zone(zone: object) -> str:
    """Check a principal's zone: ``""`` (none) or a name like a principal's.

    The grammar is the one warrants carry zones in, so that every registered zone can be
    bound into a warrant.

    Returns:
        ``zone``.

    Raises:
        RequestShapeError: anything else.
    """
    if type(zone) is not str or (zone != "" and not valid_principal_name(zone)):
        raise RequestShapeError(
            f"zone: expected '' or 1-64 characters of [A-Za-z0-9._-] starting with a letter or "
            f"digit, found {zone!r}"
        )
    return zone


def verify_attributes(attrs: object) -> dict[str, str]:
    """Check a principal's attributes: at most :data:`MAX_ATTRIBUTES`, keys like Cedar
    identifiers (``[A-Za-z_][A-Za-z0-9_]*``, at most 64), values of 1 to
    :data:`MAX_ATTRIBUTE_VALUE` printable characters with no quote, backquote,
    backslash or control character and no white space at either end. ``zone`` is not
    an attribute (it has its own field).

    Returns:
        A copy of ``attrs``.

    Raises:
        RequestShapeError: the first rule broken, with what was found.
    """
    if not isinstance(attrs, Mapping):
        raise RequestShapeError(f"attrs: expected an object of strings, found {type(attrs).__name__}")
    if len(attrs) > MAX_ATTRIBUTES:
        raise RequestShapeError(f"attrs: expected at most {MAX_ATTRIBUTES} attributes, found {len(attrs)}")
    clean: dict[str, str] = {}
    for key, value in attrs.items():
        if type(key) is not str or not _ATTRIBUTE_KEY.fullmatch(key):
            raise RequestShapeError(
                f"attrs: expected attribute names of 1-64 characters [A-Za-z0-9_] not starting "
                f"with a digit, found {key!r}"
            )
        if key == "zone":
            raise RequestShapeError(
                "attrs: the zone is set with --zone (the zone field), not as an attribute"
            )
        if type(value) is not str:
            raise RequestShapeError(f"attrs[{key!r}]: expected a string, found {type(value).__name__}")
        problem = _value_problem(value)
        if problem is not None:
            raise RequestShapeError(
                f"attrs[{key!r}]: expected 1-{MAX_ATTRIBUTE_VALUE} printable characters without quotes, "
                f"backslashes, control characters or white space at the ends, found {value!r} ({problem})"
            )
        clean[key] = value
    return clean


def _value_problem(value: str) -> str | None:
    if not 1 <= len(value) <= MAX_ATTRIBUTE_VALUE:
        return f"{len(value)} characters"
    for i, char in enumerate(value):
        if char in _QUOTES or not char.isprintable():
            return f"{char!r} at position {i}"
    if value != value.strip():
        return "white space at an end"
    return None
