"""The immutable shape of a plan: index, dependencies and dependents, built once in O(V+E)."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from hivebus.contracts import Plan, SubTaskSpec


@dataclass(frozen=True)
class Graph:
    """A validated plan's DAG."""

    specs: dict[str, SubTaskSpec]
    index: dict[str, int]
    dependents: dict[str, tuple[str, ...]]
    dep_position: dict[tuple[str, str], int]
    in_degree: dict[str, int]
    roots: tuple[str, ...]

    @classmethod
    def from_plan(cls, plan: Plan) -> Graph:
        """Build the adjacency once; every later step only follows it."""
        specs = {spec.id: spec for spec in plan.subtasks}
        index = {spec.id: i for i, spec in enumerate(plan.subtasks)}
        dependents: dict[str, list[str]] = {sid: [] for sid in specs}
        dep_position: dict[tuple[str, str], int] = {}
        in_degree: dict[str, int] = {}
        for spec in plan.subtasks:
            distinct = list(dict.fromkeys(spec.depends_on))  # a repeated id counts once
            in_degree[spec.id] = len(distinct)
            for position, dep in enumerate(distinct):
                dependents[dep].append(spec.id)
                dep_position[spec.id, dep] = position
        roots = tuple(spec.id for spec in plan.subtasks if not spec.depends_on)
        return cls(
            specs=specs,
            index=index,
            dependents={k: tuple(v) for k, v in dependents.items()},
            dep_position=dep_position,
            in_degree=in_degree,
            roots=roots,
        )

    @property
    def size(self) -> int:
        """Number of sub-tasks."""
        return len(self.specs)


class GraphCache:
    """A bounded LRU of graphs by task id: plans never change, so caching is always safe."""

    def __init__(self, capacity: int = 256) -> None:
        """Keep at most `capacity` graphs."""
        self.capacity = capacity
        self._items: OrderedDict[str, Graph] = OrderedDict()

    def get(self, task_id: str) -> Graph | None:
        """The cached graph, refreshed as most recently used."""
        graph = self._items.get(task_id)
        if graph is not None:
            self._items.move_to_end(task_id)
        return graph

    def put(self, task_id: str, graph: Graph) -> None:
        """Cache a graph, evicting the least recently used beyond capacity."""
        self._items[task_id] = graph
        self._items.move_to_end(task_id)
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)
