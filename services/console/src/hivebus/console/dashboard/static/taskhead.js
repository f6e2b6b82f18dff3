// The fixed parts of the task page: its header (status, goal, times, trace link), usage
// against the budget, and the facts of one sub-task.

import { badge, el, facts, fmtCost, fmtInt, fmtSeconds, link, safeUrl, tokensOf, usageLine, when } from "./dom.js";
import { app } from "./state.js";

function meter(label, used, max, format) {
  const share = max > 0 ? used / max : 0;
  return el(
    "div",
    { class: ["meter", share >= 1 ? "over" : share >= 0.8 ? "near" : null], dataset: { meter: label } },
    el("span", { class: "meter-label" }, label),
    el("progress", { max: "1", value: String(Math.min(share, 1)) }),
    el("span", { class: "meter-text" }, `${format(used)} of ${format(max)} (${(share * 100).toFixed(0)}%)`),
  );
}

export function usagePanel(detail) {
  const usage = detail.usage || {};
  const budget = detail.budget || {};
  return el(
    "section",
    { class: "panel usage", id: "usage" },
    el("h2", {}, "Usage against the task budget"),
    meter("tokens", tokensOf(usage), budget.max_tokens || 0, fmtInt),
    meter("cost", usage.cost_usd || 0, budget.max_cost_usd || 0, fmtCost),
    meter("time", detail.duration_s || 0, budget.deadline_s || 0, fmtSeconds),
    el("p", { class: "muted small" }, usageLine(usage)),
  );
}

export function header(detail, rejected) {
  const template = app.config.trace_url;
  const url = detail.trace_url || (template && detail.trace_id ? template.replaceAll("{trace_id}", detail.trace_id) : null);
  const trace = url ? safeUrl(url) : null;
  return el(
    "section",
    { class: "task-head" },
    el("div", { class: "crumbs" }, link("/", "Tasks"), " / ", el("span", { class: "mono" }, detail.task_id)),
    el("h1", {}, el("span", { id: "task-status", dataset: { status: detail.status } }, badge(detail.status)), " ", el("span", { class: "goal-text" }, detail.goal || "")),
    detail.reason ? el("p", { class: "reason", id: "task-reason" }, detail.reason, detail.degraded ? el("span", { class: "degraded" }, " · degraded (partial output)") : "") : null,
    rejected ? el("ul", { class: "errors" }, rejected.errors.map((e) => el("li", {}, e))) : null,
    facts([
      ["Submitted", when(detail.submitted_at)],
      ["Finished", detail.finished_at ? when(detail.finished_at) : null],
      ["Duration", detail.duration_s !== null && detail.duration_s !== undefined ? fmtSeconds(detail.duration_s) : null],
      ["Trace", trace ? el("a", { href: trace, target: "_blank", rel: "noopener noreferrer", id: "trace-link" }, detail.trace_id || "open trace") : detail.trace_id ? el("span", { class: "mono" }, detail.trace_id) : null],
    ]),
  );
}

export function subtaskFacts(sub, onSelect) {
  return facts([
    ["Role", sub.role],
    ["Kind", sub.kind],
    ["Attempt", sub.attempt],
    ["Depends on", sub.depends_on && sub.depends_on.length ? sub.depends_on.map((d, i) => [i ? ", " : "", el("a", { href: "#", on: { click: (e) => { e.preventDefault(); onSelect(d); } } }, d)]) : null],
    ["Usage", sub.usage ? usageLine(sub.usage) : null],
    ["Flags", sub.flags && sub.flags.length ? sub.flags.map((f) => el("span", { class: "flag" }, f)) : null],
  ]);
}
