"""hivebus contracts: event models, statuses and transitions, subject names, the plan schema.

Data only: nothing here does I/O.
"""

from hivebus.contracts.conversation import Message, ToolCall, ToolOutcome
from hivebus.contracts.errors import (
    ContractError,
    IllegalTransitionError,
    describe_validation_error,
)
from hivebus.contracts.events import (
    EVENT_MODELS,
    EVENTS_BY_KIND,
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
from hivebus.contracts.runs import RunCheckpoint, RunPhase
from hivebus.contracts.schemas import json_schemas
from hivebus.contracts.state import SubTaskState, TaskMeta
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
    "EVENTS_BY_KIND",
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
    "Message",
    "NoteCommitted",
    "Plan",
    "RetryRecord",
    "RoleName",
    "RunCheckpoint",
    "RunPhase",
    "StepRecorded",
    "SubTaskAssigned",
    "SubTaskFinished",
    "SubTaskSpec",
    "SubTaskStarted",
    "SubTaskState",
    "SubTaskStatus",
    "SubTaskSummary",
    "TaskBudget",
    "TaskFinished",
    "TaskMeta",
    "TaskRejected",
    "TaskStatus",
    "TaskSubmitted",
    "Tier",
    "ToolCall",
    "ToolError",
    "ToolErrorKind",
    "ToolOutcome",
    "ToolResult",
    "Usage",
    "describe_validation_error",
    "is_identifier",
    "json_schemas",
    "transition",
]
