// Small DOM helpers: elements are built with createElement and text nodes,
// never from HTML strings, so API data cannot inject markup.
export function h(tag, attrs, ...children) {
  const ns = tag === "svg" || attrs?.svg ? "http://www.w3.org/2000/svg" : null;
  const el = ns ? document.createElementNS(ns, tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "svg" || v === false || v == null) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (v === true) el.setAttribute(k, "");
    else el.setAttribute(k, String(v));
  }
  for (const c of children.flat()) {
    if (c === "" || c == null) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export function fmtTime(t) { return t ? new Date(t).toLocaleString() : ""; }

export function ago(t) {
  const s = Math.round((Date.now() - Date.parse(t)) / 1000);
  if (s < 5) return "just now";
  if (s < 120) return `${s} s ago`;
  if (s < 7200) return `${Math.round(s / 60)} min ago`;
  if (s < 172800) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}

export function statusCell(s) { return h("span", { class: "status s-" + s, "data-status": s }, s); }

// table renders rows (arrays of strings or nodes) under a header; label
// names it for assistive technology.
export function table(head, rows, label) {
  return h("table", { "aria-label": label },
    h("thead", {}, h("tr", {}, ...head.map((x) => h("th", { scope: "col" }, x)))),
    h("tbody", {}, ...(rows.length ? rows.map((r) => h("tr", {}, ...r.map((c) => h("td", {}, c))))
      : [h("tr", {}, h("td", { colspan: head.length }, "nothing here"))])));
}
