// One sub-task's timeline: its runs, and in each run every event in stream order — model
// calls, tool calls, approvals, breaker changes, notes, and the terminal status.
// Everything from an event is shown as text (textContent), never as markup.

import { badge, el, fmtCost, fmtInt, fmtSeconds, link, pre, usageLine, when } from "./dom.js";

const RUN_KINDS = new Set(["subtask_started", "step", "subtask_finished", "approval_requested"]);

function ts(row) {
  const at = Date.parse((row.event && row.event.ts) || row.time);
  return Number.isNaN(at) ? null : at;
}

/** The events of one sub-task, grouped by run: [{runId, attempt, rows: [...]}], oldest first. */
export function runsOf(rows, subtaskId) {
  const runs = [];
  const byRun = new Map();
  const approvalRun = new Map();
  let last = null;
  const runFor = (runId, attempt) => {
    let run = byRun.get(runId);
    if (!run) {
      run = { runId, attempt, rows: [] };
      byRun.set(runId, run);
      runs.push(run);
    }
    return run;
  };
  for (const row of rows) {
    const event = row.event || {};
    let run = null;
    if (row.kind === "approval_refused") {
      run = approvalRun.get(event.approval_id) || null;
      if (!run) continue;
    } else if (event.subtask_id !== subtaskId) {
      continue;
    } else if (RUN_KINDS.has(row.kind) && event.run_id) {
      run = runFor(event.run_id, event.attempt);
      if (row.kind === "approval_requested") approvalRun.set(event.approval_id, run);
    } else if (row.kind === "approval_resolved") {
      run = approvalRun.get(event.approval_id) || last;
    } else {
      run = last;
    }
    if (!run) run = runFor("(before any run)", event.attempt || null);
    run.rows.push(row);
    last = run;
  }
  return runs;
}

function retriesList(retries) {
  if (!retries || !retries.length) return null;
  return el(
    "ul",
    { class: "retries" },
    retries.map((r) => el("li", {}, `retry: ${r.target} attempt ${r.attempt} failed — `, el("span", { class: "mono" }, r.error), ` — waited ${fmtSeconds(r.delay_s)}`)),
  );
}

function notesList(notes) {
  if (!notes || !notes.length) return null;
  return el("ul", { class: "notes" }, notes.map((n) => el("li", {}, n)));
}

function durationOf(event, approx) {
  for (const key of ["duration_s", "latency_s"]) {
    if (typeof event[key] === "number") return fmtSeconds(event[key]);
  }
  return approx === null ? null : "≈ " + fmtSeconds(approx);
}

function toolError(error) {
  return el(
    "div",
    { class: "tool-error", role: "note", dataset: { kind: error.kind } },
    el("div", {}, badge("failed", error.kind), " ", el("span", { class: "message" }, error.message)),
    error.suggestion ? el("div", { class: "suggestion" }, el("strong", {}, "Suggestion: "), error.suggestion) : null,
  );
}

function modelStep(event, approx) {
  const out = event.output || {};
  const tokens = `${fmtInt(event.usage.input_tokens)} in / ${fmtInt(event.usage.output_tokens)} out`;
  const head = el(
    "div",
    { class: "entry-head" },
    el("span", { class: "step-no" }, `#${event.step}`),
    el("span", { class: "kind" }, "model"),
    el("span", { class: "mono name" }, event.name),
    event.error ? badge("failed", "error") : badge("completed", "ok"),
    el("span", { class: "metric" }, tokens),
    el("span", { class: "metric" }, fmtCost(event.usage.cost_usd)),
    durationOf(event, approx) ? el("span", { class: "metric", title: "latency" }, durationOf(event, approx)) : null,
    event.retries && event.retries.length ? el("span", { class: "metric warn" }, `${event.retries.length} retries`) : null,
    event.notes && event.notes.length ? el("span", { class: "metric warn" }, "fallback / notes") : null,
  );
  const body = el("div", { class: "entry-body" });
  if (out.model && out.model !== event.name) body.append(el("div", { class: "muted small" }, "answered by ", el("span", { class: "mono" }, out.model)));
  if (event.error) body.append(el("div", { class: "error" }, event.error));
  if (out.text) body.append(el("div", { class: "label" }, "Output"), pre(out.text, "output model-output"));
  for (const call of out.tool_calls || []) {
    body.append(el("div", { class: "call" }, "calls ", el("span", { class: "mono" }, call.name), " ", el("span", { class: "muted small" }, call.id)), pre(call.args));
  }
  if (out.stop_reason) body.append(el("div", { class: "muted small" }, "stop reason: ", out.stop_reason));
  body.append(retriesList(event.retries) || "", notesList(event.notes) || "");
  if (event.content_ref) body.append(el("div", { class: "muted small" }, "whole step in the artifacts store: ", el("span", { class: "mono" }, event.content_ref)));
  return [head, body];
}

function toolStep(event, approx, tier) {
  const result = event.output || {};
  const failed = result.ok === false || Boolean(event.error);
  const shownTier = event.tier || tier;
  const head = el(
    "div",
    { class: "entry-head" },
    el("span", { class: "step-no" }, `#${event.step}`),
    el("span", { class: "kind" }, "tool"),
    el("span", { class: "mono name" }, event.name),
    shownTier ? el("span", { class: "tier", dataset: { tier: shownTier } }, shownTier) : null,
    failed ? badge("failed", (result.error && result.error.kind) || "error") : badge("completed", "ok"),
    durationOf(event, approx) ? el("span", { class: "metric", title: "duration" }, durationOf(event, approx)) : null,
    event.retries && event.retries.length ? el("span", { class: "metric warn" }, `${event.retries.length} retries`) : null,
  );
  const body = el("div", { class: "entry-body" }, el("div", { class: "label" }, "Arguments"), pre(event.input, "data tool-args"));
  if (result.error) body.append(toolError(result.error));
  else if (event.error) body.append(el("div", { class: "error" }, event.error));
  if (result.ok) body.append(el("div", { class: "label" }, "Result"), pre(result.data, "data tool-result"));
  body.append(retriesList(event.retries) || "", notesList(event.notes) || "");
  if (event.content_ref) body.append(el("div", { class: "muted small" }, "whole step in the artifacts store: ", el("span", { class: "mono" }, event.content_ref)));
  return [head, body];
}

function started(event) {
  return [
    el(
      "div",
      { class: "entry-head" },
      el("span", { class: "kind" }, event.resumed ? "resumed" : "started"),
      `run ${event.run_id} · attempt ${event.attempt} · ${event.role} · `,
      el("span", { class: "mono" }, event.model),
    ),
    event.resumed ? el("div", { class: "entry-body muted small" }, "after approval ", el("span", { class: "mono" }, event.resumed)) : null,
  ];
}

function finished(event) {
  return [
    el("div", { class: "entry-head" }, el("span", { class: "kind" }, "finished"), badge(event.status), el("span", { class: "reason" }, event.reason)),
    el(
      "div",
      { class: "entry-body" },
      event.limit ? el("div", { class: "warn" }, "limit reached: ", el("span", { class: "mono" }, event.limit)) : null,
      event.flags && event.flags.length ? el("div", { class: "flags" }, "validator flags: ", event.flags.map((f) => el("span", { class: "flag" }, f))) : null,
      el("div", { class: "muted small" }, usageLine(event.usage), event.model ? ` · last answer by ${event.model}` : ""),
      event.output !== null && event.output !== undefined ? [el("div", { class: "label" }, "Output"), pre(event.output, "output subtask-output")] : null,
      event.output_ref ? el("div", { class: "muted small" }, "whole output in the artifacts store: ", el("span", { class: "mono" }, event.output_ref)) : null,
    ),
  ];
}

function approvalAsked(event, taskId) {
  return [
    el(
      "div",
      { class: "entry-head" },
      el("span", { class: "kind" }, "approval asked"),
      el("span", { class: "mono name" }, event.tool),
      event.tier ? el("span", { class: "tier", dataset: { tier: event.tier } }, event.tier) : null,
      el("span", { class: "muted small mono" }, event.approval_id),
    ),
    el(
      "div",
      { class: "entry-body" },
      event.reason ? el("div", {}, "why: ", event.reason) : null,
      event.question ? el("div", {}, "question: ", el("q", {}, event.question)) : null,
      Object.keys(event.arguments || {}).length ? pre(event.arguments) : null,
      el("div", { class: "muted small" }, "expires ", when(event.expires_at), " · ", link("/approvals?task=" + encodeURIComponent(taskId), "decide on the approvals page")),
    ),
  ];
}

function approvalResolved(event) {
  return [
    el("div", { class: "entry-head" }, el("span", { class: "kind" }, "approval resolved"), badge(event.decision === "reject" ? "failed" : "completed", event.decision), `by ${event.by}`, event.timed_out ? " (timed out)" : ""),
    el(
      "div",
      { class: "entry-body" },
      event.reason ? el("div", {}, "reason: ", event.reason) : null,
      event.arguments ? [el("div", { class: "label" }, "New arguments"), pre(event.arguments)] : null,
      event.answer ? [el("div", { class: "label" }, "Answer"), pre(event.answer, "output")] : null,
    ),
  ];
}

function approvalRefused(event) {
  return [el("div", { class: "entry-head" }, el("span", { class: "kind" }, "decision refused"), badge("failed", event.code), el("span", { class: "reason" }, event.why), event.by ? ` (by ${event.by})` : "")];
}

function breaker(event) {
  return [el("div", { class: "entry-head" }, el("span", { class: "kind" }, "breaker"), el("span", { class: "mono" }, event.breaker), ` ${event.old} → ${event.new}`)];
}

function note(event) {
  return [el("div", { class: "entry-head" }, el("span", { class: "kind" }, "note"), el("span", { class: "mono" }, event.path), ` committed ${String(event.commit).slice(0, 8)} by ${event.author}`)];
}

/** One timeline entry for an event row; `prev` is the run's previous timed event row. */
export function entryOf(row, ctx) {
  const event = row.event || {};
  let parts;
  switch (row.kind) {
    case "step":
      parts = event.step_kind === "tool" ? toolStep(event, ctx.approx, ctx.tiers.get(event.name)) : modelStep(event, ctx.approx);
      break;
    case "subtask_started":
      parts = started(event);
      break;
    case "subtask_finished":
      parts = finished(event);
      break;
    case "approval_requested":
      parts = approvalAsked(event, ctx.taskId);
      break;
    case "approval_resolved":
      parts = approvalResolved(event);
      break;
    case "approval_refused":
      parts = approvalRefused(event);
      break;
    case "breaker_changed":
      parts = breaker(event);
      break;
    case "note_committed":
      parts = note(event);
      break;
    default:
      parts = [el("div", { class: "entry-head" }, el("span", { class: "kind" }, row.kind)), pre(event)];
  }
  const failed = row.kind === "step" && ((event.output && event.output.ok === false) || event.error);
  return el(
    "li",
    { class: ["entry", "kind-" + row.kind, event.step_kind ? "step-" + event.step_kind : null, failed ? "has-error" : null], dataset: { kind: row.kind, seq: String(row.seq) } },
    el("span", { class: "entry-time" }, when(event.ts || row.time)),
    ...parts,
  );
}

/** Tool tiers known from the task's events (approval requests name them) and the detail. */
export function tiersOf(rows, detail) {
  const tiers = new Map(Object.entries((detail && detail.tools) || {}));
  for (const row of rows) if (row.kind === "approval_requested" && row.event.tier) tiers.set(row.event.tool, row.event.tier);
  return tiers;
}

/** The whole timeline of one sub-task as an element. */
export function drawTimeline(rows, subtaskId, ctx) {
  const runs = runsOf(rows, subtaskId);
  const box = el("div", { class: "timeline", id: "timeline", dataset: { subtask: subtaskId } });
  if (!runs.length) {
    box.append(el("p", { class: "muted" }, "No run yet."));
    return box;
  }
  for (const run of runs) {
    const list = el("ol", { class: "entries" });
    let prev = null;
    for (const row of run.rows) {
      const at = ts(row);
      const timed = row.kind === "subtask_started" || row.kind === "step" || row.kind === "approval_resolved";
      const approx = row.kind === "step" && prev !== null && at !== null ? Math.max(0, (at - prev) / 1000) : null;
      list.append(entryOf(row, { ...ctx, approx }));
      if (timed && at !== null) prev = at;
    }
    box.append(el("section", { class: "run", dataset: { run: run.runId } }, el("h4", {}, `Run ${run.runId}`, run.attempt ? ` · attempt ${run.attempt}` : ""), list));
  }
  return box;
}
