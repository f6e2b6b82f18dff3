// Pending approvals: what is asked (tool, tier, arguments, the model's reason) and the
// decisions — approve, reject (a reason is required), modify (an arguments editor checked
// against the tool's JSON Schema before sending), respond (ask_human). A refusal shows why.

import { ApiError, get, post, seg } from "./api.js";
import { badge, el, errorBox, facts, fill, link, pre, when } from "./dom.js";
import { validate } from "./schema.js";
import { app } from "./state.js";

const REFRESH_MS = 3000;
const BY_KEY = "hivebus.dashboard.by";

function isQuestion(row) {
  const kind = row.kind || row.approval_kind;
  return kind === "question" || kind === "ask_human" || row.tool === "ask_human";
}

function allowed(row) {
  if (Array.isArray(row.allowed_decisions) && row.allowed_decisions.length) return row.allowed_decisions;
  return isQuestion(row) ? ["respond", "reject"] : ["approve", "reject", "modify"];
}

function approver() {
  return (sessionStorage.getItem(BY_KEY) || "").trim() || "dashboard";
}

/** One approval as a card with its decision buttons; `onDone` runs after a decision landed. */
export function approvalCard(row, onDone) {
  const schema = row.schema || row.args_schema || null;
  const outcome = el("div", { class: "outcome", "aria-live": "polite" });
  const reason = el("textarea", { class: "reason-input", rows: "2", placeholder: "Reason (required to reject)", "aria-label": "Reason" });
  const editor = el("textarea", { class: "args-editor mono", rows: "8", spellcheck: "false", "aria-label": "New arguments (JSON)" });
  editor.value = JSON.stringify(row.arguments || {}, null, 2);
  const editorProblems = el("ul", { class: "problems" });
  const answer = el("textarea", { class: "answer-input", rows: "3", placeholder: "Your answer", "aria-label": "Answer" });
  const choices = allowed(row);
  const decisionsOff = app.config.decisions_allowed === false;
  const buttons = [];

  function button(decision, label, cls) {
    const b = el("button", { type: "button", class: cls, dataset: { decision }, disabled: decisionsOff }, label);
    buttons.push(b);
    return b;
  }

  function parsedArguments() {
    let value;
    try {
      value = JSON.parse(editor.value);
    } catch (exc) {
      return { problems: [`not JSON: ${exc.message}`] };
    }
    if (value === null || typeof value !== "object" || Array.isArray(value)) return { problems: ["the arguments must be a JSON object"] };
    return { value, problems: validate(value, schema) };
  }

  function checkEditor() {
    const { problems } = parsedArguments();
    fill(editorProblems, problems.map((p) => el("li", {}, p)));
    editor.setAttribute("aria-invalid", problems.length ? "true" : "false");
    return problems.length === 0;
  }
  editor.addEventListener("input", checkEditor);

  async function send(decision) {
    const body = { task_id: row.task_id, decision, by: approver() };
    const why = reason.value.trim();
    if (why) body.reason = why;
    if (decision === "reject" && !why) {
      fill(outcome, el("p", { class: "error" }, "Say why you reject it: a reason is required."));
      reason.focus();
      return;
    }
    if (decision === "modify") {
      const { value, problems } = parsedArguments();
      if (problems.length) {
        checkEditor();
        fill(outcome, el("p", { class: "error" }, "Fix the arguments first: ", problems.join("; ")));
        return;
      }
      body.arguments = value;
    }
    if (decision === "respond") {
      if (!answer.value.trim()) {
        fill(outcome, el("p", { class: "error" }, "Write an answer first."));
        return;
      }
      body.answer = answer.value;
    }
    for (const b of buttons) b.disabled = true;
    fill(outcome, el("p", { class: "muted" }, `Sending ${decision}…`));
    try {
      const result = await post(`/api/approvals/${seg(row.approval_id)}`, body);
      const status = (result && result.status) || "resolved";
      if (status === "resolved") {
        fill(outcome, el("p", { class: "resolved", dataset: { status } }, `Done: ${decision} — ${result.message || "resolved"}`));
        card.dataset.state = "resolved";
        if (onDone) onDone(row);
      } else if (status === "refused") {
        fill(outcome, el("p", { class: "refusal", role: "alert", dataset: { status } }, `Refused: ${result.message || status}`));
        card.dataset.state = "refused";
        for (const b of buttons) b.disabled = decisionsOff;
      } else {
        // Sent, but the orchestrator did not answer in time: it may still apply.
        fill(outcome, el("p", { class: "muted", dataset: { status } }, `Sent; no answer yet (${result.message || status}). This list refreshes when it applies.`));
        card.dataset.state = "sent";
      }
    } catch (exc) {
      const refused = exc instanceof ApiError && exc.status === 409;
      fill(outcome, refused ? el("p", { class: "refusal", role: "alert" }, "Refused: ", exc.message) : errorBox(exc));
      card.dataset.state = refused ? "refused" : "error";
      for (const b of buttons) b.disabled = decisionsOff;
    }
  }

  const actions = el("div", { class: "actions" });
  const modifyBox = el("div", { class: "modify-box", hidden: true }, el("div", { class: "label" }, "New arguments (JSON", schema ? ", checked against the tool's schema" : "", ")"), editor, editorProblems, el("div", { class: "actions" }, button("modify", "Send modified arguments", "primary")));
  for (const decision of choices) {
    if (decision === "approve") actions.append(button("approve", "Approve", "primary"));
    else if (decision === "reject") actions.append(button("reject", "Reject", "danger"));
    else if (decision === "modify")
      actions.append(
        el("button", { type: "button", class: "open-modify", disabled: decisionsOff, on: { click: () => { modifyBox.hidden = !modifyBox.hidden; checkEditor(); } } }, "Modify…"),
      );
  }
  for (const b of buttons) if (b.dataset.decision) b.addEventListener("click", () => send(b.dataset.decision));

  const respondBox = choices.includes("respond")
    ? el("div", { class: "respond-box" }, el("div", { class: "label" }, "Answer"), answer, el("div", { class: "actions" }, (() => { const b = button("respond", "Send answer", "primary"); b.addEventListener("click", () => send("respond")); return b; })()))
    : null;

  const card = el(
    "article",
    { class: "approval card", dataset: { approvalId: row.approval_id, taskId: row.task_id } },
    el(
      "header",
      {},
      el("span", { class: "mono name" }, row.tool),
      row.tier ? el("span", { class: "tier", dataset: { tier: row.tier } }, row.tier) : null,
      badge("awaiting_approval", (row.kind || row.approval_kind || "approval").replaceAll("_", " ")),
      el("span", { class: "spacer" }),
      el("span", { class: "muted small" }, "asked ", when(row.requested_at || row.ts)),
    ),
    facts([
      ["Task", link("/tasks/" + encodeURIComponent(row.task_id) + (row.subtask_id ? "?sub=" + encodeURIComponent(row.subtask_id) : ""), row.task_id)],
      ["Sub-task", row.subtask_id],
      ["Run", row.run_id],
      ["Approval", el("span", { class: "mono" }, row.approval_id)],
      ["Expires", row.expires_at ? when(row.expires_at) : null],
      ["Estimated cost", row.estimated_cost_usd !== null && row.estimated_cost_usd !== undefined ? `$${row.estimated_cost_usd}` : null],
    ]),
    row.reason ? el("div", { class: "model-reason" }, el("div", { class: "label" }, "Why it asks"), pre(row.reason, "output")) : null,
    row.question ? el("div", { class: "question" }, el("div", { class: "label" }, "Question"), pre(row.question, "output")) : null,
    el("div", { class: "label" }, "Arguments"),
    pre(row.arguments || {}, "data approval-args"),
    respondBox,
    choices.includes("reject") || choices.includes("approve") ? reason : null,
    actions,
    modifyBox,
    outcome,
  );
  return card;
}

/** The view for #/approvals (query: task). */
export function approvalsView(query) {
  const taskId = query.get("task") || null;
  let timer = null;
  let stopped = false;
  const cards = new Map();
  const list = el("div", { class: "approvals", id: "approvals-list" });
  const empty = el("p", { class: "muted", id: "approvals-empty" }, "Nothing waits for a person.");
  const problem = el("div");
  const by = el("input", { type: "text", id: "approver", value: sessionStorage.getItem(BY_KEY) || "", placeholder: "dashboard", "aria-label": "Your name", on: { input: () => sessionStorage.setItem(BY_KEY, by.value) } });

  async function load() {
    if (stopped) return;
    clearTimeout(timer);
    try {
      const data = await get("/api/approvals", { task_id: taskId });
      if (stopped) return;
      fill(problem);
      const ids = new Set(data.approvals.map((a) => a.approval_id));
      for (const [id, card] of cards) {
        if (!ids.has(id) && !card.dataset.state) {
          card.remove();
          cards.delete(id);
        }
      }
      for (const row of data.approvals) {
        if (cards.has(row.approval_id)) continue;
        const card = approvalCard(row, () => setTimeout(load, 500));
        cards.set(row.approval_id, card);
        list.append(card);
      }
      empty.hidden = cards.size > 0;
    } catch (exc) {
      if (!stopped) fill(problem, errorBox(exc));
    }
    if (!stopped) timer = setTimeout(load, REFRESH_MS);
  }

  return {
    async start(view) {
      fill(
        view,
        el("div", { class: "toolbar" }, el("h1", {}, "Approvals"), taskId ? el("span", {}, "for task ", link("/tasks/" + encodeURIComponent(taskId), taskId), " · ", link("/approvals", "all tasks")) : null, el("span", { class: "spacer" }), el("label", {}, "Decide as ", by)),
        app.config.decisions_allowed === false ? el("p", { class: "error-box" }, "Decisions are off: this dashboard listens on a non-loopback address without HIVEBUS_DASHBOARD_TOKEN.") : null,
        problem,
        empty,
        list,
      );
      await load();
    },
    stop() {
      stopped = true;
      clearTimeout(timer);
    },
  };
}
