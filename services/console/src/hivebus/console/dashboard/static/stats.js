// The scorecard (`hivebus stats --json`) per role, for a chosen window.

import { get } from "./api.js";
import { el, fill, fmtCost, fmtInt, fmtPercent, fmtSeconds } from "./dom.js";

const WINDOWS = ["1h", "24h", "7d", "30d"];
const GROUPS = ["role", "kind", "model"];

function num(value, digits = 1) {
  return value === null || value === undefined ? "–" : Number(value).toFixed(digits);
}

const COLUMNS = [
  ["Sub-tasks", (r) => fmtInt(r.subtasks)],
  ["Completed", (r) => fmtPercent(r.completion_rate)],
  ["Steps mean", (r) => num(r.steps_mean)],
  ["Steps p50 / p95", (r) => `${num(r.steps_p50, 0)} / ${num(r.steps_p95, 0)}`],
  ["Latency p50 / p95", (r) => `${fmtSeconds(r.latency_p50_s)} / ${fmtSeconds(r.latency_p95_s)}`],
  ["Tokens / sub-task", (r) => fmtInt(r.tokens_per_subtask)],
  ["Cost / sub-task", (r) => fmtCost(r.cost_per_subtask_usd)],
  ["Tool errors", (r) => `${fmtInt(r.tool_errors)} of ${fmtInt(r.tool_steps)} (${fmtPercent(r.tool_error_rate)})`],
  ["Limit exceeded", (r) => fmtPercent(r.limit_exceeded_rate)],
  ["Escalated", (r) => fmtPercent(r.escalation_rate)],
  ["DLQ", (r) => fmtInt(r.dlq)],
];

/** The view for #/stats (query: since). */
export function statsView(query) {
  const since = WINDOWS.includes(query.get("since")) ? query.get("since") : "24h";
  const by = GROUPS.includes(query.get("by")) ? query.get("by") : "role";
  return {
    async start(view) {
      const card = await get("/api/stats", { since, by });
      const go = () => {
        location.hash = `#/stats?since=${select.value}&by=${group.value}`;
      };
      const select = el("select", { id: "stats-since", "aria-label": "Window", on: { change: go } }, WINDOWS.map((w) => el("option", { value: w, selected: w === since }, "last " + w)));
      const group = el("select", { id: "stats-by", "aria-label": "Group by", on: { change: go } }, GROUPS.map((g) => el("option", { value: g, selected: g === by }, g)));
      fill(
        view,
        el("div", { class: "toolbar" }, el("h1", {}, "Scorecard"), el("label", {}, "Window ", select), el("label", {}, "By ", group), el("span", { class: "muted" }, `by ${card.by} · ${fmtInt(card.events)} events read · ${fmtInt(card.dlq)} dead letters`)),
        card.rows.length
          ? el(
              "table",
              { class: "list", id: "stats-table" },
              el("thead", {}, el("tr", {}, el("th", { scope: "col" }, card.by), COLUMNS.map(([h]) => el("th", { scope: "col" }, h)))),
              el("tbody", {}, card.rows.map((r) => el("tr", { class: r.flags && r.flags.length ? "flagged" : null }, el("td", { class: "mono" }, r.key ?? "(none)"), COLUMNS.map(([, f]) => el("td", { class: "num" }, f(r)))))),
            )
          : el("p", { class: "muted" }, "No sub-task ended in this window."),
        card.window ? el("p", { class: "muted small" }, `window ${card.window.start} – ${card.window.end}`) : null,
      );
    },
  };
}
