// The plan as a DAG, drawn as SVG from the layout the server computed (`graph` in
// /api/tasks/<id>: node boxes with their top-left corners, edges as polylines).
// Node colours come from the stylesheet through `data-status`, so the legend and the
// nodes cannot disagree.

import { el, svg } from "./dom.js";

/** Every sub-task status, in the order the legend lists them. */
export const STATUSES = [
  "pending", "ready", "dispatched", "running", "awaiting_approval", "completed",
  "failed", "timeout", "budget_exceeded", "loop_detected", "blocked", "cancelled", "rejected",
];

const PAD = 12;
const MAX_LABEL = 22;

function short(text, max = MAX_LABEL) {
  return text.length > max ? text.slice(0, max - 1) + "…" : text;
}

function pathOf(points) {
  return points.map(([x, y], i) => `${i ? "L" : "M"}${(x + PAD).toFixed(1)},${(y + PAD).toFixed(1)}`).join(" ");
}

/**
 * Draw the DAG. `subtasks` are the task's sub-tasks; `onSelect(id)` is called when a node is
 * clicked (or chosen with Enter/Space). Returns {element, update(subtasks), select(id)}.
 */
export function drawDag(graph, subtasks, onSelect) {
  const byId = new Map(subtasks.map((s) => [s.id, s]));
  const width = Math.max(graph.width || 0, 1) + 2 * PAD;
  const height = Math.max(graph.height || 0, 1) + 2 * PAD;
  const root = svg("svg", {
    class: "dag",
    id: "dag",
    viewBox: `0 0 ${width.toFixed(1)} ${height.toFixed(1)}`,
    width: width.toFixed(0),
    height: height.toFixed(0),
    role: "group",
    "aria-label": "The plan's sub-tasks and their dependencies",
  });
  root.append(
    svg("defs", {}, svg("marker", { id: "dag-arrow", viewBox: "0 0 10 10", refX: "9", refY: "5", markerWidth: "7", markerHeight: "7", orient: "auto-start-reverse" }, svg("path", { d: "M0,0 L10,5 L0,10 z", class: "dag-arrow" }))),
  );
  const edges = svg("g", { class: "edges" });
  const edgeNodes = [];
  for (const edge of graph.edges || []) {
    const path = svg("path", { class: "edge", d: pathOf(edge.points || []), "marker-end": "url(#dag-arrow)", dataset: { from: edge.from, to: edge.to } });
    edgeNodes.push(path);
    edges.append(path);
  }
  root.append(edges);

  const nodes = svg("g", { class: "nodes" });
  const nodeEls = new Map();
  for (const box of graph.nodes || []) {
    const g = svg("g", {
      class: "node",
      tabindex: "0",
      role: "button",
      transform: `translate(${(box.x + PAD).toFixed(1)},${(box.y + PAD).toFixed(1)})`,
      dataset: { id: box.id },
      on: {
        click: () => onSelect(box.id),
        keydown: (event) => {
          if (event.key === "Enter" || event.key === " ") {
            event.preventDefault();
            onSelect(box.id);
          }
        },
      },
    });
    const title = svg("title");
    const rect = svg("rect", { class: "node-box", width: box.w.toFixed(1), height: box.h.toFixed(1), rx: "6", ry: "6" });
    const name = svg("text", { class: "node-name", x: (box.w / 2).toFixed(1), y: (box.h / 2 - 7).toFixed(1), "text-anchor": "middle" }, short(box.id));
    const detail = svg("text", { class: "node-detail", x: (box.w / 2).toFixed(1), y: (box.h / 2 + 9).toFixed(1), "text-anchor": "middle" });
    g.append(title, rect, name, detail);
    nodes.append(g);
    nodeEls.set(box.id, { g, rect, detail, title });
  }
  root.append(nodes);

  let selected = null;

  function update(list) {
    for (const s of list) byId.set(s.id, s);
    for (const [id, { g, detail, title }] of nodeEls) {
      const sub = byId.get(id) || { id, status: "pending" };
      const status = sub.status || "pending";
      g.dataset.status = status;
      g.setAttribute("aria-label", `${id}: ${status.replaceAll("_", " ")}` + (sub.blocked_by ? `, blocked by ${sub.blocked_by}` : ""));
      detail.textContent = sub.blocked_by ? short("blocked by " + sub.blocked_by, 26) : short(`${sub.role || ""} · ${status.replaceAll("_", " ")}`, 26);
      if (sub.blocked_by) g.dataset.blockedBy = sub.blocked_by;
      else delete g.dataset.blockedBy;
      title.textContent = `${id} (${sub.role || "?"}) — ${status}` + (sub.reason ? `: ${sub.reason}` : "") + (sub.blocked_by ? ` — blocked by ${sub.blocked_by}` : "");
    }
    for (const path of edgeNodes) {
      const to = byId.get(path.dataset.to);
      path.classList.toggle("blocked", Boolean(to && to.status === "blocked"));
    }
    select(selected);
  }

  function select(id) {
    selected = id;
    const sub = id ? byId.get(id) : null;
    const cause = sub && sub.blocked_by;
    for (const [nodeId, { g }] of nodeEls) {
      g.classList.toggle("selected", nodeId === id);
      g.classList.toggle("cause", nodeId === cause);
    }
  }

  update(subtasks);
  return { element: root, update, select };
}

/** The legend: a swatch and a count for each status the task's sub-tasks are in. */
export function legend(subtasks) {
  const counts = new Map();
  for (const s of subtasks) counts.set(s.status, (counts.get(s.status) || 0) + 1);
  const list = el("ul", { class: "legend", id: "dag-legend", "aria-label": "Status colours" });
  for (const status of STATUSES) {
    const n = counts.get(status) || 0;
    list.append(
      el(
        "li",
        { dataset: { status }, class: n ? "present" : "absent" },
        el("span", { class: "swatch", dataset: { status } }),
        status.replaceAll("_", " "),
        n ? el("span", { class: "muted" }, ` ${n}`) : null,
      ),
    );
  }
  return list;
}
