// Building the page from data, safely: every piece of data becomes a text node or an
// attribute value, never markup. No function here (or anywhere in the page) uses innerHTML.

const SVG_NS = "http://www.w3.org/2000/svg";

function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function apply(node, props) {
  for (const [key, value] of Object.entries(props || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.setAttribute("class", Array.isArray(value) ? value.filter(Boolean).join(" ") : value);
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key === "on") for (const [event, handler] of Object.entries(value)) node.addEventListener(event, handler);
    else if (key === "text") node.textContent = String(value);
    else if (key === "value") node.value = value;
    else if (key === "checked" || key === "disabled" || key === "hidden" || key === "open" || key === "selected") node[key] = Boolean(value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  return node;
}

/** An HTML element: el("td", {class: "num"}, "12", child, ...). Strings become text nodes. */
export function el(tag, props, ...children) {
  return append(apply(document.createElement(tag), props), children);
}

/** An SVG element, the same way. */
export function svg(tag, props, ...children) {
  return append(apply(document.createElementNS(SVG_NS, tag), props), children);
}

/** Replace everything inside `node` with `children`. */
export function fill(node, ...children) {
  node.replaceChildren();
  return append(node, children);
}

/** A <pre> holding a value as text: strings as they are, anything else as indented JSON. */
export function pre(value, cls = "data") {
  const text = typeof value === "string" ? value : JSON.stringify(value, null, 2);
  return el("pre", { class: cls }, text === undefined ? "null" : text);
}

/** A status badge; its colour comes from the stylesheet by `data-status`. */
export function badge(status, label) {
  return el("span", { class: "badge", dataset: { status: status || "unknown" } }, label || (status || "unknown").replaceAll("_", " "));
}

/** A link inside the page (hash route). */
export function link(route, ...children) {
  return el("a", { href: "#" + route }, ...children);
}

/** "term: value" pairs as a definition list; null values are left out. */
export function facts(pairs, cls = "facts") {
  const list = el("dl", { class: cls });
  for (const [term, value] of pairs) {
    if (value === null || value === undefined || value === "") continue;
    list.append(el("div", {}, el("dt", {}, term), el("dd", {}, value)));
  }
  return list;
}

const NUMBER = new Intl.NumberFormat("en", { maximumFractionDigits: 0 });

export function fmtInt(n) {
  return n === null || n === undefined ? "–" : NUMBER.format(n);
}

export function fmtCost(usd) {
  if (usd === null || usd === undefined) return "–";
  if (usd === 0) return "$0";
  return usd < 0.01 ? "$" + usd.toFixed(4) : "$" + usd.toFixed(2);
}

export function fmtSeconds(s) {
  if (s === null || s === undefined) return "–";
  if (s < 1) return Math.round(s * 1000) + " ms";
  if (s < 60) return s.toFixed(s < 10 ? 2 : 1) + " s";
  const m = Math.floor(s / 60);
  if (m < 60) return m + " min " + Math.round(s % 60) + " s";
  return Math.floor(m / 60) + " h " + (m % 60) + " min";
}

export function fmtPercent(rate) {
  return rate === null || rate === undefined ? "–" : (rate * 100).toFixed(rate < 0.1 ? 1 : 0) + "%";
}

/** A <time> showing "5 min ago" (or the date), with the exact UTC time as its title. */
export function when(iso) {
  if (!iso) return el("span", { class: "muted" }, "–");
  const at = new Date(iso);
  if (Number.isNaN(at.getTime())) return el("span", {}, String(iso));
  const ago = (Date.now() - at.getTime()) / 1000;
  let text;
  if (ago < 0) text = at.toLocaleString();
  else if (ago < 60) text = Math.floor(ago) + " s ago";
  else if (ago < 3600) text = Math.floor(ago / 60) + " min ago";
  else if (ago < 86400) text = Math.floor(ago / 3600) + " h ago";
  else text = at.toLocaleString();
  return el("time", { datetime: iso, title: iso }, text);
}

export function tokensOf(usage) {
  return usage ? (usage.input_tokens || 0) + (usage.output_tokens || 0) : 0;
}

/** A short usage summary: tokens in/out, cost, steps, tool calls, retries, wall time. */
export function usageLine(usage) {
  if (!usage) return "";
  const parts = [
    `${fmtInt(usage.input_tokens)} in / ${fmtInt(usage.output_tokens)} out tokens`,
    fmtCost(usage.cost_usd),
    `${usage.steps} steps`,
    `${usage.tool_calls} tool calls`,
  ];
  if (usage.retries) parts.push(`${usage.retries} retries`);
  if (usage.wall_s) parts.push(fmtSeconds(usage.wall_s));
  return parts.join(" · ");
}

/** Only http(s) URLs become links (a configured template could hold anything). */
export function safeUrl(url) {
  try {
    const parsed = new URL(url, location.href);
    return parsed.protocol === "http:" || parsed.protocol === "https:" ? parsed.href : null;
  } catch {
    return null;
  }
}

/** An error as the page shows it: the server's message, in its words, and the HTTP status. */
export function errorBox(exc) {
  const status = exc && exc.status ? ` (${exc.status})` : "";
  return el("div", { class: "error-box", role: "alert" }, el("strong", {}, "Error" + status + ": "), (exc && exc.message) || String(exc));
}
