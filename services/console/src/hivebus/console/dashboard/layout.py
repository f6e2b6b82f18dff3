"""The plan drawn as a DAG: node boxes and edge polylines laid out by grandalf (Sugiyama).

The page draws SVG from what this returns, so no layout library runs in the browser. Each
connected part of the plan is laid out on its own and the parts are placed side by side;
dependencies point down (a sub-task sits below what it depends on).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from grandalf.graphs import Edge, Graph, Vertex
from grandalf.layouts import SugiyamaLayout
from grandalf.routing import EdgeViewer, route_with_lines

NODE_W = 160.0
NODE_H = 48.0
GAP_X = 40.0
"""Between two nodes of a layer, and between two parts of the plan."""
GAP_Y = 60.0
MARGIN = 20.0
MAX_NODES = 2000
"""Bigger plans are laid out as a grid without edges: a layered layout of thousands of nodes
takes seconds, and nobody reads such a drawing."""


class _Box:
    """A vertex's view as grandalf wants it: size in, centre (`xy`) out."""

    def __init__(self, w: float, h: float) -> None:
        self.w = w
        self.h = h
        self.xy = (0.0, 0.0)


def _round(value: float) -> float:
    return round(value, 1)


def _grid(ids: Sequence[str]) -> dict[str, Any]:
    columns = max(1, int(len(ids) ** 0.5))
    nodes = [
        {
            "id": sid,
            "x": MARGIN + (i % columns) * (NODE_W + GAP_X),
            "y": MARGIN + (i // columns) * (NODE_H + GAP_Y),
            "w": NODE_W,
            "h": NODE_H,
        }
        for i, sid in enumerate(ids)
    ]
    rows = (len(ids) + columns - 1) // columns
    return {
        "width": 2 * MARGIN + columns * (NODE_W + GAP_X) - GAP_X,
        "height": 2 * MARGIN + rows * (NODE_H + GAP_Y) - GAP_Y,
        "nodes": nodes,
        "edges": [],
    }


def layout(subtasks: Sequence[tuple[str, Sequence[str]]]) -> dict[str, Any]:
    """`{"width", "height", "nodes", "edges"}` for sub-tasks given as `(id, depends_on)`.

    Nodes are `{"id", "x", "y", "w", "h"}` with x, y the top-left corner; edges are
    `{"from", "to", "points"}` from a dependency to its dependent, each point `[x, y]`,
    clipped to the boxes' borders. A dependency on an id not in the plan is left out.
    """
    ids = [sid for sid, _ in subtasks]
    if not ids:
        return {"width": 0.0, "height": 0.0, "nodes": [], "edges": []}
    if len(ids) > MAX_NODES:
        return _grid(ids)
    vertices = {sid: Vertex(sid) for sid in ids}
    for vertex in vertices.values():
        vertex.view = _Box(NODE_W, NODE_H)
    edges: list[Any] = []
    for sid, depends_on in subtasks:
        for dep in dict.fromkeys(depends_on):
            if dep in vertices and dep != sid:
                edge = Edge(vertices[dep], vertices[sid])
                edge.view = EdgeViewer()
                edges.append(edge)
    graph = Graph(list(vertices.values()), edges)
    nodes: list[dict[str, Any]] = []
    lines: list[dict[str, Any]] = []
    offset_x = MARGIN
    height = 0.0
    for part in graph.C:
        sugiyama = SugiyamaLayout(part)
        sugiyama.xspace = GAP_X
        sugiyama.yspace = GAP_Y
        sugiyama.route_edge = route_with_lines
        sugiyama.init_all()
        sugiyama.draw()
        boxes = [v.view for v in part.sV]
        left = min(b.xy[0] - b.w / 2 for b in boxes)
        top = min(b.xy[1] - b.h / 2 for b in boxes)
        right = max(b.xy[0] + b.w / 2 for b in boxes)
        bottom = max(b.xy[1] + b.h / 2 for b in boxes)
        dx, dy = offset_x - left, MARGIN - top
        nodes.extend(
            {
                "id": v.data,
                "x": _round(v.view.xy[0] - v.view.w / 2 + dx),
                "y": _round(v.view.xy[1] - v.view.h / 2 + dy),
                "w": v.view.w,
                "h": v.view.h,
            }
            for v in part.sV
        )
        lines.extend(
            {
                "from": e.v[0].data,
                "to": e.v[1].data,
                "points": [[_round(x + dx), _round(y + dy)] for x, y in e.view._pts],  # noqa: SLF001 - grandalf's EdgeViewer keeps the path there
            }
            for e in part.sE
        )
        offset_x += right - left + GAP_X
        height = max(height, bottom - top)
    order = {sid: i for i, sid in enumerate(ids)}
    nodes.sort(key=lambda n: order[n["id"]])
    return {
        "width": _round(offset_x - GAP_X + MARGIN),
        "height": _round(height + 2 * MARGIN),
        "nodes": nodes,
        "edges": lines,
    }
