"""hivebus contracts: event models, statuses and transitions, subject names, the plan schema.

Data only: nothing here does I/O.
"""

from hivebus.contracts.errors import ContractError, IllegalTransitionError
from hivebus.contracts.events import (
    EVENT_MODELS,
    SCHEMA_VERSION,
    BreakerChanged,
    BudgetWarning,
    CancelRequested,
    DeadLetter,
    DeadlineReached,
    DependencyOutput,
    Event,
    NoteCommitted,
    RetryRecord,
    StepRecorded,
    SubTaskAssigned,
    SubTaskFinished,
    SubTaskStarted,
    SubTaskSummary,
    TaskFinished,
    TaskRejected,
    TaskSubmitted,
)
from hivebus.contracts.ids import ID_PATTERN, ROLE_PATTERN, Identifier, RoleName, is_identifier
from hivebus.contracts.limits import Limits, TaskBudget, Usage
from hivebus.contracts.plan import MAX_SUBTASKS, Plan, SubTaskSpec
from hivebus.contracts.schemas import json_schemas
from hivebus.contracts.status import (
    SUBTASK_TERMINAL,
    SUBTASK_TRANSITIONS,
    TASK_TERMINAL,
    TASK_TRANSITIONS,
    SubTaskStatus,
    TaskStatus,
    transition,
)
from hivebus.contracts.tools import Tier, ToolError, ToolErrorKind, ToolResult

__all__ = [
    "EVENT_MODELS",
    "ID_PATTERN",
    "MAX_SUBTASKS",
    "ROLE_PATTERN",
    "SCHEMA_VERSION",
    "SUBTASK_TERMINAL",
    "SUBTASK_TRANSITIONS",
    "TASK_TERMINAL",
    "TASK_TRANSITIONS",
    "BreakerChanged",
    "BudgetWarning",
    "CancelRequested",
    "ContractError",
    "DeadLetter",
    "DeadlineReached",
    "DependencyOutput",
    "Event",
    "Identifier",
    "IllegalTransitionError",
    "Limits",
    "NoteCommitted",
    "Plan",
    "RetryRecord",
    "RoleName",
    "StepRecorded",
    "SubTaskAssigned",
    "SubTaskFinished",
    "SubTaskSpec",
    "SubTaskStarted",
    "SubTaskStatus",
    "SubTaskSummary",
    "TaskBudget",
    "TaskFinished",
    "TaskRejected",
    "TaskStatus",
    "TaskSubmitted",
    "Tier",
    "ToolError",
    "ToolErrorKind",
    "ToolResult",
    "Usage",
    "is_identifier",
    "json_schemas",
    "transition",
]
