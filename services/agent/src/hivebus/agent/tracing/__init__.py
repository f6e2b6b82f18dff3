"""The agent's OpenTelemetry spans and metrics (GenAI conventions), cheap no-ops when off.

    queue_wait <subtask_id>      `queue.picked_up`: the assignment's time in the work stream
    invoke_agent <role>          `run.run_span`: one run (one delivery that runs the loop)
    ├── chat <model>             `chat.chat_span`: one model step (fallbacks and retries in it)
    └── execute_tool <name>      `tool.tool_span`: one tool call
    events on the current span   `events`: retries, breaker changes, budget warnings

Every entry point asks `telemetry.current()` when it is called and does nothing when it is
not `enabled`; content (prompts, completions, tool arguments and results) is put on spans
only with `capture_content`.
"""

from hivebus.agent.tracing.chat import ChatTrace, chat_span, finish_reason
from hivebus.agent.tracing.events import breaker_changed, budget_warning, retried
from hivebus.agent.tracing.labels import model_of, provider_of, run_labels
from hivebus.agent.tracing.queue import picked_up
from hivebus.agent.tracing.run import INTERRUPTED, RunSpan, run_span
from hivebus.agent.tracing.tool import ToolTrace, tool_span

__all__ = [
    "INTERRUPTED",
    "ChatTrace",
    "RunSpan",
    "ToolTrace",
    "breaker_changed",
    "budget_warning",
    "chat_span",
    "finish_reason",
    "model_of",
    "picked_up",
    "provider_of",
    "retried",
    "run_labels",
    "run_span",
    "tool_span",
]
