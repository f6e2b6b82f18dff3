"""`hivebus stats` without a bus: the scorecard of hand-built recorded events, and its options."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from hivebus.console.stats import (
    By,
    Thresholds,
    Window,
    parse_duration,
    percentile,
    scorecard,
    scorecard_json,
)
from hivebus.console.stats_command import stats
from hivebus.console.stats_reader import _position
from hivebus.console.stats_tally import Tally
from hivebus.contracts import (
    ApprovalKind,
    ApprovalRequested,
    DeadLetter,
    Decision,
    Limits,
    StepRecorded,
    SubTaskAssigned,
    SubTaskFinished,
    SubTaskStarted,
    SubTaskStatus,
    Usage,
)
from hivebus.core import configure_logging

T0 = datetime(2030, 1, 8, tzinfo=UTC)
"""Start of the window under test; the window is the day after it."""
WINDOW = Window(T0, T0 + timedelta(days=1))
BASELINE = Window(T0 - timedelta(days=7), T0)


def _at(seconds: float) -> datetime:
    return T0 + timedelta(hours=1, seconds=seconds)


def started(task: str, sub: str, role: str, at: datetime, run: str = "r1") -> dict[str, Any]:
    """A recorded `SubTaskStarted`, as its JSON body decodes."""
    event = SubTaskStarted(
        task_id=task, subtask_id=sub, attempt=1, run_id=run, role=role, model="m", ts=at
    )
    return event.model_dump(mode="json")


def tool_step(task: str, sub: str, step: int, *, failed: bool = False) -> dict[str, Any]:
    """A recorded tool `StepRecorded`, failed when `failed`."""
    event = StepRecorded(
        task_id=task,
        subtask_id=sub,
        attempt=1,
        run_id="r1",
        step=step,
        step_kind="tool",
        name="http_get",
        error="timeout" if failed else None,
    )
    return event.model_dump(mode="json")


def model_step(task: str, sub: str, step: int) -> dict[str, Any]:
    """A recorded model `StepRecorded` (never counted as a tool step)."""
    event = StepRecorded(
        task_id=task,
        subtask_id=sub,
        attempt=1,
        run_id="r1",
        step=step,
        step_kind="model",
        name="m",
        error="overloaded",
    )
    return event.model_dump(mode="json")


def finished(
    task: str,
    sub: str,
    role: str,
    at: datetime,
    *,
    status: SubTaskStatus = SubTaskStatus.COMPLETED,
    steps: int = 1,
    tokens: tuple[int, int] = (0, 0),
    cost: float = 0.0,
    kind: str | None = None,
    model: str | None = None,
    limit: str | None = None,
) -> dict[str, Any]:
    """A recorded `SubTaskFinished`."""
    event = SubTaskFinished(
        task_id=task,
        subtask_id=sub,
        attempt=1,
        run_id="r1",
        role=role,
        status=status,
        reason="done",
        usage=Usage(input_tokens=tokens[0], output_tokens=tokens[1], cost_usd=cost, steps=steps),
        limit=limit,
        subtask_kind=kind,
        model=model,
        ts=at,
    )
    return event.model_dump(mode="json")


def approval(task: str, sub: str, role: str, call: str) -> dict[str, Any]:
    """A recorded `ApprovalRequested` (an escalation)."""
    event = ApprovalRequested(
        task_id=task,
        approval_id=f"ap-{call}",
        subtask_id=sub,
        attempt=1,
        run_id="r1",
        role=role,
        step=1,
        call_id=call,
        approval_kind=ApprovalKind.TOOL_CALL,
        tool="send_email",
        allowed_decisions=[Decision.APPROVE, Decision.REJECT],
        expires_at=T0 + timedelta(days=30),
    )
    return event.model_dump(mode="json")


def dead_letter(task: str, at: datetime, original: dict[str, Any]) -> dict[str, Any]:
    """A recorded `DeadLetter` carrying `original`."""
    return DeadLetter(task_id=task, why="max_deliveries", original=original, ts=at).model_dump(
        mode="json"
    )


def assignment(task: str, sub: str, role: str, kind: str) -> dict[str, Any]:
    """The `SubTaskAssigned` a max-deliveries dead letter carries."""
    return SubTaskAssigned(
        task_id=task,
        subtask_id=sub,
        role=role,
        goal="g",
        prompt="p",
        limits=Limits(),
        subtask_kind=kind,
    ).model_dump(mode="json")


def recorded() -> list[dict[str, Any]]:
    """Four `writer` sub-tasks and one `reviewer` sub-task in the window, plus noise around."""
    w, r = "writer", "reviewer"
    sonnet, opus = "anthropic:claude-sonnet", "anthropic:claude-opus"
    return [
        # w1: completed in 10 s, 4 steps, 150 tokens, $0.01, tools 2 (1 failed), one approval
        started("t1", "w1", w, _at(0)),
        model_step("t1", "w1", 1),
        tool_step("t1", "w1", 2, failed=True),
        tool_step("t1", "w1", 2, failed=True),  # the same step again: counted once
        tool_step("t1", "w1", 3),
        approval("t1", "w1", w, "c1"),
        approval("t1", "w1", w, "c2"),  # a second approval: still one escalated sub-task
        started("t1", "w1", w, _at(5), run="r1"),  # the resumed run: the first start counts
        finished(
            "t1",
            "w1",
            w,
            _at(10),
            steps=4,
            tokens=(100, 50),
            cost=0.01,
            kind="invoice",
            model=sonnet,
        ),
        finished("t1", "w1", w, _at(99), status=SubTaskStatus.FAILED),  # a repeat: ignored
        # w2: completed in 20 s, 6 steps, 300 tokens, $0.02, tools 3 (none failed)
        started("t2", "w2", w, _at(0)),
        tool_step("t2", "w2", 1),
        tool_step("t2", "w2", 2),
        tool_step("t2", "w2", 3),
        finished(
            "t2",
            "w2",
            w,
            _at(20),
            steps=6,
            tokens=(200, 100),
            cost=0.02,
            kind="invoice",
            model=sonnet,
        ),
        # w3: failed at max_steps in 40 s, 10 steps, 500 tokens, $0.03, tools 1 (failed)
        started("t3", "w3", w, _at(0)),
        tool_step("t3", "w3", 1, failed=True),
        finished(
            "t3",
            "w3",
            w,
            _at(40),
            status=SubTaskStatus.BUDGET_EXCEEDED,
            steps=10,
            tokens=(300, 200),
            cost=0.03,
            kind="invoice",
            model=opus,
            limit="max_steps",
        ),
        # w4: completed, 8 steps, 100 tokens, $0.04, its start not read: no latency
        finished("t4", "w4", w, _at(30), steps=8, tokens=(50, 50), cost=0.04, kind="invoice"),
        # r1: completed in 5 s, 2 steps, 20 tokens, $0.001
        started("t5", "r1", r, _at(0)),
        finished(
            "t5",
            "r1",
            r,
            _at(5),
            steps=2,
            tokens=(10, 10),
            cost=0.001,
            kind="review",
            model="anthropic:claude-haiku",
        ),
        # outside the window: an hour before it, and at its end (the next window)
        finished("t6", "w6", w, T0 - timedelta(hours=1), steps=50, kind="invoice"),
        finished("t7", "w7", w, WINDOW.end, steps=50, kind="invoice"),
        # dead letters: one of a writer's assignment, one of a task (no role: the total only)
        dead_letter("t8", _at(1), assignment("t8", "w8", w, "invoice")),
        dead_letter("t9", _at(2), {"task_id": "t9", "goal": "g"}),
        dead_letter("t8", T0 - timedelta(days=2), assignment("t8", "w9", w, "invoice")),
    ]


def tally_of(events: list[dict[str, Any]]) -> Tally:
    """A tally of `events`, fed as the command feeds it: JSON bodies."""
    tally = Tally()
    for event in events:
        tally.add_json(json.dumps(event).encode())
    return tally


def test_the_scorecard_by_role_matches_the_hand_computed_numbers() -> None:
    """Every figure of the writer and reviewer rows, computed by hand from `recorded()`."""
    card = scorecard(tally_of(recorded()), By.ROLE, WINDOW)
    rows = {row.key: row.now for row in card.rows}
    assert list(rows) == ["reviewer", "writer"]
    writer = rows["writer"]
    assert writer.subtasks == 4  # w1..w4; w6 (before) and w7 (at the end) are outside
    assert writer.completed == 3
    assert writer.completion_rate == pytest.approx(0.75)  # 3 / 4
    assert writer.steps_mean == pytest.approx(7.0)  # (4 + 6 + 10 + 8) / 4 = 28 / 4
    assert writer.steps_p50 == 6  # sorted 4 6 8 10: rank ceil(0.50 * 4) = 2 -> 6
    assert writer.steps_p95 == 10  # rank ceil(0.95 * 4) = 4 -> 10
    assert writer.latency_p50_s == pytest.approx(20.0)  # 10 20 40 (w4 unknown): rank 2 -> 20
    assert writer.latency_p95_s == pytest.approx(40.0)  # rank ceil(0.95 * 3) = 3 -> 40
    assert writer.tokens_per_subtask == pytest.approx(262.5)  # (150 + 300 + 500 + 100) / 4
    assert writer.cost_per_subtask_usd == pytest.approx(0.025)  # (.01 + .02 + .03 + .04) / 4
    assert (writer.tool_steps, writer.tool_errors) == (6, 2)  # 2 + 3 + 1 tools, 1 + 0 + 1 failed
    assert writer.tool_error_rate == pytest.approx(1 / 3)  # 2 / 6
    assert writer.limit_exceeded_rate == pytest.approx(0.25)  # w3 / 4
    assert writer.escalation_rate == pytest.approx(0.25)  # w1 (two requests) / 4
    assert writer.dlq == 1  # t8's in the window; the one two days before is not
    reviewer = rows["reviewer"]
    assert (reviewer.subtasks, reviewer.completion_rate) == (1, 1.0)
    assert (reviewer.steps_p50, reviewer.latency_p95_s) == (2, 5.0)
    assert reviewer.tool_error_rate is None  # no tool steps: no rate, not 0
    assert card.dlq == 2  # t8's and t9's (a task's, in no row)
    assert card.baseline is None
    assert all(row.before is None and row.flags == () for row in card.rows)


def test_the_window_holds_its_start_and_not_its_end() -> None:
    """A sub-task finished exactly at the start is in; one at the end is in the next window."""
    events = [
        finished("a", "s1", "writer", T0),
        finished("b", "s2", "writer", T0 - timedelta(microseconds=1)),
        finished("c", "s3", "writer", WINDOW.end),
    ]
    card = scorecard(tally_of(events), By.ROLE, WINDOW)
    assert [(row.key, row.now.subtasks) for row in card.rows] == [("writer", 1)]
    earlier = scorecard(tally_of(events), By.ROLE, BASELINE)
    assert earlier.rows[0].now.subtasks == 1


def test_rows_by_kind_and_by_model() -> None:
    """`--by kind` groups by the plan's kind; `--by model` by the answering model, None last."""
    tally = tally_of(recorded())
    kinds = {row.key: row.now for row in scorecard(tally, By.KIND, WINDOW).rows}
    assert list(kinds) == ["invoice", "review"]
    assert (kinds["invoice"].subtasks, kinds["invoice"].dlq) == (4, 1)
    models = scorecard(tally, By.MODEL, WINDOW).rows
    assert [row.key for row in models] == [
        "anthropic:claude-haiku",
        "anthropic:claude-opus",
        "anthropic:claude-sonnet",
        None,
    ]
    sonnet = models[2].now
    assert (sonnet.subtasks, sonnet.steps_mean) == (2, 5.0)  # w1, w2: (4 + 6) / 2
    assert sonnet.tool_error_rate == pytest.approx(0.2)  # w1 1 of 2, w2 0 of 3: 1 / 5
    unnamed = models[3].now
    assert (unnamed.subtasks, unnamed.dlq) == (1, 1)  # w4; t8's assignment names no model


def _runs(role: str, window: Window, count: int, completed: int, steps: int) -> list[Any]:
    return [
        finished(
            f"{role}-{window.start:%d}-{n}",
            "s",
            role,
            window.start + timedelta(minutes=n),
            status=SubTaskStatus.COMPLETED if n < completed else SubTaskStatus.FAILED,
            steps=steps,
        )
        for n in range(count)
    ]


def test_compare_flags_a_planted_regression_and_not_an_unchanged_row() -> None:
    """Invoicer: completion 0.9 -> 0.5 and steps 8 -> 14 are flagged; the steady row is not."""
    events = [
        *_runs("invoicer", BASELINE, 10, 9, 8),
        *_runs("invoicer", WINDOW, 10, 5, 14),
        *_runs("steady", BASELINE, 10, 9, 8),
        *_runs("steady", WINDOW, 10, 8, 9),  # 0.9 -> 0.8: exactly 0.10, not more; 8 -> 9: +12.5%
        *_runs("newcomer", WINDOW, 3, 3, 2),
    ]
    card = scorecard(tally_of(events), By.ROLE, WINDOW, BASELINE)
    rows = {row.key: row for row in card.rows}
    invoicer = rows["invoicer"]
    assert invoicer.flags == ("completion_rate", "steps")
    assert invoicer.before is not None
    assert (invoicer.before.completion_rate, invoicer.now.completion_rate) == (0.9, 0.5)
    assert (invoicer.before.steps_mean, invoicer.now.steps_mean) == (8.0, 14.0)  # +75%
    assert rows["steady"].flags == ()
    assert rows["newcomer"].flags == ()  # nothing before to compare with
    assert rows["newcomer"].before is not None
    assert rows["newcomer"].before.subtasks == 0
    strict = scorecard(tally_of(events), By.ROLE, WINDOW, BASELINE, Thresholds(0.05, 0.10))
    assert {row.key: row.flags for row in strict.rows}["steady"] == ("completion_rate", "steps")


def test_the_json_has_stable_keys_and_nulls_for_what_is_missing() -> None:
    """`--json`: every documented key on every row, null baseline without `--compare`."""
    out = scorecard_json(scorecard(tally_of(recorded()), By.ROLE, WINDOW))
    assert list(out) == ["by", "window", "baseline", "thresholds", "events", "dlq", "rows"]
    assert (out["by"], out["baseline"], out["thresholds"], out["dlq"]) == ("role", None, None, 2)
    writer = out["rows"][1]
    assert writer["key"] == "writer"
    assert writer["tool_error_rate"] == 0.3333
    assert (writer["baseline"], writer["flags"]) == (None, [])
    compared = scorecard_json(scorecard(tally_of(recorded()), By.ROLE, WINDOW, BASELINE))
    assert compared["thresholds"] == {"rate": 0.10, "steps": 0.25}
    assert compared["rows"][1]["baseline"]["subtasks"] == 1  # w6, the hour before the window
    assert set(compared["rows"][1]) == set(writer)


def test_undecodable_and_incomplete_events_are_skipped_not_fatal() -> None:
    """A body that is not JSON, or an event missing a field, is counted in `skipped`."""
    tally = Tally()
    tally.add_json(b"{not json")
    tally.add_json(b"[1, 2]")
    tally.add({"kind": "subtask_finished", "task_id": "t"})
    tally.add({"kind": "task_finished", "task_id": "t"})  # not read by the scorecard: fine
    assert (tally.events, tally.skipped) == (4, 3)


@pytest.mark.parametrize(
    ("text", "seconds"), [("30m", 1800), ("1h", 3600), ("24h", 86400), ("7d", 604800)]
)
def test_durations(text: str, seconds: int) -> None:
    """`Nm`, `Nh`, `Nd` are minutes, hours, days."""
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "0h", "5x", "h", "-1h", "1.5h", "24"])
def test_bad_durations_say_what_is_accepted(text: str) -> None:
    """Anything else is refused, naming the accepted form."""
    with pytest.raises(ValueError, match="use a number and m, h or d"):
        parse_duration(text)


def test_percentiles_are_nearest_rank() -> None:
    """p50 and p95 are values of the sample (nearest rank), None for none."""
    assert percentile([5.0, 1.0, 3.0], 50) == 3.0
    assert percentile([float(n) for n in range(1, 21)], 95) == 19.0  # rank ceil(0.95 * 20)
    assert percentile([], 50) is None


def test_bad_options_are_usage_errors_before_any_connection() -> None:
    """A bad `--since`, `--compare`, `--by` or threshold exits 2 with what is wrong."""
    app = typer.Typer()
    app.command()(stats)
    runner = CliRunner()
    for args, says in [
        (["--since", "5x"], "is not a duration"),
        (["--compare", "1w"], "is not a duration"),
        (["--by", "team"], "--by"),
        (["--threshold-rate", "1.5"], "--threshold-rate"),
        (["--threshold-steps", "-1"], "--threshold-steps"),
    ]:
        done = runner.invoke(app, args)
        assert done.exit_code == 2, args
        assert says in done.output, (args, done.output)
    try:
        done = runner.invoke(app, ["--since", "1h"])  # no HIVEBUS_NATS_URL: says to set it
    finally:
        configure_logging()  # the command bound the logs to the runner's stderr, closed now
    assert done.exit_code == 2


def test_the_reader_finds_the_stream_sequence_and_pending_in_both_reply_forms() -> None:
    """A JetStream reply names the message's stream sequence and what is pending after it."""
    assert _position("$JS.ACK.EVENTS.c1.1.42.7.1700000000000000000.3") == (42, 3)
    assert _position("$JS.ACK.hub.ACCHASH.EVENTS.c1.1.42.7.1700000000000000000.0.rnd") == (42, 0)
