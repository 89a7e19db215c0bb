"""``proctor gateway mcp``: the MCP governing gateway (:mod:`proctor.integrations.mcp`).

``proctor gateway mcp --server URL --key KEYFILE [--name NAME] -- UPSTREAM_CMD…`` serves
one agent session on stdin/stdout, forwarded to UPSTREAM_CMD run as a child over
stdio; ``--listen HOST:PORT --upstream-url URL`` serves streamable HTTP and forwards
each agent session to a session of its own at the upstream's URL. Every ``tools/call``
is authorized (action ``mcp.call``, resource ``NAME/TOOL``) before it is forwarded.

``proctor gateway mcp schema --name NAME [--upstream-url URL] [-- UPSTREAM_CMD…]``
prints the policy bundle's tool catalog fragment for the upstream's live tools
(:mod:`proctor.integrations.mcp.schema`).

Exit codes (:class:`proctor.exitcodes.ExitCode`): OK when the agent's session ended;
BAD_INPUT for bad arguments or an unreadable key; UNAVAILABLE when the upstream could
not be started or reached.
"""

from __future__ import annotations

import base64
import math
import os
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from proctor.cli_output import server_option
from proctor.errors import ProctorError
from proctor.exitcodes import ExitCode

__all__ = ["register"]

gateway_app = typer.Typer(help="Governing gateways for agents' tool calls.", no_args_is_help=True)


def _mcp(
    command: Annotated[
        list[str] | None,
        typer.Argument(metavar="UPSTREAM_CMD", help="The upstream MCP server's command line, after --."),
    ] = None,
    server: Annotated[str | None, server_option("Without it only schema works.")] = None,
    key: Annotated[
        Path | None,
        typer.Option("--key", metavar="FILE", help="The key of the principal the gateway acts as."),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option(
            "--name",
            metavar="NAME",
            help="Server part of each resource NAME/TOOL (default: the command name).",
        ),
    ] = None,
    listen: Annotated[
        str | None, typer.Option("--listen", metavar="ADDRESS", help="Serve streamable HTTP at HOST:PORT.")
    ] = None,
    upstream_url: Annotated[
        str | None,
        typer.Option("--upstream-url", metavar="URL", help="The upstream's streamable HTTP endpoint."),
    ] = None,
    approval_timeout: Annotated[
        float,
        typer.Option(
            "--approval-timeout", metavar="SECONDS", help="Wait this long for an approval, then deny."
        ),
    ] = 300.0,
    max_message_bytes: Annotated[
        int,
        typer.Option(
            "--max-message-bytes", metavar="BYTES", help="Longest MCP message accepted from either side."
        ),
    ] = 4 * 1024 * 1024,
    warrant_key: Annotated[
        str | None,
        typer.Option(
            "--warrant-key", metavar="KEY", help="Warrant root key (base64); default: ask the server."
        ),
    ] = None,
    session_idle: Annotated[
        float,
        typer.Option(
            "--session-idle",
            metavar="SECONDS",
            help="Streamable HTTP: end an agent session idle this long (nothing in flight).",
        ),
    ] = 600.0,
) -> None:
    """Govern an MCP server's tool calls: authorize each before it is forwarded."""
    argv = list(command or [])
    if argv[:1] == ["schema"]:
        _schema(argv[1:], name, upstream_url)
        return
    from proctor.authorization.keys import PrincipalKey  # noqa: PLC0415 - the command's own load
    from proctor.integrations.mcp import GatewayOptions, run_stdio  # noqa: PLC0415

    if not server or key is None:
        _bad("--server and --key are required")
    if listen is None and (not argv or upstream_url):
        _bad("expected an upstream command after -- (stdio), or --listen HOST:PORT with --upstream-url URL")
    if listen is not None and (not upstream_url or argv):
        _bad("--listen serves streamable HTTP: give --upstream-url URL and no upstream command")
    if not (math.isfinite(session_idle) and session_idle > 0):
        _bad(f"--session-idle: expected a positive number of seconds, found {session_idle}")
    try:
        principal = PrincipalKey.load(key)
        root = base64.b64decode(warrant_key, validate=True) if warrant_key else None
    except (ProctorError, OSError, ValueError) as e:
        _bad(f"cannot load the key: {e}")
    default_name = os.path.basename(argv[0]) if argv else "upstream"
    options = GatewayOptions(
        server=server,
        key=principal,
        name=name or default_name,
        approval_timeout=approval_timeout,
        max_message_bytes=max_message_bytes,
        warrant_key=root,
        session_idle=session_idle,
    )
    import anyio  # noqa: PLC0415

    try:
        if listen is None:
            anyio.run(run_stdio, options, argv)
        else:
            from proctor.integrations.mcp.http import run_http  # noqa: PLC0415

            host, _, port = listen.rpartition(":")
            if not host or not port.isdigit():
                _bad(f"--listen: expected HOST:PORT, found {listen!r}")
            anyio.run(run_http, options, host, int(port), str(upstream_url))
    except OSError as e:
        typer.echo(f"proctor: cannot start the upstream server: {e}", err=True)
        raise typer.Exit(ExitCode.UNAVAILABLE) from e
    except KeyboardInterrupt:
        return


def _schema(argv: list[str], name: str | None, upstream_url: str | None) -> None:
    from proctor.integrations.mcp.schema import schema_command  # noqa: PLC0415

    if not name:
        _bad("schema: --name NAME is required (the server part of the resources)")
    raise typer.Exit(schema_command(name=str(name), command=argv, url=upstream_url))


def _bad(message: str) -> NoReturn:
    typer.echo(f"proctor: error: {message}", err=True)
    raise typer.Exit(ExitCode.BAD_INPUT)


def register(app: typer.Typer) -> None:
    """Add ``gateway`` (``mcp``) to the ``proctor`` app."""
    gateway_app.command("mcp")(_mcp)
    app.add_typer(gateway_app, name="gateway")
