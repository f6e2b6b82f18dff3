"""The DAG layout (grandalf), the guard's address rule and the API document, without a server."""

from __future__ import annotations

import pytest
from hivetest import REPO

from hivebus.console.dashboard.app import ROUTES
from hivebus.console.dashboard.layout import MAX_NODES, layout
from hivebus.console.dashboard.openapi import openapi
from hivebus.console.dashboard.security import is_loopback

DEMO = [
    ("research-a", []),
    ("research-b", []),
    ("research-c", []),
    ("synthesis", ["research-a", "research-b", "research-c"]),
    ("review", ["synthesis"]),
]


def _overlap(a: dict[str, float], b: dict[str, float]) -> bool:
    return (
        a["x"] < b["x"] + b["w"]
        and b["x"] < a["x"] + a["w"]
        and a["y"] < b["y"] + b["h"]
        and b["y"] < a["y"] + a["h"]
    )


def test_every_node_is_placed_inside_the_drawing_without_overlap() -> None:
    """Nodes keep the plan's order, fit in width x height, and no two boxes overlap."""
    drawn = layout(DEMO)
    nodes = drawn["nodes"]
    assert [n["id"] for n in nodes] == [sid for sid, _ in DEMO]
    for node in nodes:
        assert node["x"] >= 0
        assert node["y"] >= 0
        assert node["x"] + node["w"] <= drawn["width"]
        assert node["y"] + node["h"] <= drawn["height"]
    assert not any(_overlap(a, b) for i, a in enumerate(nodes) for b in nodes[i + 1 :])


def test_edges_run_down_from_each_dependency_to_its_dependent() -> None:
    """One edge per dependency; it starts on the dependency's box and ends on the dependent's."""
    drawn = layout(DEMO)
    nodes = {n["id"]: n for n in drawn["nodes"]}
    pairs = [(e["from"], e["to"]) for e in drawn["edges"]]
    assert sorted(pairs) == sorted((d, sid) for sid, deps in DEMO for d in deps)
    for edge in drawn["edges"]:
        source, target = nodes[edge["from"]], nodes[edge["to"]]
        (_, y0), (_, y1) = edge["points"][0], edge["points"][-1]
        assert source["y"] + source["h"] <= target["y"]
        assert y0 == pytest.approx(source["y"] + source["h"], abs=1.0)
        assert y1 == pytest.approx(target["y"], abs=1.0)


def test_separate_parts_sit_side_by_side_and_unknown_dependencies_are_left_out() -> None:
    """Two unconnected chains do not overlap; a dependency outside the plan draws no edge."""
    drawn = layout([("a", []), ("b", ["a"]), ("x", ["ghost"]), ("y", ["x"])])
    nodes = drawn["nodes"]
    assert not any(_overlap(a, b) for i, a in enumerate(nodes) for b in nodes[i + 1 :])
    assert sorted((e["from"], e["to"]) for e in drawn["edges"]) == [("a", "b"), ("x", "y")]


def test_an_empty_plan_and_a_huge_one_still_give_a_drawing() -> None:
    """No sub-tasks: an empty drawing; more than MAX_NODES: a grid without edges, at once."""
    assert layout([]) == {"width": 0.0, "height": 0.0, "nodes": [], "edges": []}
    huge = layout([(f"n{i}", [f"n{i - 1}"] if i else []) for i in range(MAX_NODES + 1)])
    assert len(huge["nodes"]) == MAX_NODES + 1
    assert huge["edges"] == []


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),  # noqa: S104 - the address under test
        ("::", False),
        ("192.168.1.10", False),
        ("dashboard.example.com", False),
    ],
)
def test_only_loopback_addresses_count_as_loopback(host: str, *, loopback: bool) -> None:
    """A name other than localhost may resolve anywhere: it counts as off loopback."""
    assert is_loopback(host) is loopback


def test_the_openapi_document_names_every_route_and_method() -> None:
    """Each route of the app is in the document with its method, and nothing else is."""
    document = openapi()
    documented = {(path, method) for path, ops in document["paths"].items() for method in ops}
    routed = {(r.path, m.lower()) for r in ROUTES for m in (r.methods or ()) if m != "HEAD"}
    assert documented == routed
    for ops in document["paths"].values():
        for op in ops.values():
            assert op["summary"]
            assert "200" in op["responses"]


def test_the_static_folder_is_inside_the_package() -> None:
    """The page ships in the wheel: its folder is under src/hivebus (hatch packages it)."""
    static = REPO / "services/console/src/hivebus/console/dashboard/static"
    assert static.is_dir()
