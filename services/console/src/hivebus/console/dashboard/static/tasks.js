// The tasks list: newest first, filtered by status, paged by the server's cursor,
// refreshed every 2 s while shown.

import { get } from "./api.js";
import { badge, el, errorBox, fill, fmtCost, fmtInt, fmtSeconds, link, when } from "./dom.js";

const FILTERS = ["", "running", "completed", "partial", "failed", "timeout", "budget_exceeded", "cancelled", "rejected"];
const PAGE = 50;
const REFRESH_MS = 2000;

function counts(row) {
  const list = el("span", { class: "counts" });
  const entries = Object.entries(row.counts || {}).filter(([, n]) => n > 0);
  entries.sort((a, b) => b[1] - a[1]);
  for (const [status, n] of entries) list.append(badge(status, `${n} ${status.replaceAll("_", " ")}`));
  if (!entries.length) list.append(el("span", { class: "muted" }, row.subtasks ? `${row.subtasks} sub-tasks` : "no plan"));
  return list;
}

function rowOf(task) {
  return el(
    "tr",
    { dataset: { taskId: task.task_id, status: task.status } },
    el("td", {}, badge(task.status)),
    el(
      "td",
      { class: "goal" },
      link("/tasks/" + encodeURIComponent(task.task_id), el("span", { class: "goal-text" }, task.goal || "(no goal)")),
      el("div", { class: "muted small mono" }, task.task_id, task.reason ? " · " + task.reason : ""),
    ),
    el("td", {}, counts(task)),
    el("td", { class: "num" }, fmtInt(task.tokens)),
    el("td", { class: "num" }, fmtCost(task.cost_usd)),
    el("td", { class: "num" }, fmtSeconds(task.duration_s)),
    el("td", {}, when(task.submitted_at)),
  );
}

/** The view for #/ (query: status). */
export function tasksView(query) {
  let timer = null;
  let stopped = false;
  const status = query.get("status") || "";
  const cursors = [null]; // cursors[i] fetches page i
  let page = 0;

  const body = el("tbody");
  const summary = el("span", { class: "muted", id: "tasks-summary" });
  const problem = el("div");
  const newer = el("button", { type: "button", id: "page-newer", disabled: true }, "← Newer");
  const older = el("button", { type: "button", id: "page-older", disabled: true }, "Older →");
  const select = el(
    "select",
    {
      id: "status-filter",
      "aria-label": "Filter by status",
      on: {
        change: () => {
          location.hash = select.value ? "#/?status=" + encodeURIComponent(select.value) : "#/";
        },
      },
    },
    FILTERS.map((s) => el("option", { value: s, selected: s === status }, s ? s.replaceAll("_", " ") : "all statuses")),
  );

  async function load() {
    if (stopped) return;
    clearTimeout(timer);
    try {
      const data = await get("/api/tasks", { status, limit: PAGE, cursor: cursors[page] });
      if (stopped) return;
      fill(problem);
      fill(body, data.tasks.map(rowOf));
      if (!data.tasks.length) fill(body, el("tr", {}, el("td", { colspan: 7, class: "muted empty" }, status ? `No ${status.replaceAll("_", " ")} tasks.` : "No tasks yet: submit one (hivebus submit PLAN.yaml).")));
      cursors[page + 1] = data.next;
      const first = page * PAGE + (data.tasks.length ? 1 : 0);
      summary.textContent = `${first}–${page * PAGE + data.tasks.length} of ${fmtInt(data.total)}`;
      newer.disabled = page === 0;
      older.disabled = !data.next;
    } catch (exc) {
      if (!stopped) fill(problem, errorBox(exc));
    }
    if (!stopped) timer = setTimeout(load, REFRESH_MS);
  }

  newer.addEventListener("click", () => {
    if (page > 0) page -= 1;
    load();
  });
  older.addEventListener("click", () => {
    if (cursors[page + 1]) page += 1;
    load();
  });

  return {
    async start(view) {
      fill(
        view,
        el("div", { class: "toolbar" }, el("h1", {}, "Tasks"), el("label", {}, "Status ", select), summary, el("span", { class: "spacer" }), newer, older),
        problem,
        el(
          "table",
          { class: "list", id: "tasks-table" },
          el("thead", {}, el("tr", {}, ["Status", "Goal", "Sub-tasks", "Tokens", "Cost", "Duration", "Submitted"].map((h) => el("th", { scope: "col" }, h)))),
          body,
        ),
      );
      await load();
    },
    stop() {
      stopped = true;
      clearTimeout(timer);
    },
  };
}
