"""hivebus orchestrator: plan validation, the scheduler, result handling."""

from hivebus.orchestrator.graph import Graph
from hivebus.orchestrator.scheduler import Outbox, Scheduler
from hivebus.orchestrator.state import KvStore, MemoryStore, StateStore, SubTaskState, TaskMeta
from hivebus.orchestrator.summary import summarize
from hivebus.orchestrator.validation import find_cycle, validate_submission

__all__ = [
    "Graph",
    "KvStore",
    "MemoryStore",
    "Outbox",
    "Scheduler",
    "StateStore",
    "SubTaskState",
    "TaskMeta",
    "find_cycle",
    "summarize",
    "validate_submission",
]
