"""``proctor gateway mcp schema``: a policy bundle's tool catalog from an MCP server's live tools.

The command connects to the upstream MCP server (a child process over stdio, or
streamable HTTP), lists its tools (every page) and writes a tool catalog fragment
(:mod:`proctor.policy.tool_catalog`, ADR 0018) to put in a policy bundle directory as
``NAME.tools.json``: each tool's name, the digest of its definition (the same digest
the gateway binds into each call's warrant) and its input schema, with the Cedar type
of its arguments for people to read. Pushed with the bundle, it makes the governor
validate every policy against the tools that exist and the arguments they take.

Also here, for the gateway: :func:`visible_tools`, which asks the governor which of
a server's tools a principal could ever call (``POST /v1/authorize/visible``), so
``tools/list`` can hide the others.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

import orjson
from pydantic import BaseModel, ConfigDict

from proctor.errors import GovernorError, ProctorError
from proctor.exitcodes import ExitCode
from proctor.policy.tool_catalog import CATALOG_FORMAT, ToolCatalog
from proctor.policy.tool_types import from_json_schema
from proctor.verification import tool_definition_digest

__all__ = [
    "VISIBLE_ROUTE",
    "tool_definition",
    "definition_digest",
    "catalog_fragment",
    "list_upstream_tools",
    "schema_command",
    "visible_body",
    "read_visible",
    "visible_tools",
]

VISIBLE_ROUTE = "/v1/authorize/visible"
"""The governor's route answering which tools a principal could ever call."""

_DEFINITION_FIELDS_ALWAYS = ("name", "description", "inputSchema")


class _RawTools(BaseModel):
    """A ``tools/list`` result, each tool kept as the JSON object the server sent."""

    model_config = ConfigDict(extra="allow")
    tools: list[dict[str, Any]]
    nextCursor: str | None = None  # noqa: N815 -- the wire's name


def tool_definition(tool: Mapping[str, Any]) -> dict[str, Any]:
    """The object a tool's definition digest is taken over.

    ``name``, ``description`` (``""`` when absent) and ``inputSchema``, and every other
    field of the MCP ``Tool`` that is present (``title``, ``annotations``,
    ``outputSchema`` …): any change to what the server says about the tool changes it.

    Args:
        tool: the tool as listed (``Tool.model_dump(by_alias=True, exclude_none=True)``).

    Returns:
        The definition object.
    """
    definition = {k: v for k, v in tool.items() if v is not None}
    definition["description"] = definition.get("description") or ""
    return definition


def definition_digest(tool: Mapping[str, Any]) -> str:
    """``sha256:`` and the hex SHA-256 of the RFC 8785 JSON of :func:`tool_definition`:
    :func:`proctor.verification.tool_definition_digest`, the digest the gateway binds.

    Raises:
        IntegrityError: no name or input schema, or values outside canonical JSON.
    """
    return tool_definition_digest(tool)


def catalog_fragment(server: str, tools: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The tool catalog fragment of one server.

    Args:
        server: the server's name, as in the gateway's ``--name`` and the resources
            ``server/tool``.
        tools: its tools, as listed.

    Returns:
        The fragment (``proctor``, ``server``, ``tools``, ``cedar``), checked by
        parsing it as the governor will.

    Raises:
        PolicyValidationError: the result would be refused (a tool without an
            object input schema, a tool listed twice, a bad server name).
    """
    entries = []
    cedar: dict[str, Any] = {}
    for tool in sorted(tools, key=lambda t: str(t.get("name"))):
        schema = tool.get("inputSchema")
        entries.append(
            {"name": tool.get("name"), "definition_digest": definition_digest(tool), "inputSchema": schema}
        )
        cedar[str(tool.get("name"))] = from_json_schema(schema).cedar()
    fragment = {"proctor": CATALOG_FORMAT, "server": server, "tools": entries, "cedar": cedar}
    ToolCatalog.from_fragments({f"{server}.tools.json": orjson.dumps(fragment).decode()})
    return fragment


async def list_upstream_tools(
    *, command: Sequence[str] = (), url: str | None = None, timeout: float = 30.0
) -> list[dict[str, Any]]:
    """Every tool an MCP server lists (all pages), as JSON objects.

    Args:
        command: the server's command line (stdio), or
        url: its streamable HTTP endpoint.
        timeout: seconds for connecting and listing.

    Returns:
        ``Tool.model_dump(by_alias=True, exclude_none=True)`` of each tool.

    Raises:
        ProctorError: neither or both of command and url, or the server could not be
            reached or listed.
    """
    import anyio  # noqa: PLC0415 -- the MCP SDK loads only for this command
    from mcp.client.session import ClientSession  # noqa: PLC0415
    from mcp.types import ListToolsRequest, PaginatedRequestParams  # noqa: PLC0415

    if bool(command) == bool(url):
        raise ProctorError("expected the upstream as -- COMMAND… or --upstream-url URL (one of them)")

    async def listed(session: ClientSession) -> list[dict[str, Any]]:
        await session.initialize()
        tools: list[dict[str, Any]] = []
        cursor: str | None = None
        for _ in range(1000):
            params = PaginatedRequestParams(cursor=cursor) if cursor else None
            # The tools as the server sent them (the SDK's Tool model drops fields it
            # does not know): the digest must be the one the gateway takes of the wire.
            page = await session.send_request(ListToolsRequest(params=params), _RawTools)
            tools.extend(page.tools)
            cursor = page.nextCursor
            if not cursor:
                return tools
        raise ProctorError("the upstream's tools/list did not end after 1000 pages")

    try:
        with anyio.fail_after(timeout):
            if url:
                from mcp.client.streamable_http import streamable_http_client  # noqa: PLC0415

                async with (
                    streamable_http_client(url) as (read, write),
                    ClientSession(read, write) as session,
                ):
                    return await listed(session)
            from mcp.client.stdio import StdioServerParameters, stdio_client  # noqa: PLC0415

            params = StdioServerParameters(command=command[0], args=list(command[1:]))
            async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
                return await listed(session)
    except ProctorError:
        raise
    except Exception as e:  # any failure to reach or list is one clear error
        where = url or " ".join(command)
        raise ProctorError(f"cannot list the tools of the upstream {where!r}: {type(e).__name__}: {e}") from e


def schema_command(
    *,
    name: str,
    command: Sequence[str] = (),
    url: str | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
    timeout: float = 30.0,
) -> int:
    """The core of ``proctor gateway mcp schema``: print the catalog fragment of the upstream.

    Args:
        name: the server's name (resources ``NAME/TOOL``).
        command: the upstream's command line (stdio), or
        url: its streamable HTTP URL.
        out: where to write the fragment (stdout by default).
        err: where to write an error (stderr by default).
        timeout: seconds for listing.

    Returns:
        The exit code: 0; 3 (unavailable) when the upstream could not be listed;
        2 (bad input) when its catalog would be refused (the reason is written to ``err``).
    """
    import anyio  # noqa: PLC0415

    errors = err or sys.stderr
    try:
        tools = anyio.run(lambda: list_upstream_tools(command=command, url=url, timeout=timeout))
    except ProctorError as e:
        errors.write(f"proctor: error: {e}\n")
        return int(ExitCode.UNAVAILABLE)
    try:
        fragment = catalog_fragment(name, tools)
    except ProctorError as e:
        details = "".join(f"  {d}\n" for d in getattr(e, "diagnostics", ()))
        errors.write(f"proctor: error: the upstream's tools make no usable catalog: {e}\n{details}")
        return int(ExitCode.BAD_INPUT)
    text = orjson.dumps(fragment, option=orjson.OPT_INDENT_2).decode() + "\n"
    (out or sys.stdout).write(text)
    return 0


def visible_body(server: str, tools: Sequence[str], *, action: str = "mcp.call") -> dict[str, Any]:
    """The body of ``POST /v1/authorize/visible`` for a server's tools.

    Args:
        server: the server's name.
        tools: the tool names it lists.
        action: ``mcp.call`` (default) or ``tool.call``.

    Returns:
        ``{"action": ..., "resources": ["server/tool", …]}``.
    """
    return {"action": action, "resources": [f"{server}/{tool}" for tool in tools]}


def read_visible(answer: Any, asked: Sequence[str]) -> frozenset[str]:
    """The visible resources in the governor's answer, checked against what was asked.

    Args:
        answer: the JSON answer, ``{"visible": [...], "hidden": [...]}``.
        asked: the resources asked about.

    Returns:
        The resources the principal could call; nothing outside ``asked``.

    Raises:
        GovernorError: the answer is not of that shape (fail closed: the caller hides all).
    """
    visible = answer.get("visible") if isinstance(answer, dict) else None
    if type(visible) is not list or any(type(r) is not str for r in visible):
        raise GovernorError(
            f"expected {{'visible': [resource, …]}} from the governor, found {answer!r}"[:300], status=0
        )
    return frozenset(visible).intersection(asked)


def visible_tools(client: Any, server: str, tools: Sequence[str]) -> frozenset[str]:
    """The tools of ``server`` the client's principal could ever call (the others never).

    Args:
        client: a :class:`proctor.client.GovernorClient` signing as the principal.
        server: the server's name.
        tools: the tool names the server lists.

    Returns:
        The names of the tools to show in ``tools/list``.

    Raises:
        GovernorError: the governor could not answer; the gateway then shows none
            (every call would be refused anyway).
    """
    body = visible_body(server, tools)
    resources: list[str] = body["resources"]
    visible = read_visible(client.json("POST", VISIBLE_ROUTE, body), resources)
    return frozenset(tool for tool in tools if f"{server}/{tool}" in visible)
