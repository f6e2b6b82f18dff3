// The page's router: hash routes (#/, #/tasks/<id>, #/approvals, #/dlq, #/dlq/<seq>, #/stats),
// one view at a time; leaving a view stops its timers and closes its event stream.

import { adoptUrlToken, ensureToken, get } from "./api.js";
import { el, errorBox, fill } from "./dom.js";
import { app } from "./state.js";
import { approvalsView } from "./approvals.js";
import { dlqEntryView, dlqListView } from "./dlq.js";
import { statsView } from "./stats.js";
import { taskView } from "./task.js";
import { tasksView } from "./tasks.js";

const ROUTES = [
  [/^\/?$/, "tasks", (m, q) => tasksView(q)],
  [/^\/tasks\/([^/]+)$/, "tasks", (m, q) => taskView(decodeURIComponent(m[1]), q)],
  [/^\/approvals$/, "approvals", (m, q) => approvalsView(q)],
  [/^\/dlq$/, "dlq", () => dlqListView()],
  [/^\/dlq\/([^/]+)$/, "dlq", (m) => dlqEntryView(decodeURIComponent(m[1]))],
  [/^\/stats$/, "stats", (m, q) => statsView(q)],
];

let current = null;

function parseHash() {
  const raw = location.hash.replace(/^#/, "") || "/";
  const [path, query] = raw.split("?", 2);
  return { path, query: new URLSearchParams(query || "") };
}

async function route() {
  if (current && current.stop) current.stop();
  current = null;
  const view = document.getElementById("view");
  const { path, query } = parseHash();
  for (const [pattern, section, make] of ROUTES) {
    const match = pattern.exec(path);
    if (!match) continue;
    for (const a of document.querySelectorAll("[data-nav]")) a.classList.toggle("active", a.dataset.nav === section);
    fill(view, el("p", { class: "muted" }, "Loading…"));
    const made = make(match, query);
    current = made;
    try {
      await made.start(view);
    } catch (exc) {
      if (current === made) fill(view, errorBox(exc));
    }
    return;
  }
  fill(view, el("h1", {}, "Not found"), el("p", {}, "No page at ", el("code", {}, path), ". ", el("a", { href: "#/" }, "Back to tasks")));
}

async function pollPending() {
  const badge = document.getElementById("pending-count");
  try {
    const data = await get("/api/approvals");
    const n = data.approvals.length;
    badge.hidden = n === 0;
    badge.textContent = String(n);
  } catch {
    badge.hidden = true;
  }
}

async function main() {
  adoptUrlToken();
  try {
    app.config = await get("/api/config");
  } catch (exc) {
    fill(document.getElementById("view"), errorBox(exc));
    return;
  }
  await ensureToken(app.config);
  window.addEventListener("hashchange", route);
  await route();
  pollPending();
  setInterval(pollPending, 5000);
}

main();
