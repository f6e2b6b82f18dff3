// The dead-letter queue: the list, one entry with its checkpoint and error chain, and replay.

import { get, post, seg } from "./api.js";
import { el, errorBox, facts, fill, link, pre, usageLine, when } from "./dom.js";
import { app } from "./state.js";

/** The view for #/dlq. */
export function dlqListView() {
  return {
    async start(view) {
      const data = await get("/api/dlq");
      const rows = data.entries.map((e) =>
        el(
          "tr",
          { dataset: { seq: String(e.seq) } },
          el("td", { class: "num" }, link("/dlq/" + encodeURIComponent(e.seq), String(e.seq))),
          el("td", {}, e.why),
          el("td", { class: "mono" }, e.task_id ? link("/tasks/" + encodeURIComponent(e.task_id), e.task_id) : "–"),
          el("td", { class: "mono" }, e.subtask_id || "–"),
          el("td", { class: "num" }, String(e.attempt ?? "–")),
          el("td", { class: "num" }, String(e.deliveries ?? "–")),
          el("td", { class: "small" }, (e.errors && e.errors.length ? e.errors[e.errors.length - 1] : "") || ""),
          el("td", {}, when(e.time)),
        ),
      );
      fill(
        view,
        el("div", { class: "toolbar" }, el("h1", {}, "Dead letters"), el("span", { class: "muted" }, `${data.entries.length} entries`)),
        data.entries.length
          ? el(
              "table",
              { class: "list", id: "dlq-table" },
              el("thead", {}, el("tr", {}, ["#", "Why", "Task", "Sub-task", "Attempt", "Deliveries", "Last error", "When"].map((h) => el("th", { scope: "col" }, h)))),
              el("tbody", {}, rows),
            )
          : el("p", { class: "muted" }, "The dead-letter queue is empty."),
      );
    },
  };
}

function checkpointSummary(checkpoint) {
  if (!checkpoint || typeof checkpoint !== "object") return null;
  return facts([
    ["Run", checkpoint.run_id],
    ["Phase", checkpoint.phase],
    ["Messages", Array.isArray(checkpoint.messages) ? String(checkpoint.messages.length) : null],
    ["Pending calls", Array.isArray(checkpoint.pending_calls) && checkpoint.pending_calls.length ? checkpoint.pending_calls.map((c) => c.name).join(", ") : null],
    ["Usage", checkpoint.usage ? usageLine(checkpoint.usage) : null],
    ["Last text", checkpoint.last_text],
  ]);
}

/** The view for #/dlq/<seq>. */
export function dlqEntryView(seq) {
  return {
    async start(view) {
      const entry = await get(`/api/dlq/${seg(seq)}`);
      const outcome = el("div", { class: "outcome", "aria-live": "polite" });
      const replay = (fromCheckpoint) => async () => {
        fill(outcome, el("p", { class: "muted" }, "Replaying…"));
        try {
          const result = await post(`/api/dlq/${seg(seq)}/replay`, { from_checkpoint: fromCheckpoint });
          fill(outcome, el("p", { class: "resolved" }, "Replayed as task ", link("/tasks/" + encodeURIComponent(result.task_id), result.task_id)));
        } catch (exc) {
          fill(outcome, errorBox(exc));
        }
      };
      const off = app.config.decisions_allowed === false;
      fill(
        view,
        el("div", { class: "crumbs" }, link("/dlq", "Dead letters"), " / ", String(seq)),
        el("h1", {}, `Dead letter ${seq}: ${entry.why}`),
        facts([
          ["Task", entry.task_id ? link("/tasks/" + encodeURIComponent(entry.task_id), entry.task_id) : null],
          ["Sub-task", entry.subtask_id],
          ["Attempt", entry.attempt],
          ["Deliveries", entry.deliveries],
          ["When", when(entry.ts)],
          ["Usage", entry.usage ? usageLine(entry.usage) : null],
        ]),
        el(
          "div",
          { class: "actions" },
          el("button", { type: "button", class: "primary", id: "replay-checkpoint", disabled: off || !entry.checkpoint, on: { click: replay(true) } }, "Replay from the checkpoint"),
          el("button", { type: "button", id: "replay-scratch", disabled: off, on: { click: replay(false) } }, "Replay from scratch"),
        ),
        outcome,
        el("h2", {}, "Error chain"),
        entry.errors && entry.errors.length ? el("ol", { class: "error-chain" }, entry.errors.map((e) => el("li", {}, pre(e, "output")))) : el("p", { class: "muted" }, "No errors recorded."),
        el("h2", {}, "Checkpoint"),
        entry.checkpoint ? [checkpointSummary(entry.checkpoint), el("details", {}, el("summary", {}, "The whole checkpoint"), pre(entry.checkpoint))] : el("p", { class: "muted" }, "No checkpoint: a replay starts from scratch."),
        el("h2", {}, "The original message"),
        el("details", {}, el("summary", {}, "Show"), pre(entry.original)),
      );
    },
  };
}
