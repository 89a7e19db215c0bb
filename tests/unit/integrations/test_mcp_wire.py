"""MCP framing (proctor.integrations.mcp.wire): rule 1 (a line longer than the limit is
discarded, never buffered whole, and reported once with the id found at its start or
end), rule 2 (anything but a JSON-RPC 2.0 object is Malformed)."""

from __future__ import annotations

import orjson
import pytest

from proctor.integrations.mcp.wire import LineFramer, Malformed, parse_message


def test_lines_split_across_chunks_are_joined() -> None:
    framer = LineFramer(1024)
    assert framer.feed(b'{"a":') == []
    assert framer.feed(b'1}\n{"b":2}\n{"c"') == [b'{"a":1}', b'{"b":2}']
    assert framer.feed(b":3}\n") == [b'{"c":3}']


@pytest.mark.parametrize(
    ("line", "hint"),
    [
        (b'{"jsonrpc":"2.0","id":7,"result":{"text":"' + b"x" * 5000 + b'"}}', 7),
        (b'{"result":{"text":"' + b"x" * 5000 + b'"},"jsonrpc":"2.0","id":"r-9"}', "r-9"),
        (b'{"result":{"text":"' + b"x" * 5000 + b'"}}', None),
    ],
    ids=["id-first", "id-last", "no-id"],
)
def test_oversized_line_is_reported_once_with_its_id(line: bytes, hint: object) -> None:
    framer = LineFramer(1024)
    out: list[object] = []
    for i in range(0, len(line), 700):
        out += framer.feed(line[i : i + 700])
    out += framer.feed(b'\n{"next":1}\n')
    assert out == [Malformed("a message longer than 1024 bytes", hint), b'{"next":1}']  # type: ignore[arg-type]


def test_framer_never_holds_more_than_the_limit() -> None:
    framer = LineFramer(2048)
    for _ in range(1000):
        framer.feed(b"y" * 4096)
    assert len(framer._buffer) <= 2048


@pytest.mark.parametrize(
    "line",
    [b'{"jsonrpc":"2.0","id":1,"result":', b"[1,2]", b'{"jsonrpc":"1.0","id":1,"method":"x"}', b'"text"'],
    ids=["truncated", "batch", "wrong-version", "not-object"],
)
def test_not_a_jsonrpc_message_is_malformed(line: bytes) -> None:
    assert isinstance(parse_message(line), Malformed)


def test_a_request_parses_as_sent() -> None:
    message = {
        "jsonrpc": "2.0",
        "id": 3,
        "method": "tools/call",
        "params": {"name": "t", "arguments": {"x": 0.5}},
    }
    assert parse_message(orjson.dumps(message)) == message


def test_limit_below_1024_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1024"):
        LineFramer(10)
