"""Where in a Cedar file a parse error is: ``line:column`` for a message that has none.

``cedarpy`` reports a syntax error as a bare message ("unexpected token `;`"), without
its position. The position is found by parsing prefixes of the text: a prefix that
stops before the offending token fails differently (typically "unexpected end of
input"), and every prefix that contains it fails with the same message as the whole
text. A binary search over prefix lengths finds the shortest one that fails like the
whole text; the error is at its end. The answer is checked (that prefix fails like the
whole, the one a character shorter does not); when the check does not hold — the
parser's messages are not monotone in that text — no position is claimed. Within that
prefix, the position is the last occurrence of the token the message names, if it names
one. A text that ends too soon ("unexpected end of input") has its error at its end.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["locate_parse_error"]

_MAX_PARSES = 40  # enough for any text under a terabyte; a bound all the same


def locate_parse_error(text: str, message: str, parse: Callable[[str], object]) -> tuple[int, int] | None:
    """The 1-based (line, column) of the parse error ``message`` of ``text``.

    Args:
        text: the file's text, which fails to parse with ``message``.
        message: that error message.
        parse: the parser, raising ``ValueError`` with the error as its message.

    Returns:
        The position of the start of the offending token, or ``None`` if it cannot be
        established.
    """

    def fails_like_whole(k: int) -> bool:
        try:
            parse(text[:k])
        except ValueError as e:
            return str(e) == message
        return False

    if "end of input" in message:  # the text stops too soon: after its last token
        end = len(text.rstrip())
        return _position(text, max(end, 1) - 1 if text.strip() else 0)
    low, high = 0, len(text)  # invariant: prefix `high` fails like the whole
    parses = 0
    while low + 1 < high and parses < _MAX_PARSES:
        middle = (low + high) // 2
        parses += 1
        if fails_like_whole(middle):
            high = middle
        else:
            low = middle
    if high == 0 or not fails_like_whole(high) or fails_like_whole(high - 1):
        return None
    token = _named_token(message)
    found = text.rfind(token, 0, high) if token else -1
    return _position(text, found if found >= 0 else high - 1)


def _position(text: str, offset: int) -> tuple[int, int]:
    line = text.count("\n", 0, offset) + 1
    return line, offset - (text.rfind("\n", 0, offset) + 1) + 1


def _named_token(message: str) -> str:
    """The token a message names: quoted in backquotes ("unexpected token `;`" → ``;``),
    or after its last ": " ("… in the policy scope: acton" → ``acton``)."""
    first = message.find("`")
    last = message.find("`", first + 1)
    if 0 <= first < last:
        return message[first + 1 : last]
    _, colon, tail = message.rpartition(": ")
    return tail.strip() if colon and tail.strip() and " " not in tail.strip() else ""
