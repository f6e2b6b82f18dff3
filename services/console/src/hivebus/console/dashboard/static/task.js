// The task page: header, usage against the budget, the DAG, the selected sub-task with the
// timeline of its runs, the final output; kept live from the task's SSE stream.

import { get, seg, streamUrl } from "./api.js";
import { drawDag, legend } from "./dag.js";
import { badge, el, errorBox, fill, fmtCost, fmtInt, pre, tokensOf, when } from "./dom.js";
import { header, subtaskFacts, usagePanel } from "./taskhead.js";
import { drawTimeline, entryOf, tiersOf } from "./timeline.js";

const EVENT_KINDS = [
  "task_submitted", "task_rejected", "subtask_assigned", "subtask_started", "step", "subtask_finished",
  "task_finished", "budget_warning", "breaker_changed", "note_committed", "approval_requested",
  "approval_resolved", "approval_refused", "approval_expired", "cancel_requested", "deadline_reached",
];
const TASK_LEVEL = new Set(["task_finished", "task_rejected", "budget_warning", "cancel_requested", "deadline_reached"]);
const MAX_EVENT_PAGES = 200;
const REFRESH_DELAY_MS = 150;
const CLOSE_AFTER_END_MS = 5000;

/** The view for #/tasks/<id> (query: sub = the selected sub-task). */
export function taskView(taskId, query) {
  let stopped = false;
  let detail = null;
  let rows = [];
  const seen = new Set();
  let lastSeq = 0;
  let source = null;
  let refreshTimer = null;
  let closeTimer = null;
  let selected = query.get("sub");
  let dag = null;

  const head = el("div");
  const usage = el("div");
  const plan = el("section", { class: "panel plan", id: "plan" });
  const subPanel = el("section", { class: "panel subtask", id: "subtask-panel", "aria-live": "polite" });
  const taskEvents = el("section", { class: "panel task-events", id: "task-events" });
  const output = el("section", { class: "panel final-output", id: "final-output-panel" });
  const problem = el("div");
  const connection = document.getElementById("connection");

  const ctx = () => ({ taskId, tiers: tiersOf(rows, detail) });

  function select(id) {
    selected = id;
    history.replaceState(null, "", `#/tasks/${encodeURIComponent(taskId)}` + (id ? `?sub=${encodeURIComponent(id)}` : ""));
    if (dag) dag.select(id);
    for (const tr of plan.querySelectorAll("tr[data-subtask]")) tr.classList.toggle("selected", tr.dataset.subtask === id);
    drawSubtask();
    subPanel.scrollIntoView({ block: "nearest" });
  }

  function drawSubtask() {
    const sub = detail && detail.subtasks.find((s) => s.id === selected);
    if (!sub) {
      fill(subPanel, el("p", { class: "muted" }, "Click a sub-task in the plan to see its runs."));
      delete subPanel.dataset.subtask;
      return;
    }
    subPanel.dataset.subtask = sub.id;
    subPanel.dataset.status = sub.status;
    fill(
      subPanel,
      el("h2", {}, "Sub-task ", el("span", { class: "mono" }, sub.id), " ", badge(sub.status)),
      sub.reason ? el("p", { class: "reason subtask-reason" }, sub.reason) : null,
      sub.blocked_by
        ? el("p", { class: "blocked-by", role: "note" }, "Blocked by ", el("a", { href: "#", class: "mono", dataset: { cause: sub.blocked_by }, on: { click: (e) => { e.preventDefault(); select(sub.blocked_by); } } }, sub.blocked_by), rootCause(sub.blocked_by))
        : null,
      subtaskFacts(sub, select),
      sub.output !== null && sub.output !== undefined ? [el("h3", {}, "Output"), pre(sub.output, "output subtask-output")] : null,
      el("h3", {}, "Runs"),
      drawTimeline(rows, sub.id, ctx()),
    );
  }

  function rootCause(id) {
    const root = detail.subtasks.find((s) => s.id === id);
    return root ? [": it ended ", badge(root.status), root.reason ? [" — ", el("span", { class: "root-reason" }, root.reason)] : ""] : "";
  }

  function drawPlan() {
    const subtasks = detail.subtasks || [];
    const graph = detail.graph;
    const table = el(
      "table",
      { class: "list compact", id: "subtasks-table" },
      el("thead", {}, el("tr", {}, ["Sub-task", "Role", "Status", "Reason", "Tokens", "Cost"].map((h) => el("th", { scope: "col" }, h)))),
      el(
        "tbody",
        {},
        subtasks.map((s) =>
          el(
            "tr",
            { class: s.id === selected ? "selected" : null, dataset: { subtask: s.id, status: s.status }, on: { click: () => select(s.id) } },
            el("td", { class: "mono" }, el("a", { href: "#", on: { click: (e) => e.preventDefault() } }, s.id)),
            el("td", {}, s.role),
            el("td", {}, badge(s.status)),
            el("td", { class: "small" }, s.blocked_by ? `blocked by ${s.blocked_by}` : s.reason || ""),
            el("td", { class: "num" }, fmtInt(tokensOf(s.usage))),
            el("td", { class: "num" }, fmtCost(s.usage ? s.usage.cost_usd : 0)),
          ),
        ),
      ),
    );
    if (graph && graph.nodes && graph.nodes.length) {
      dag = drawDag(graph, subtasks, select);
      dag.select(selected);
      fill(plan, el("h2", {}, "Plan"), el("div", { class: "dag-box" }, dag.element), legend(subtasks), el("details", { class: "subtask-list" }, el("summary", {}, `All ${subtasks.length} sub-tasks`), table));
    } else {
      dag = null;
      fill(plan, el("h2", {}, "Plan"), subtasks.length ? table : el("p", { class: "muted" }, "No plan: the task never ran."));
    }
  }

  function drawTaskEvents() {
    const list = rows.filter((r) => TASK_LEVEL.has(r.kind) || r.kind === "breaker_changed");
    if (!list.length) {
      fill(taskEvents);
      taskEvents.hidden = true;
      return;
    }
    taskEvents.hidden = false;
    fill(
      taskEvents,
      el("h2", {}, "Task events"),
      el(
        "ol",
        { class: "entries" },
        list.map((r) => {
          const e = r.event;
          const item = (cls, ...parts) => el("li", { class: ["entry", cls], dataset: { kind: r.kind, seq: String(r.seq) } }, el("span", { class: "entry-time" }, when(e.ts)), el("div", { class: "entry-head" }, ...parts));
          if (r.kind === "budget_warning") return item("warn", el("span", { class: "kind" }, "budget warning"), `${fmtInt(e.used_tokens)} of ${fmtInt(e.max_tokens)} tokens, ${fmtCost(e.used_cost_usd)} of ${fmtCost(e.max_cost_usd)} used`);
          if (r.kind === "task_finished") return item(null, el("span", { class: "kind" }, "task finished"), badge(e.status), el("span", { class: "reason" }, e.reason));
          if (r.kind === "task_rejected") return item(null, el("span", { class: "kind" }, "task rejected"), (e.errors || []).join("; "));
          if (r.kind === "cancel_requested") return item(null, el("span", { class: "kind" }, "cancel requested"), e.reason || "");
          if (r.kind === "deadline_reached") return item(null, el("span", { class: "kind" }, "deadline reached"), String(e.deadline || ""));
          return entryOf(r, { ...ctx(), approx: null });
        }),
      ),
    );
  }

  function drawOutput() {
    if (detail.output === null || detail.output === undefined) {
      fill(output, el("h2", {}, "Final output"), el("p", { class: "muted" }, detail.finished_at ? "No output." : "Not finished yet."));
      return;
    }
    fill(output, el("h2", {}, "Final output", detail.degraded ? el("span", { class: "degraded" }, " (partial)") : ""), pre(detail.output, "output final-output"));
  }

  function drawAll() {
    const event = rows.find((r) => r.kind === "task_rejected");
    const errors = detail.errors || (event ? event.event.errors : null);
    fill(head, header(detail, errors && errors.length ? { errors } : null));
    fill(usage, usagePanel(detail));
    drawPlan();
    drawSubtask();
    drawTaskEvents();
    drawOutput();
  }

  async function refresh() {
    try {
      const fresh = await get(`/api/tasks/${seg(taskId)}`);
      if (stopped) return;
      detail = fresh;
      fill(problem);
      drawAll();
    } catch (exc) {
      if (!stopped) fill(problem, errorBox(exc));
    }
  }

  function scheduleRefresh() {
    clearTimeout(refreshTimer);
    refreshTimer = setTimeout(refresh, REFRESH_DELAY_MS);
  }

  /** What an event says about statuses, applied at once (the detail refresh confirms it). */
  function applyStatus(row) {
    const e = row.event || {};
    const set = (id, status, extra) => {
      const sub = detail.subtasks.find((s) => s.id === id);
      if (sub) Object.assign(sub, { status }, extra || {});
    };
    if (row.kind === "subtask_started") set(e.subtask_id, "running");
    else if (row.kind === "approval_requested") set(e.subtask_id, "awaiting_approval");
    else if (row.kind === "subtask_finished") set(e.subtask_id, e.status, { reason: e.reason });
    else if (row.kind === "task_finished") {
      detail.status = e.status;
      detail.reason = e.reason;
      for (const s of e.subtasks || []) set(s.id, s.status, { reason: s.reason, blocked_by: s.blocked_by });
    } else return;
    if (dag) dag.update(detail.subtasks);
    const badgeBox = document.getElementById("task-status");
    if (badgeBox) {
      badgeBox.dataset.status = detail.status;
      fill(badgeBox, badge(detail.status));
    }
  }

  function take(row) {
    // Only this task's events (the server filters too; this keeps a stray one out).
    if (!row || !row.event || (row.event.task_id && row.event.task_id !== taskId)) return false;
    if (seen.has(row.seq)) return false;
    seen.add(row.seq);
    rows.push(row);
    lastSeq = Math.max(lastSeq, row.seq);
    return true;
  }

  function onLive(message) {
    if (stopped) return;
    let row;
    try {
      row = JSON.parse(message.data);
    } catch {
      return;
    }
    if (!take(row)) return;
    connection.textContent = "live";
    connection.dataset.state = "live";
    if (detail) {
      applyStatus(row);
      const e = row.event || {};
      const timeline = document.getElementById("timeline");
      if (timeline && (e.subtask_id === selected || row.kind === "approval_refused")) drawSubtask();
      if (TASK_LEVEL.has(row.kind) || row.kind === "breaker_changed") drawTaskEvents();
    }
    scheduleRefresh();
    if (row.kind === "task_finished" || row.kind === "task_rejected") {
      // The stream stays open after the end; a little longer catches the summary note.
      clearTimeout(closeTimer);
      closeTimer = setTimeout(() => {
        if (source) source.close();
        connection.textContent = "finished";
        connection.dataset.state = "done";
      }, CLOSE_AFTER_END_MS);
    }
  }

  function listen() {
    source = new EventSource(streamUrl(`/api/tasks/${seg(taskId)}/stream`, { after: lastSeq }));
    for (const kind of EVENT_KINDS) source.addEventListener(kind, onLive);
    source.addEventListener("message", onLive);
    source.addEventListener("open", () => {
      connection.textContent = "live";
      connection.dataset.state = "live";
    });
    source.addEventListener("error", () => {
      if (stopped) return;
      connection.textContent = "reconnecting…";
      connection.dataset.state = "down";
    });
  }

  async function loadEvents() {
    for (let page = 0; page < MAX_EVENT_PAGES; page += 1) {
      const before = lastSeq;
      const data = await get(`/api/tasks/${seg(taskId)}/events`, { after: lastSeq });
      for (const row of data.events) take(row);
      if (typeof data.last === "number") lastSeq = Math.max(lastSeq, data.last);
      if (!data.events.length || lastSeq <= before) break;
    }
  }

  return {
    async start(view) {
      fill(view, el("div", { class: "task-page", dataset: { taskId } }, problem, head, usage, el("div", { class: "task-main" }, plan, subPanel), output, taskEvents));
      const [fresh] = await Promise.all([get(`/api/tasks/${seg(taskId)}`), loadEvents()]);
      if (stopped) return;
      rows.sort((a, b) => a.seq - b.seq);
      detail = fresh;
      if (!selected) {
        const interesting = detail.subtasks.find((s) => !["completed", "pending"].includes(s.status));
        const last = detail.subtasks[detail.subtasks.length - 1];
        selected = interesting ? interesting.id : last ? last.id : null;
      }
      drawAll();
      const ended = rows.some((r) => r.kind === "task_finished" || r.kind === "task_rejected");
      if (ended) {
        connection.textContent = "finished";
        connection.dataset.state = "done";
      } else listen();
    },
    stop() {
      stopped = true;
      clearTimeout(refreshTimer);
      clearTimeout(closeTimer);
      if (source) source.close();
      connection.textContent = "";
      delete connection.dataset.state;
    },
  };
}
