"""The dashboard's tasks index, fed events by hand: rows, counts, filters, stable paging."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from hivebus.console.dashboard.index import CursorError, TaskIndex

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _submit(index: TaskIndex, seq: int, task_id: str, subtasks: list[str]) -> None:
    body = {
        "task_id": task_id,
        "goal": f"goal of {task_id}",
        "plan": {"subtasks": [{"id": s, "role": "r", "prompt": "p"} for s in subtasks]},
    }
    index.add_submission(seq, body, task_id, T0 + timedelta(seconds=seq))


def _usage(tokens: int, cost: float) -> dict[str, object]:
    return {"input_tokens": tokens, "output_tokens": 0, "cost_usd": cost}


def test_a_running_row_counts_subtasks_by_status_and_sums_their_usage() -> None:
    """Started, paused and finished runs move the counts; the unseen are pending."""
    index = TaskIndex()
    _submit(index, 1, "t", ["a", "b", "c", "d"])
    index.add_event("subtask_started", {"task_id": "t", "subtask_id": "a", "attempt": 1})
    index.add_event("subtask_started", {"task_id": "t", "subtask_id": "b", "attempt": 1})
    index.add_event(
        "subtask_finished",
        {"task_id": "t", "subtask_id": "a", "attempt": 1, "status": "completed"}
        | {"usage": _usage(100, 0.5)},
    )
    index.add_event("approval_requested", {"task_id": "t", "subtask_id": "c", "attempt": 1})
    [row] = index.page()["tasks"]
    assert row["status"] == "running"
    assert row["counts"] == {"awaiting_approval": 1, "completed": 1, "pending": 1, "running": 1}
    assert (row["tokens"], row["cost_usd"]) == (100, 0.5)
    assert row["submitted_at"] == (T0 + timedelta(seconds=1)).isoformat()
    assert row["finished_at"] is None
    assert row["duration_s"] is None


def test_a_finished_task_takes_its_summary_and_ignores_late_subtask_events() -> None:
    """TaskFinished sets status, usage, duration and counts; a late start changes nothing."""
    index = TaskIndex()
    _submit(index, 1, "t", ["a", "b"])
    finished = {
        "task_id": "t",
        "status": "partial",
        "reason": "1 of 2",
        "ts": (T0 + timedelta(seconds=31)).isoformat(),
        "usage": _usage(40, 0.25),
        "subtasks": [{"id": "a", "status": "completed"}, {"id": "b", "status": "failed"}],
    }
    index.add_event("task_finished", finished)
    index.add_event("subtask_started", {"task_id": "t", "subtask_id": "b", "attempt": 2})
    [row] = index.page()["tasks"]
    assert row["status"] == "partial"
    assert row["counts"] == {"completed": 1, "failed": 1}
    assert row["duration_s"] == 30.0
    assert (row["tokens"], row["cost_usd"]) == (40, 0.25)


def test_a_rejected_submission_is_a_row_with_every_error() -> None:
    """A refused submission shows as `rejected` with its errors as the reason."""
    index = TaskIndex()
    index.add_submission(1, {"goal": "no task id in the body"}, "from-header", T0)
    index.add_submission(2, b"not even a mapping", None, T0)  # nobody to name: no row
    index.add_event("task_rejected", {"task_id": "from-header", "errors": ["x: bad", "y: bad"]})
    page = index.page()
    assert [r["task_id"] for r in page["tasks"]] == ["from-header"]
    assert page["tasks"][0]["status"] == "rejected"
    assert page["tasks"][0]["reason"] == "x: bad; y: bad"
    assert index.entries["from-header"].errors == ["x: bad", "y: bad"]


def test_pages_are_newest_first_and_stable_while_tasks_arrive() -> None:
    """The cursor is a position in the stream: a new task does not shift the next page."""
    index = TaskIndex()
    for n in range(1, 8):
        _submit(index, n, f"t{n}", ["a"])
    first = index.page(limit=3)
    _submit(index, 8, "t8", ["a"])
    second = index.page(limit=3, cursor=first["next"])
    third = index.page(limit=3, cursor=second["next"])
    assert [r["task_id"] for r in first["tasks"]] == ["t7", "t6", "t5"]
    assert [r["task_id"] for r in second["tasks"]] == ["t4", "t3", "t2"]
    assert [r["task_id"] for r in third["tasks"]] == ["t1"]
    assert third["next"] is None
    assert (first["total"], second["total"]) == (7, 8)


def test_filters_match_one_status_or_every_task_not_ended() -> None:
    """`running` matches what has not ended; a status matches exactly; totals count matches."""
    index = TaskIndex()
    for n in range(1, 6):
        _submit(index, n, f"t{n}", ["a"])
    for n in (2, 4):
        index.add_event("task_finished", {"task_id": f"t{n}", "status": "completed"})
    index.add_event("subtask_started", {"task_id": "t1", "subtask_id": "a"})
    assert index.page("completed")["total"] == 2
    assert [r["task_id"] for r in index.page("running")["tasks"]] == ["t5", "t3", "t1"]
    assert index.page("failed") == {"tasks": [], "next": None, "total": 0}


def test_a_repeated_submission_is_the_same_task() -> None:
    """A submission published again after the dedup window keeps its first place."""
    index = TaskIndex()
    _submit(index, 1, "t", ["a"])
    _submit(index, 2, "u", ["a"])
    _submit(index, 3, "t", ["a", "b"])
    assert [r["task_id"] for r in index.page()["tasks"]] == ["u", "t"]
    assert index.entries["t"].subtask_ids == ["a"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"status": "done"}, "status: 'done' is not one of"),
        ({"limit": 0}, "limit: 0 is not between 1 and 500"),
        ({"limit": 501}, "limit: 501 is not between 1 and 500"),
        ({"cursor": "7"}, "cursor: '7' is not the `next` of a previous page"),
        ({"cursor": "s0"}, "cursor: 's0' is not the `next`"),
    ],
)
def test_bad_parameters_are_refused_naming_them(options: dict[str, object], message: str) -> None:
    """Each bad parameter gets a ValueError whose text starts with the parameter's name."""
    with pytest.raises(ValueError, match="^" + message.replace("(", r"\(")) as raised:
        TaskIndex().page(**options)  # type: ignore[arg-type]
    if "cursor" in options:
        assert isinstance(raised.value, CursorError)
