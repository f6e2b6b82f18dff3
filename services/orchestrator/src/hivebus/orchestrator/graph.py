"""The immutable shape of a plan: index, dependencies and dependents, built once in O(V+E)."""

from __future__ import annotations

from dataclasses import dataclass

from hivebus.contracts import Plan, SubTaskSpec, TaskSubmitted
from hivebus.core.lru import Lru


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


GraphCache = Lru[str, tuple[TaskSubmitted, Graph]]
"""Accepted plans and their graphs by task id (bounded LRU).

A plan never changes once stored, so caching is always safe: a task's plan is read from KV
and parsed once per orchestrator process, not once per event.
"""
