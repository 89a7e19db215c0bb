"""Fuzz the MCP gateway's message parsing (``proctor.integrations.mcp.wire``): a byte
stream split into lines under a size limit (``LineFramer``), each line read as a
JSON-RPC message (``parse_message``), and the tool lists the gateway measures
(``definition_digests``).

Nothing may raise: a refusal is a ``Malformed`` value, never an exception. Oracles:

- the lines and refusals do not depend on how the stream was cut into reads (an
  oversized line's request id aside: best effort, read from what had arrived);
- no line handed on is longer than the limit, or empty;
- a refusal's request id is a string or an integer (it is echoed back as the id of an
  error answer);
- a message handed on is a JSON object whose ``id``, if it has one, is a string or an
  integer (MCP's ``RequestId``): the gateway keys its calls in flight by it.
"""

from __future__ import annotations

import orjson

from fuzz.fuzz_support import check, lines_mutator
from proctor.integrations.mcp.governance import definition_digests
from proctor.integrations.mcp.wire import LineFramer, Malformed, parse_message

__all__ = ["INSTRUMENT", "LIMIT", "mutate", "one_input"]

INSTRUMENT = ("proctor.integrations.mcp.wire", "proctor.integrations.mcp.governance")
"""The modules atheris instruments for coverage (run_harness.py reads this line)."""

LIMIT = 1024
mutate = lines_mutator(share=0.5)


def _frame(data: bytes, cuts: list[int]) -> list[bytes | Malformed]:
    framer = LineFramer(LIMIT)
    out: list[bytes | Malformed] = []
    start = 0
    for cut in [*cuts, len(data)]:
        out.extend(framer.feed(data[start:cut]))
        start = cut
    return out


def _shape(items: list[bytes | Malformed]) -> list[bytes | str]:
    # An oversized line's id hint is read from whichever bytes had arrived when it
    # overflowed (best effort, rule 1): compared without it.
    return [item.reason if isinstance(item, Malformed) else item for item in items]


def _id_ok(value: object) -> bool:
    return type(value) in (str, int)


def one_input(data: bytes) -> None:
    """One input: a stream from an agent or an upstream server."""
    whole = _frame(data, [])
    step = 1 + (data[0] % 97 if data else 0)
    lines = _shape(whole)
    check(
        _shape(_frame(data, list(range(step, len(data), step)))) == lines,
        "the lines depend on how reads were cut",
    )
    if len(data) <= 2 * LIMIT:
        check(
            _shape(_frame(data, list(range(len(data))))) == lines,
            "the lines depend on how reads were cut (bytewise)",
        )
    for item in whole:
        if isinstance(item, Malformed):
            check(item.id_hint is None or _id_ok(item.id_hint), f"a refusal's id is {item.id_hint!r}")
            continue
        check(0 < len(item) <= LIMIT and b"\n" not in item, f"a line of {len(item)} bytes was handed on")
        message = parse_message(item)
        if isinstance(message, Malformed):
            check(
                message.id_hint is None or _id_ok(message.id_hint), f"a refusal's id is {message.id_hint!r}"
            )
            continue
        check(type(message) is dict, "a message that is not an object was handed on")
        check(
            "id" not in message or _id_ok(message["id"]),
            f"a message with id {message.get('id')!r} was handed on",
        )
        check(orjson.loads(item) == message, "a message handed on is not the line's JSON")
        result = message.get("result")
        tools = result.get("tools") if isinstance(result, dict) else None
        if isinstance(tools, list):
            digests = definition_digests(tools)
            names = [t.get("name") for t in tools if isinstance(t, dict)]
            check(all(name in names for name in digests), "a digest of no tool")
