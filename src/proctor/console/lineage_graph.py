"""The authorization ancestry as a drawing: boxes and arrows placed on the server.

The template draws them as inline SVG (text through Jinja2's autoescaping, so a
principal or warrant id is never markup; no script, no inline style). Layout, one row
per warrant, root first::

    [root warrant]       -> [its execution]
         | delegated
    [this warrant]       -> [this execution]
       |_ [a warrant delegated from it] -> [its execution]

A warrant's row holds the execution it started, if any, on the right.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["BOX_H", "BOX_W", "Ancestry", "Edge", "Node", "Row", "lay_out"]

BOX_W, BOX_H, GAP_X, GAP_Y, MARGIN, INDENT = 270, 64, 64, 30, 12, 28
"""The drawing's geometry, in SVG user units."""


@dataclass
class Node:
    """A box: a warrant or an execution."""

    key: str
    kind: str
    title: str
    lines: list[str]
    leaf: int | None
    href: str | None = None
    current: bool = False
    x: int = 0
    y: int = 0
    width: int = BOX_W


@dataclass(frozen=True)
class Edge:
    """An arrow: its SVG path, its label and where the label goes."""

    source: str
    target: str
    label: str
    path: str
    label_x: int
    label_y: int


@dataclass(frozen=True)
class Row:
    """One row of the layout: a warrant (or none) and the execution it started (or none);
    ``child``: a warrant delegated from the current one (drawn indented)."""

    warrant: Node | None
    execution: Node | None
    child: bool = False


@dataclass
class Ancestry:
    """The placed boxes and arrows and the drawing's size."""

    nodes: list[Node] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)
    width: int = 0
    height: int = 0
    truncated: bool = False

    def title(self, key: str) -> str:
        """The title of the node named ``key``."""
        return next(n.title for n in self.nodes if n.key == key)


def lay_out(rows: list[Row], *, truncated: bool = False) -> Ancestry:
    """Place ``rows`` top to bottom and draw the arrows between them."""
    graph = Ancestry(truncated=truncated)
    chain: Node | None = None  # the last warrant of the chain (root .. current)
    current: Node | None = None
    for number, row in enumerate(rows):
        y = MARGIN + number * (BOX_H + GAP_Y)
        left = row.warrant
        if left is not None:
            left.x, left.y = MARGIN + (INDENT if row.child else 0), y
            left.width = BOX_W - (INDENT if row.child else 0)
            graph.nodes.append(left)
            above = current if row.child else chain
            if above is not None and row.child:
                x = above.x + 10
                path = f"M{x},{above.y + BOX_H} V{y + BOX_H // 2} H{left.x}"
                graph.edges.append(Edge(above.key, left.key, "delegated", path, x + 4, y - 6))
            elif above is not None:
                x = above.x + BOX_W // 2
                path = f"M{x},{above.y + BOX_H} V{y}"
                graph.edges.append(Edge(above.key, left.key, "delegated", path, x + 6, y - GAP_Y // 2 + 4))
            if not row.child:
                chain = left
                if left.current:
                    current = left
        right = row.execution
        if right is not None:
            right.x, right.y = MARGIN + BOX_W + GAP_X, y
            graph.nodes.append(right)
            if left is not None:
                mid = y + BOX_H // 2
                path = f"M{left.x + left.width},{mid} H{right.x}"
                graph.edges.append(
                    Edge(left.key, right.key, "started", path, left.x + left.width + 4, mid - 6)
                )
    graph.width = 2 * MARGIN + 2 * BOX_W + GAP_X
    graph.height = max(0, 2 * MARGIN + len(rows) * (BOX_H + GAP_Y) - GAP_Y)
    return graph
