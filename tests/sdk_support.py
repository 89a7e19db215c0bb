"""A real governor (``proctor serve``) with a tool policy, for the SDK's tests.

Principals: alice (``role=dev``, the server's own key), bob (``role=agent``, a
sub-agent: the policy lets agents call tools only under a delegated parent warrant),
and the data directory's admin.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gov_server import GovernorServer
from proctor.cli_run import receipt_timeline

TOOLS_POLICY = """
@id("dev-add")
permit(principal, action == Proctor::Action::"tool.call", resource == Proctor::Tool::"add")
when { principal.role == "dev" };

@id("no-13")
forbid(principal, action == Proctor::Action::"tool.call", resource == Proctor::Tool::"add")
when { context.arguments.contains("a=13") };

@id("dev-slow")
@lease_ttl_s("1")
permit(principal, action == Proctor::Action::"tool.call", resource == Proctor::Tool::"slow")
when { principal.role == "dev" };

@id("dev-search")
permit(principal, action == Proctor::Action::"tool.call", resource == Proctor::Tool::"search")
when { principal.role == "dev" };

@id("dev-fetch")
permit(principal, action == Proctor::Action::"tool.call", resource == Proctor::Tool::"fetch")
when { principal.role == "dev" };

@id("agents-search")
permit(principal, action == Proctor::Action::"tool.call", resource == Proctor::Tool::"search")
when { principal.role == "agent" && context.parent_warrant != "" };

@id("agents-fetch")
permit(principal, action == Proctor::Action::"tool.call", resource == Proctor::Tool::"fetch")
when { principal.role == "agent" && context.parent_warrant != "" };

@id("no-delete")
forbid(principal, action == Proctor::Action::"tool.call", resource == Proctor::Tool::"delete_all");
"""


@dataclass
class SdkGovernor:
    """The running governor and the keys of its principals."""

    server: GovernorServer
    alice: Path
    bob: Path
    admin: Path

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def log_key(self) -> str:
        """The log verifier key, read from the data directory (trusted out of band)."""
        return (self.server.data / "keys" / "log.pub").read_text().strip()

    @property
    def warrant_key(self) -> str:
        """The warrant key, base64, from the data directory (pinned out of band)."""
        return (self.server.data / "keys" / "warrant.pub").read_text().strip()


def start_sdk_governor(root: Path) -> Iterator[SdkGovernor]:
    """A module fixture's body: the governor with :data:`TOOLS_POLICY`, then stopped."""
    policy = root / "policy"
    policy.mkdir(parents=True)
    (policy / "tools.cedar").write_text(TOOLS_POLICY)
    server = GovernorServer(root / "gov", policy=policy)
    try:
        bob = server.data / "bob.key"
        server.admin("principal", "add", "bob", "--attr", "role=agent", "--out", str(bob))
        yield SdkGovernor(server, server.key, bob, server.data / "keys" / "admin.key")
    finally:
        server.stop()


def receipt_events(receipt: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The receipt's events by type (the last of each type)."""
    return {e["type"]: e["event"] for e in receipt_timeline(receipt)["events"]}
