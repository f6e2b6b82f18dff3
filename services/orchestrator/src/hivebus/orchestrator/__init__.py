"""hivebus orchestrator: plan validation, the scheduler, result handling."""

from hivebus.orchestrator.graph import Graph
from hivebus.orchestrator.pauses import Pauses
from hivebus.orchestrator.scheduler import Scheduler
from hivebus.orchestrator.state import KvStore, MemoryStore, StateStore
from hivebus.orchestrator.summary import summarize
from hivebus.orchestrator.validation import find_cycle, validate_submission

__all__ = [
    "Graph",
    "KvStore",
    "MemoryStore",
    "Pauses",
    "Scheduler",
    "StateStore",
    "find_cycle",
    "summarize",
    "validate_submission",
]
