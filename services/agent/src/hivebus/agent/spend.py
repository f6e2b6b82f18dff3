"""Spend approvals: a person allows a costly model call, or the task's budget past a share.

before a model call with tools (`SpendGate.check`):
    its approval was decided (a resumed run)   approve -> the call goes on
                                               reject, or refused -> `SpendRejectedError`:
                                               the run ends `budget_exceeded`
    estimated cost above `approve_cost_usd`    -> ask
    the task used `approve_at_budget` of its   -> ask; once allowed, not again in this run
      tokens or cost, and this run has not       (`spend_approved_at`)
      been allowed past it yet
    both at once                               -> one approval giving both reasons
at resume, whatever the pause asked (`SpendGate.uncovered`):
    the ledger's use plus the most the next model call can use passes the task budget
                                               -> every approval of the pause is refused
                                                  (`budget`) and the run ends
                                                  `budget_exceeded`

The estimate is the bound a model call reserves (`ModelCaller.estimate`); the ledger is read,
never written, here. A spend approval is asked at the model step about to be made, with the
call id `spend-<step>`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from hivebus.agent.approvals import SPEND_DECISIONS, Asking, expiry, find, pause, request
from hivebus.agent.modelcall import BudgetRefusedError, Estimate
from hivebus.agent.models.base import ModelRequest
from hivebus.agent.reporting import report_refusal
from hivebus.agent.resume import recheck, refused
from hivebus.agent.runcontext import RunContext
from hivebus.contracts import ApprovalKind, Decision, SubTaskAssigned, approval_id
from hivebus.contracts.runs import PendingApproval, RunCheckpoint
from hivebus.core.budget import LedgerState

BUDGET_SHARE_KEY = "approve_at_budget"
"""In a spend request's `arguments`: the budget share it asks to go past (when it does)."""


class SpendRejectedError(BudgetRefusedError):
    """A person declined a model call's spend, or nobody allowed it in time: the run ends."""


def used_share(ledger: LedgerState) -> float:
    """The larger of the task's used shares of its token and cost budgets."""
    shares = [ledger.used_tokens / ledger.max_tokens] if ledger.max_tokens > 0 else []
    if ledger.max_cost_usd > 0:
        shares.append(ledger.used_cost_usd / ledger.max_cost_usd)
    return max(shares, default=0.0)


def uncovered(ledger: LedgerState, estimate: Estimate) -> str | None:
    """Why the task budget cannot cover the next model call, or None when it can."""
    if ledger.used_tokens + estimate.tokens > ledger.max_tokens:
        return (
            f"the task budget cannot cover going on: {ledger.used_tokens} of "
            f"{ledger.max_tokens} tokens are used, and the next model call can need "
            f"{estimate.tokens}"
        )
    if ledger.used_cost_usd + estimate.cost_usd > ledger.max_cost_usd + 1e-12:
        return (
            f"the task budget cannot cover going on: ${ledger.used_cost_usd:.4f} of "
            f"${ledger.max_cost_usd:.4f} is used, and the next model call can cost "
            f"${estimate.cost_usd:.4f}"
        )
    return None


class SpendGate:
    """The spend approvals of one run, on its checkpoint."""

    def __init__(
        self,
        assignment: SubTaskAssigned,
        ctx: RunContext,
        state: RunCheckpoint,
        save: Callable[[], Awaitable[None]],
    ) -> None:
        """Work on `state`; `save` checkpoints it."""
        self.assignment = assignment
        self.ctx = ctx
        self.state = state
        self.save = save

    async def uncovered(self, next_request: ModelRequest) -> str | None:
        """Why the task budget cannot cover `next_request`, or None (no ledger: None)."""
        budget = self.ctx.caller.budget
        if budget is None:
            return None
        return uncovered(await budget.read(), self.ctx.caller.estimate(next_request))

    async def check(self, model_request: ModelRequest) -> None:
        """Let the model call of `model_request` go on, or ask a person first.

        Raises:
            RunPaused: a person must allow the spend; the pause is checkpointed.
            SpendRejectedError: a person declined the spend (or nobody decided in time).
        """
        policy = self.ctx.approvals
        if not policy.asks_spend:
            return
        step = self.state.usage.steps + 1
        call_id = f"spend-{step}"
        a = self.assignment
        decided = find(self.state, approval_id(a.task_id, a.subtask_id, a.attempt, step, call_id))
        if decided is not None:
            await self._apply(decided)
            return
        estimate = self.ctx.caller.estimate(model_request)
        reasons: list[str] = []
        arguments: dict[str, float | int] = {
            "estimated_tokens": estimate.tokens,
            "estimated_cost_usd": round(estimate.cost_usd, 6),
        }
        if policy.approve_cost_usd is not None and estimate.cost_usd > policy.approve_cost_usd:
            reasons.append(
                f"the next model call can cost ${estimate.cost_usd:.4f}, above the role's "
                f"approve_cost_usd (${policy.approve_cost_usd:.4f})"
            )
        budget = self.ctx.caller.budget
        share = policy.approve_at_budget
        if share is not None and self.state.spend_approved_at is None and budget is not None:
            used = used_share(await budget.read())
            if used >= share:
                reasons.append(
                    f"the task has used {used:.0%} of its budget (the role asks at {share:.0%})"
                )
                arguments |= {"budget_used": round(used, 4), BUDGET_SHARE_KEY: share}
        if not reasons:
            return
        route = self.ctx.caller.models[0].route
        asking = Asking(
            kind=ApprovalKind.SPEND,
            tool=route,
            call_id=call_id,
            decisions=SPEND_DECISIONS,
            reason="; ".join(reasons),
            arguments=dict(arguments),
            estimated_cost_usd=estimate.cost_usd,
        )
        expires = expiry(self.ctx.clock.now(), policy)
        paused = pause(self.state, [request(a, self.state.run_id, step, asking, expires)])
        await self.save()
        raise paused

    async def _apply(self, decided: PendingApproval) -> None:
        """Go on with an allowed spend; end the run for any other resolution."""
        resolution = decided.resolution
        if resolution is None:  # resumed without a decision: ask again (the same question)
            paused = pause(self.state, [])
            await self.save()
            raise paused
        decided.applied = True  # saved with the model step's outcome
        refusal = recheck(decided.request, resolution, None)
        if refusal is not None:
            await report_refusal(self.ctx.events, refused(decided, refusal))
            raise SpendRejectedError(f"the model call's spend was not allowed: {refusal.why}")
        if resolution.decision is not Decision.APPROVE:
            by = "nobody decided in time" if resolution.timed_out else f"{resolution.by} declined"
            because = f": {resolution.reason}" if resolution.reason else ""
            raise SpendRejectedError(f"the model call's spend was not allowed ({by}{because})")
        share = decided.request.arguments.get(BUDGET_SHARE_KEY)
        if isinstance(share, int | float):
            self.state.spend_approved_at = float(share)
