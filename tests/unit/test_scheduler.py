"""The scheduler on an in-memory store and a fake event sink: order, failures, crashes, cost."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import BaseModel

from hivebus.contracts import (
    PLANNING_SUBTASK,
    DeadLetter,
    DeadlineReached,
    DependencyOutput,
    Limits,
    Plan,
    SubTaskAssigned,
    SubTaskFinished,
    SubTaskStarted,
    SubTaskStatus,
    TaskFinished,
    TaskRejected,
    TaskStatus,
    Usage,
)
from hivebus.contracts.knowledge import NoteWrite
from hivebus.core import HivebusConfig
from hivebus.orchestrator import Graph, MemoryStore, Scheduler
from hivebus.orchestrator.handover import HandoverNotReadyError

S = SubTaskStatus
TASK = "t1"
RUN_USAGE = Usage(input_tokens=100, output_tokens=20, cost_usd=0.01, steps=2, tool_calls=1)
START = datetime(2025, 1, 1, tzinfo=UTC)


class FakeNotes:
    """The knowledge store's answer to "is this note committed?": yes, unless a test says."""

    def __init__(self) -> None:
        """Every note is committed until `pending` names it."""
        self.pending: set[str] = set()
        self.asked: list[str] = []

    async def committed(self, write_id: str) -> bool | None:
        """None (not yet) for a pending write, else True."""
        self.asked.append(write_id)
        return None if write_id in self.pending else True


class OutboxDownError(RuntimeError):
    """The fake bus refused (or lost the acknowledgement of) a publish."""


class FakeOutbox:
    """Collects what the scheduler publishes; can fail the N-th dispatch like a broken bus."""

    async def publish(self, message: BaseModel) -> None:
        """Take one message, as the bus would, and keep it by kind."""
        keep: dict[type[BaseModel], Callable[[Any], Awaitable[None]]] = {
            DeadlineReached: self.schedule_deadline,
            DeadLetter: self.dead_letter,
            NoteWrite: self.note,
            SubTaskAssigned: self.dispatch,
            TaskRejected: self.rejected,
            TaskFinished: self.finished,
        }
        await keep[type(message)](message)

    def __init__(self, fail_on: int | None = None, *, after_publish: bool = False) -> None:
        """Fail dispatch call number `fail_on`, before or after the message is stored."""
        self.fail_on = fail_on
        self.after_publish = after_publish
        self.dispatch_calls = 0
        self.dispatched: list[SubTaskAssigned] = []
        self.rejections: list[TaskRejected] = []
        self.finishes: list[TaskFinished] = []
        self.deadlines: list[DeadlineReached] = []
        self.dead_letters: list[DeadLetter] = []
        self.notes: list[NoteWrite] = []

    async def schedule_deadline(self, event: DeadlineReached) -> None:
        """Keep the scheduled deadline (a test delivers it by calling `stop`)."""
        self.deadlines.append(event)

    async def dead_letter(self, event: DeadLetter) -> None:
        """Keep a dead letter."""
        self.dead_letters.append(event)

    async def note(self, write: NoteWrite) -> None:
        """Keep a note handed to the knowledge store."""
        self.notes.append(write)

    async def dispatch(self, assignment: SubTaskAssigned) -> None:
        """Store a dispatch, unless this is the call that fails."""
        self.dispatch_calls += 1
        crash = self.dispatch_calls == self.fail_on
        if crash and not self.after_publish:
            raise OutboxDownError("bus down before the publish")
        self.dispatched.append(assignment)
        if crash:
            raise OutboxDownError("publish stored, acknowledgement lost")

    async def rejected(self, event: TaskRejected) -> None:
        """Store a rejection."""
        self.rejections.append(event)

    async def finished(self, event: TaskFinished) -> None:
        """Store a task's end."""
        self.finishes.append(event)

    @property
    def delivered(self) -> list[SubTaskAssigned]:
        """Dispatches as agents see them: the bus drops repeats of a message id."""
        seen: dict[tuple[str, str, int], SubTaskAssigned] = {}
        for assignment in self.dispatched:
            seen.setdefault(
                (assignment.task_id, assignment.subtask_id, assignment.attempt), assignment
            )
        return list(seen.values())

    @property
    def results(self) -> list[TaskFinished]:
        """Distinct `TaskFinished` messages (one message id per task on the bus)."""
        seen: dict[str, TaskFinished] = {}
        for event in self.finishes:
            seen.setdefault(event.task_id, event)
        assert all(event == seen[event.task_id] for event in self.finishes), "republished changed"
        return list(seen.values())

    def order(self) -> list[str]:
        """Sub-task ids in the order they were first dispatched."""
        return [assignment.subtask_id for assignment in self.delivered]


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self) -> None:
        """Start at a fixed instant."""
        self.at = START

    def now(self) -> datetime:
        """The fixed current time."""
        return self.at

    def monotonic(self) -> float:
        """Seconds since the start."""
        return (self.at - START).total_seconds()


def node(sid: str, deps: Iterable[str] = (), role: str = "writer", **fields: Any) -> dict[str, Any]:
    """A raw sub-task."""
    return {"id": sid, "role": role, "prompt": f"do {sid}", "depends_on": list(deps), **fields}


def plan(*nodes: dict[str, Any], task_id: str = TASK) -> dict[str, Any]:
    """A raw submission."""
    return {"task_id": task_id, "goal": "Ship it.", "plan": {"subtasks": list(nodes)}}


DIAMOND = plan(node("a"), node("b", ["a"]), node("c", ["a"]), node("d", ["b", "c"]))


def output_of(sid: str) -> str:
    """What the fake agent answers for a sub-task."""
    return f"{sid}-output"


class Hive:
    """A scheduler on a `MemoryStore` and a `FakeOutbox`, plus fake agents that obey it."""

    def __init__(self, config: HivebusConfig, outbox: FakeOutbox | None = None) -> None:
        """Wire the scheduler to in-memory fakes."""
        self.store = MemoryStore()
        self.outbox = outbox or FakeOutbox()
        self.clock = FakeClock()
        self.notes = FakeNotes()
        self.scheduler = Scheduler(self.store, self.outbox, config, self.notes, clock=self.clock)
        self.ran: list[tuple[str, int]] = []

    async def deliver(self, handle: Callable[[], Awaitable[None]], attempts: int = 5) -> None:
        """Run a handler like JetStream delivers a message: an error means it comes again."""
        for _ in range(attempts):
            try:
                await handle()
            except OutboxDownError:
                continue
            return
        pytest.fail(f"still failing after {attempts} deliveries")

    async def submit(self, raw: Any, task_id: str = TASK) -> None:
        """Deliver a submission."""
        await self.deliver(lambda: self.scheduler.submit(raw, task_id))

    async def start(self, sid: str, attempt: int = 1, task_id: str = TASK) -> None:
        """Deliver a `SubTaskStarted`."""
        event = SubTaskStarted(
            task_id=task_id,
            subtask_id=sid,
            attempt=attempt,
            run_id=f"run-{sid}-{attempt}",
            role="writer",
            model="scripted:x",
        )
        await self.deliver(lambda: self.scheduler.started(event))

    def result(
        self,
        sid: str,
        status: SubTaskStatus = S.COMPLETED,
        attempt: int = 1,
        task_id: str = TASK,
    ) -> SubTaskFinished:
        """The terminal event a fake agent would publish."""
        return SubTaskFinished(
            task_id=task_id,
            subtask_id=sid,
            attempt=attempt,
            run_id=f"run-{sid}-{attempt}",
            role="writer",
            status=status,
            reason="done" if status == S.COMPLETED else f"it {status.value}",
            output=output_of(sid) if status == S.COMPLETED else None,
            usage=RUN_USAGE,
        )

    async def finish(self, event: SubTaskFinished) -> None:
        """Deliver a `SubTaskFinished`."""
        await self.deliver(lambda: self.scheduler.finished(event))

    async def run(
        self, outcomes: dict[str, SubTaskStatus] | None = None, *, started: bool = True
    ) -> None:
        """Play the agents: run each delivered sub-task once, in order, until none is left."""
        outcomes = outcomes or {}
        done = set(self.ran)
        cursor = 0
        while cursor < len(self.outbox.dispatched):
            assignment = self.outbox.dispatched[cursor]
            cursor += 1
            sid = assignment.subtask_id
            if (sid, assignment.attempt) in done or sid == PLANNING_SUBTASK:
                continue  # a repeated message id: the bus drops it; a test answers the planner
            done.add((sid, assignment.attempt))
            self.ran.append((sid, assignment.attempt))
            if started:
                await self.start(sid, assignment.attempt, assignment.task_id)
            status = outcomes.get(sid, S.COMPLETED)
            await self.finish(self.result(sid, status, assignment.attempt, assignment.task_id))

    async def state(self, sid: str, task_id: str = TASK) -> Any:
        """One sub-task's stored state."""
        return await self.store.read_subtask(task_id, sid)

    def the_result(self) -> TaskFinished:
        """The one distinct `TaskFinished` published."""
        results = self.outbox.results
        assert len(results) == 1, results
        return results[0]


def usage_times(n: int) -> Usage:
    """`RUN_USAGE` summed `n` times (wall time zero: the fake clock does not move)."""
    total = Usage()
    for _ in range(n):
        total = total.plus(RUN_USAGE)
    return total


@pytest.fixture
def hive(hive_config: HivebusConfig) -> Hive:
    """A fresh scheduler with fakes."""
    return Hive(hive_config)


async def test_diamond_runs_in_dependency_order(hive: Hive) -> None:
    """A diamond dispatches a, then b and c, then d, and completes with d's output."""
    await hive.submit(DIAMOND)
    assert hive.outbox.order() == ["a"]
    await hive.run()
    assert hive.outbox.order() == ["a", "b", "c", "d"]
    assert len(hive.outbox.dispatched) == 4
    result = hive.the_result()
    assert result.status == TaskStatus.COMPLETED
    assert not result.degraded
    assert result.output == {"d": output_of("d")}
    assert result.usage == usage_times(4)
    assert [(s.id, s.status) for s in result.subtasks] == [(sid, S.COMPLETED) for sid in "abcd"]
    assert all(s.output == output_of(s.id) and s.blocked_by is None for s in result.subtasks)
    meta = await hive.store.read_meta(TASK)
    assert meta is not None
    assert meta.status == TaskStatus.COMPLETED
    assert meta.finished == meta.total == 4


async def test_dispatch_carries_dependency_outputs(hive: Hive) -> None:
    """Each `SubTaskAssigned` lists its dependencies' outputs in plan order."""
    await hive.submit(DIAMOND)
    await hive.run()
    deps = {a.subtask_id: a.dependencies for a in hive.outbox.delivered}
    assert deps["a"] == []
    assert deps["b"] == [DependencyOutput(subtask_id="a", output=output_of("a"))]
    assert deps["c"] == [DependencyOutput(subtask_id="a", output=output_of("a"))]
    assert deps["d"] == [
        DependencyOutput(subtask_id="b", output=output_of("b")),
        DependencyOutput(subtask_id="c", output=output_of("c")),
    ]


async def test_every_dispatch_follows_its_dependencies(hive: Hive) -> None:
    """No sub-task is dispatched before every one of its dependencies has finished."""
    raw = plan(
        node("a"),
        node("b"),
        node("c", ["a"]),
        node("d", ["a", "b"]),
        node("e", ["c", "d"]),
        node("f", ["b"]),
        node("g", ["e", "f", "a"]),
    )
    await hive.submit(raw)
    await hive.run()
    deps = {n["id"]: n["depends_on"] for n in raw["plan"]["subtasks"]}
    order = hive.outbox.order()
    ran = [sid for sid, _ in hive.ran]
    assert sorted(order) == sorted(deps)
    for sid in order:
        assert all(ran.index(dep) < ran.index(sid) for dep in deps[sid]), sid
    assert hive.the_result().output == {"g": output_of("g")}


async def test_assignment_carries_plan_fields_and_role_defaults(
    hive: Hive, hive_config: HivebusConfig
) -> None:
    """An assignment has the goal, prompt, input, model and the spec's limits or the role's."""
    own = {"max_steps": 3, "max_tokens": 1_000, "max_wall_s": 10}
    raw = plan(
        node("a", input={"k": 1}, model="anthropic:claude-haiku-4", limits=own),
        node("b", role="reviewer", output_schema={"type": "string"}),
    )
    await hive.submit(raw)
    by_id = {a.subtask_id: a for a in hive.outbox.delivered}
    a, b = by_id["a"], by_id["b"]
    assert (a.goal, a.prompt, a.input, a.model) == (
        "Ship it.",
        "do a",
        {"k": 1},
        raw["plan"]["subtasks"][0]["model"],
    )
    assert a.limits == Limits(**own)
    assert a.attempt == 1
    assert b.limits == hive_config.roles["reviewer"].limits
    assert (b.role, b.model, b.output_schema) == ("reviewer", None, {"type": "string"})


BRANCHY = plan(
    node("a"),
    node("b", ["a"]),
    node("c", ["b"]),
    node("d", ["c", "x"]),
    node("x"),
    node("y", ["x"]),
)


@pytest.mark.parametrize("failure", [S.FAILED, S.BUDGET_EXCEEDED, S.TIMEOUT, S.LOOP_DETECTED])
async def test_failure_blocks_transitive_dependents(hive: Hive, failure: SubTaskStatus) -> None:
    """A failed sub-task blocks every transitive dependent, naming itself as the root cause."""
    await hive.submit(BRANCHY)
    await hive.run({"b": failure})
    assert sorted(hive.outbox.order()) == ["a", "b", "x", "y"], "blocked work is never dispatched"
    result = hive.the_result()
    by_id = {s.id: s for s in result.subtasks}
    assert by_id["b"].status == failure
    for sid in ("c", "d"):
        assert by_id[sid].status == S.BLOCKED
        assert by_id[sid].blocked_by == "b"
        assert "'b'" in by_id[sid].reason
    for sid in ("a", "x", "y"):
        assert by_id[sid].status == S.COMPLETED
        assert by_id[sid].blocked_by is None
    assert result.status == TaskStatus.PARTIAL
    assert result.degraded
    assert "b " + failure.value in result.reason
    assert result.output == {"a": output_of("a"), "y": output_of("y")}
    assert result.usage == usage_times(4)
    meta = await hive.store.read_meta(TASK)
    assert meta is not None
    assert meta.status == TaskStatus.PARTIAL


async def test_independent_branch_completes_after_a_failure(hive: Hive) -> None:
    """A branch that does not depend on a failed sub-task still runs to completion afterwards."""
    await hive.submit(plan(node("a"), node("b", ["a"]), node("x"), node("y", ["x"])))
    await hive.start("a")
    await hive.finish(hive.result("a", S.FAILED))
    assert (await hive.state("b")).status == S.BLOCKED
    assert hive.outbox.results == []
    await hive.run()
    assert hive.outbox.order() == ["a", "x", "y"]
    result = hive.the_result()
    assert result.status == TaskStatus.PARTIAL
    assert result.output == {"y": output_of("y")}


async def test_nothing_completed_means_failed(hive: Hive) -> None:
    """When the only root fails, its whole chain is blocked and the task ends failed."""
    await hive.submit(plan(node("a"), node("b", ["a"]), node("c", ["b"])))
    await hive.run({"a": S.FAILED})
    result = hive.the_result()
    assert result.status == TaskStatus.FAILED
    assert result.degraded
    assert result.output is None
    assert [(s.id, s.status, s.blocked_by) for s in result.subtasks] == [
        ("a", S.FAILED, None),
        ("b", S.BLOCKED, "a"),
        ("c", S.BLOCKED, "a"),
    ]


async def test_first_failure_is_the_root_cause_of_a_shared_dependent(hive: Hive) -> None:
    """A dependent of two failed sub-tasks is blocked once, by the one that failed first."""
    await hive.submit(plan(node("a"), node("b"), node("c", ["a", "b"])))
    await hive.run({"a": S.FAILED, "b": S.TIMEOUT})
    by_id = {s.id: s for s in hive.the_result().subtasks}
    assert by_id["c"].blocked_by == "a"
    assert hive.the_result().status == TaskStatus.FAILED


async def test_duplicate_finished_is_applied_once(hive: Hive) -> None:
    """Delivering every `SubTaskFinished` twice changes nothing: same dispatches, one result."""
    await hive.submit(DIAMOND)
    for sid in "abcd":
        await hive.start(sid)
        event = hive.result(sid)
        await hive.finish(event)
        await hive.finish(event)
    assert len(hive.outbox.dispatched) == 4
    assert hive.outbox.order() == ["a", "b", "c", "d"]
    result = hive.the_result()  # a repeat may republish it, with the same message id
    assert result.status == TaskStatus.COMPLETED
    assert result.usage == usage_times(4), "usage is not counted twice"
    meta = await hive.store.read_meta(TASK)
    assert meta is not None
    assert meta.finished == 4


async def test_duplicate_after_the_end_changes_no_state(hive: Hive) -> None:
    """A repeat of an early result after the task ended writes nothing and dispatches nothing."""
    await hive.submit(DIAMOND)
    await hive.run()
    writes = hive.store.writes
    await hive.finish(hive.result("a"))
    await hive.start("b")
    assert hive.store.writes == writes
    assert len(hive.outbox.dispatched) == 4
    assert hive.the_result().status == TaskStatus.COMPLETED  # republished at most, unchanged


async def test_other_attempt_result_is_ignored(hive: Hive) -> None:
    """A result for an attempt other than the current one is ignored; the current one applies."""
    await hive.submit(DIAMOND)
    await hive.start("a")
    await hive.finish(hive.result("a", attempt=2))
    assert (await hive.state("a")).status == S.RUNNING
    assert hive.outbox.order() == ["a"]
    await hive.finish(hive.result("a", attempt=1))
    assert (await hive.state("a")).status == S.COMPLETED
    assert hive.outbox.order() == ["a", "b", "c"]


async def test_stale_attempt_result_is_ignored(hive: Hive) -> None:
    """After a sub-task moved on to attempt 2, a late attempt-1 result or start changes nothing."""
    await hive.submit(DIAMOND)

    def next_attempt(cur: Any) -> Any:
        return cur.model_copy(update={"attempt": 2})

    await hive.store.update_subtask(TASK, "a", next_attempt)
    before = await hive.state("a")
    await hive.start("a", attempt=1)
    await hive.finish(hive.result("a", S.FAILED, attempt=1))
    assert await hive.state("a") == before
    assert hive.outbox.order() == ["a"]
    assert hive.outbox.results == []
    await hive.start("a", attempt=2)
    await hive.finish(hive.result("a", attempt=2))
    assert (await hive.state("a")).status == S.COMPLETED
    assert hive.outbox.order() == ["a", "b", "c"]


async def test_finished_before_started_is_applied(hive: Hive) -> None:
    """A result that overtakes its start event is applied; the late start is then ignored."""
    await hive.submit(DIAMOND)
    await hive.finish(hive.result("a"))
    state = await hive.state("a")
    assert state.status == S.COMPLETED
    assert state.run_id == "run-a-1"
    await hive.start("a")
    assert await hive.state("a") == state
    await hive.run(started=False)
    assert hive.the_result().status == TaskStatus.COMPLETED


async def test_duplicate_submission_dispatches_each_root_once(hive: Hive) -> None:
    """The same task submitted twice (and again after it ended) dispatches each root once."""
    raw = plan(node("a"), node("b"), node("c", ["a", "b"]))
    await hive.submit(raw)
    await hive.submit(raw)
    assert hive.outbox.order() == ["a", "b"]
    assert len(hive.outbox.dispatched) == 2
    await hive.run()
    await hive.submit(raw)
    assert len(hive.outbox.dispatched) == 3
    assert hive.the_result().status == TaskStatus.COMPLETED
    assert hive.outbox.rejections == []


async def test_resubmission_with_another_plan_keeps_the_first(hive: Hive) -> None:
    """A second submission under the same task id cannot replace the stored plan."""
    await hive.submit(plan(node("a")))
    await hive.submit(plan(node("z")))
    await hive.run()
    assert hive.outbox.order() == ["a"]
    assert [s.id for s in hive.the_result().subtasks] == ["a"]


async def test_invalid_plan_gives_one_rejection_with_every_error(hive: Hive) -> None:
    """A bad plan yields exactly one `TaskRejected` listing all errors, and no state or work."""
    raw = plan(node("a", ["b"]), node("b", ["a"]), node("c", role="poet"), node("d", ["ghost"]))
    await hive.submit(raw)
    assert len(hive.outbox.rejections) == 1
    rejection = hive.outbox.rejections[0]
    assert rejection.task_id == TASK
    assert len(rejection.errors) == 3
    assert any("cycle" in e for e in rejection.errors)
    assert any("'poet'" in e for e in rejection.errors)
    assert any("'ghost'" in e for e in rejection.errors)
    assert hive.outbox.dispatched == []
    assert hive.outbox.finishes == []
    assert hive.store.writes == 0


async def test_junk_submission_is_rejected_under_the_given_id(hive: Hive) -> None:
    """Input that is not even an object is rejected under the task id the caller passed."""
    await hive.submit("not JSON", task_id="from-header")
    assert [(r.task_id, r.errors) for r in hive.outbox.rejections] == [
        ("from-header", ["submission: must be a JSON object"])
    ]


async def test_task_wall_time_is_elapsed_time(hive: Hive) -> None:
    """The task's usage sums its runs but its wall time is the time since submission."""
    await hive.submit(plan(node("a"), node("b")))
    hive.clock.at = START + timedelta(seconds=42.5)
    await hive.run()
    usage = hive.the_result().usage
    assert usage.wall_s == 42.5
    assert usage.input_tokens == 2 * RUN_USAGE.input_tokens
    assert usage.cost_usd == pytest.approx(2 * RUN_USAGE.cost_usd)


# -- crashes -------------------------------------------------------------------------------

CRASHY = plan(
    node("a"),
    node("b", ["a"]),
    node("c", ["a"]),
    node("d", ["b", "c"]),
    node("e", ["a"]),
    node("f", ["d", "e"]),
    node("g"),
)
CRASHY_IDS = [n["id"] for n in CRASHY["plan"]["subtasks"]]


@pytest.mark.parametrize("after_publish", [False, True], ids=["before-publish", "ack-lost"])
@pytest.mark.parametrize("fail_on", range(1, len(CRASHY_IDS) + 1))
async def test_crash_on_dispatch_then_redelivery_finishes(
    hive_config: HivebusConfig, fail_on: int, *, after_publish: bool
) -> None:
    """A dispatch that fails mid-event is redone when the same event is delivered again."""
    hive = Hive(hive_config, FakeOutbox(fail_on, after_publish=after_publish))
    await hive.submit(CRASHY)
    await hive.run()
    assert hive.outbox.dispatch_calls == len(CRASHY_IDS) + 1, "one dispatch failed and was redone"
    keys = {(a.subtask_id, a.attempt) for a in hive.outbox.dispatched}
    assert keys == {(sid, 1) for sid in CRASHY_IDS}
    assert sorted(sid for sid, _ in hive.ran) == sorted(CRASHY_IDS), "each sub-task ran once"
    result = hive.the_result()
    assert result.status == TaskStatus.COMPLETED
    assert result.usage == usage_times(len(CRASHY_IDS))
    assert result.output == {"f": output_of("f"), "g": output_of("g")}
    f = next(a for a in hive.outbox.delivered if a.subtask_id == "f")
    assert [d.output for d in f.dependencies] == [output_of("d"), output_of("e")]


async def test_crash_on_submit_resumes_remaining_roots(hive_config: HivebusConfig) -> None:
    """A submission that crashed after dispatching one root dispatches the others on redelivery."""
    hive = Hive(hive_config, FakeOutbox(2))
    raw = plan(node("a"), node("b"), node("c"))
    with pytest.raises(OutboxDownError):
        await hive.scheduler.submit(raw, TASK)
    assert "b" not in hive.outbox.order()  # roots go out concurrently: b's publish failed
    await hive.scheduler.submit(raw, TASK)
    assert sorted(hive.outbox.order()) == ["a", "b", "c"]
    assert len(hive.outbox.dispatched) == 3


async def test_a_result_for_a_subtask_never_dispatchable_is_ignored(hive: Hive) -> None:
    """A result for a sub-task whose dependencies did not complete changes nothing."""
    await hive.submit(plan(node("a"), node("b", ["a"])))
    await hive.scheduler.started(
        SubTaskStarted(
            task_id=TASK, subtask_id="b", attempt=1, run_id="r", role="writer", model="m"
        )
    )
    await hive.scheduler.finished(hive.result("b"))
    assert await hive.state("b") is None
    assert hive.outbox.order() == ["a"]


async def test_result_overtaking_the_dispatch_mark_is_applied(hive_config: HivebusConfig) -> None:
    """A result for a sub-task whose dispatch was published but not yet marked still applies."""
    hive = Hive(hive_config, FakeOutbox(2, after_publish=True))
    await hive.submit(plan(node("a"), node("b", ["a"])))
    with pytest.raises(OutboxDownError):
        await hive.scheduler.finished(hive.result("a"))  # b published, then the ack was lost
    assert hive.outbox.order() == ["a", "b"]
    assert (await hive.state("b")).status == S.PENDING  # its dispatch is not recorded yet
    await hive.start("b")  # b's dependency completed, so its run is real: `running`
    assert (await hive.state("b")).status == S.RUNNING
    await hive.scheduler.finished(hive.result("b"))  # the agent was faster than the redelivery
    await hive.scheduler.finished(hive.result("a"))
    assert hive.the_result().status == TaskStatus.COMPLETED


def test_repeated_dependency_counts_once_in_the_graph() -> None:
    """A plan that lists one dependency twice (validation rejects it) still has in-degree 1."""
    graph = Graph.from_plan(Plan.model_validate(plan(node("a"), node("b", ["a", "a"]))["plan"]))
    assert graph.in_degree == {"a": 0, "b": 1}
    assert graph.dependents["a"] == ("b",)


# -- cost ----------------------------------------------------------------------------------

V = 2_000


def chain(n: int) -> dict[str, Any]:
    """A chain of `n` sub-tasks, each depending on the one before."""
    return plan(node("n0"), *(node(f"n{i}", [f"n{i - 1}"]) for i in range(1, n)))


def fan_out(n: int) -> dict[str, Any]:
    """A fan-out: one root with `n - 1` dependents."""
    return plan(node("root"), *(node(f"n{i}", ["root"]) for i in range(1, n)))


def fan_in(n: int) -> dict[str, Any]:
    """A fan-in: `n - 1` roots and one sink that depends on all of them."""
    leaves = [f"n{i}" for i in range(1, n)]
    return plan(*(node(sid) for sid in leaves), node("sink", leaves))


@pytest.mark.parametrize(
    ("raw", "edges"),
    [(chain(V), V - 1), (fan_out(V), V - 1), (fan_in(V), V - 1)],
    ids=["chain", "fan-out", "fan-in"],
)
async def test_store_writes_are_linear(hive: Hive, raw: dict[str, Any], edges: int) -> None:
    """A 2,000-node chain, fan-out or fan-in finishes within 6 store writes per node and edge."""
    await hive.submit(raw)
    await hive.run()
    assert hive.the_result().status == TaskStatus.COMPLETED
    assert len(hive.outbox.dispatched) == V
    assert hive.store.writes <= 6 * (V + edges), hive.store.writes


async def test_a_one_sub_task_task_reads_no_state_it_wrote_itself(hive: Hive) -> None:
    """Accepting, dispatching, applying the result and finishing read nothing back.

    Each read is a request on the bus: the task was accepted by this call (no root can have
    been dispatched), the result was applied by this event (it cannot be counted yet), and
    this count made every sub-task finished (no `TaskFinished` can be stored yet).
    """
    await hive.submit(plan(node("only")))
    await hive.run()
    assert hive.the_result().status == TaskStatus.COMPLETED
    assert hive.store.reads == 0


async def test_a_redelivered_last_result_reads_and_publishes_the_stored_end(hive: Hive) -> None:
    """After the task ended, the same last result reads state again and adds no new end."""
    await hive.submit(plan(node("only")))
    await hive.run()
    reads, writes = hive.store.reads, hive.store.writes
    await hive.finish(hive.result("only"))
    assert hive.store.reads > reads
    assert hive.store.writes == writes
    assert hive.the_result().status == TaskStatus.COMPLETED


@pytest.mark.parametrize("build", [chain, fan_out], ids=["chain", "fan-out"])
async def test_store_writes_per_node_do_not_grow_with_size(
    hive_config: HivebusConfig, build: Callable[[int], dict[str, Any]]
) -> None:
    """Writes per node are the same for a 100-node and a 400-node plan (no hidden rescans)."""
    per_node = []
    for n in (100, 400):
        hive = Hive(hive_config)
        await hive.submit(build(n))
        await hive.run({"n1": S.FAILED})
        per_node.append(hive.store.writes / n)
    assert per_node[1] <= per_node[0] * 1.05, per_node


class MeasuredStore(MemoryStore):
    """A `MemoryStore` that also counts the bytes each write would put in the KV bucket."""

    def __init__(self) -> None:
        """Start empty, with no bytes written."""
        super().__init__()
        self.bytes = 0

    def _update(self, key: str, change: Callable[[Any], Any]) -> Any:
        writes = self.writes
        value = super()._update(key, change)
        if self.writes != writes:
            self.bytes += len(value.model_dump_json())
        return value


async def test_bytes_written_for_a_fan_in_are_linear(hive_config: HivebusConfig) -> None:
    """The bytes written per node and edge stay flat when a fan-in grows from 200 to 800."""
    per_unit = []
    for n in (200, 800):
        hive = Hive(hive_config)
        hive.store = hive.scheduler.store = MeasuredStore()
        await hive.submit(fan_in(n))
        await hive.run()
        assert hive.the_result().status == TaskStatus.COMPLETED
        per_unit.append(hive.store.bytes / (2 * n - 1))
    assert per_unit[1] <= 1.25 * per_unit[0], per_unit


async def test_a_large_output_is_handed_over_as_a_note_reference(hive: Hive) -> None:
    """A dependency output past the inline limit goes to the store; the dependent gets its path."""
    await hive.submit(plan(node("big"), node("user", ["big"])))
    [first] = hive.outbox.dispatched
    event = hive.result("big", attempt=first.attempt).model_copy(update={"output": "x" * 9000})
    await hive.start("big", first.attempt, first.task_id)
    await hive.finish(event)
    [note] = hive.outbox.notes
    assert note.path.endswith("/outputs/big.md")
    assert note.body == "x" * 9000
    user = next(a for a in hive.outbox.dispatched if a.subtask_id == "user")
    [dependency] = user.dependencies
    assert dependency.note == note.path
    assert len(str(dependency.output)) < 600


async def test_a_dependent_waits_until_its_dependency_note_is_readable(hive: Hive) -> None:
    """No dependent is handed a note reference before the knowledge store committed the note."""
    await hive.submit(plan(node("big"), node("user", ["big"])))
    [first] = hive.outbox.dispatched
    event = hive.result("big", attempt=first.attempt).model_copy(update={"output": "y" * 9000})
    await hive.start("big", first.attempt, first.task_id)
    hive.notes.pending.add(f"{TASK}-big-output")
    with pytest.raises(HandoverNotReadyError):
        await hive.scheduler.finished(event)
    assert [a.subtask_id for a in hive.outbox.dispatched] == ["big"]
    assert HandoverNotReadyError("x").retryable  # the settler naks: the event comes again
    hive.notes.pending.clear()
    await hive.finish(event)  # the redelivery, once the note is committed
    user = next(a for a in hive.outbox.dispatched if a.subtask_id == "user")
    assert user.dependencies[0].note is not None
    assert len(hive.outbox.notes) >= 1
