// The ViWorkS operator dashboard: a hash-routed page on the REST API.
// The token lives in this module's memory only (never a URL, never storage).
import { api, session, signIn, signOut, onSignOut, ProblemError } from "./api.js";
import { events } from "./events.js";
import { h, fmtTime, ago, statusCell, table } from "./dom.js";
import { chart } from "./chart.js";

const $ = (id) => document.getElementById(id);
const FINAL = ["succeeded", "failed", "partially_succeeded", "cancelled", "timed_out", "expired"];

// ---- messages ----
function showError(err) {
  const box = $("error");
  if (!err) { box.replaceChildren(); return; }
  if (err instanceof ProblemError) {
    const p = err.problem;
    const items = (p.errors || []).map((e) => h("li", {}, `${e.field}: ${e.message}`));
    box.replaceChildren(h("strong", {}, p.title || "Error"), document.createTextNode(p.detail ? " — " + p.detail : ""),
      items.length ? h("ul", {}, ...items) : "");
  } else {
    box.replaceChildren(h("strong", {}, "Error"), document.createTextNode(" — " + (err.message || String(err))));
  }
}
function showMessage(text) { $("message").textContent = text || ""; }

// ---- routing ----
let current = null; // the page shown: {dispose()}
const routes = [
  [/^#\/fleet$/, fleetPage],
  [/^#\/agents\/(.+)$/, agentPage],
  [/^#\/commands$/, commandsPage],
  [/^#\/commands\/([0-9a-f-]{36})$/, commandPage],
  [/^#\/send$/, sendPage, "operator"],
  [/^#\/schedules$/, schedulesPage],
  [/^#\/schedules\/([^/]+)$/, schedulePage],
  [/^#\/templates$/, templatesPage],
  [/^#\/templates\/([^/]+)$/, templatePage],
  [/^#\/status$/, statusPage],
  [/^#\/admin$/, adminPage, "admin"],
];

// navigate goes to hash and shows message there (another page's message
// is cleared on the way).
let pending = "";
function navigate(hash, message) { pending = message; location.hash = hash; }

function route() {
  if (!session.token) return;
  showError(null);
  showMessage(pending);
  pending = "";
  if (current) { current.dispose(); current = null; }
  const hash = location.hash || "#/fleet";
  for (const [re, page, role] of routes) {
    const m = hash.match(re);
    if (!m) continue;
    if (role && !session.allows(role)) {
      $("view").replaceChildren(h("h1", {}, "Not allowed"), h("p", {}, `This page needs the ${role} role; you are ${session.role}.`));
      return;
    }
    for (const a of $("nav").querySelectorAll("a")) {
      const href = a.getAttribute("href");
      a.toggleAttribute("aria-current", hash === href || hash.startsWith(href + "/"));
      if (a.hasAttribute("aria-current")) a.setAttribute("aria-current", "page");
    }
    const view = h("div", {});
    $("view").replaceChildren(view);
    current = page(view, ...m.slice(1).map(decodeURIComponent)) || { dispose() {} };
    return;
  }
  location.hash = "#/fleet";
}

// coalesce runs fn at most once per interval however often it is asked to.
function coalesce(fn, interval = 700) {
  let timer = null, again = false, stopped = false;
  const run = async () => {
    again = false;
    try { await fn(); } catch (err) { showError(err); }
    timer = setTimeout(() => { timer = null; if (again && !stopped) run(); }, interval);
  };
  const ask = () => { if (stopped) return; if (timer) { again = true; return; } run(); };
  ask.stop = () => { stopped = true; clearTimeout(timer); };
  return ask;
}

// ---- sign in / out ----
function showSignedIn() {
  $("signin").hidden = true;
  $("nav").hidden = false;
  for (const a of $("nav").querySelectorAll("[data-role]")) a.hidden = !session.allows(a.dataset.role);
  $("who").textContent = `${session.subject} (${session.role})`;
  events.start();
  route();
}

function showSignedOut(reason) {
  if (current) { current.dispose(); current = null; }
  events.stop();
  $("view").replaceChildren();
  $("nav").hidden = true;
  $("signin").hidden = false;
  showError(null);
  showMessage(reason || "");
  const input = $("credential");
  input.value = "";
  input.focus();
}

$("signin-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  showError(null);
  showMessage("");
  try {
    await signIn($("credential").value.trim());
    $("credential").value = "";
    showSignedIn();
  } catch (err) {
    showError(err);
  }
});
$("signout").addEventListener("click", () => signOut("Signed out."));
onSignOut(showSignedOut);
window.addEventListener("hashchange", route);

// keyset keeps a list page's place in the API's keyset pages (the cursor of
// every page seen and the current one) and draws its Previous/Next controls
// into pager; reload shows the page it moved to.
function keyset(pager, reload) {
  let cursors = [""], page = 0;
  const go = (step) => () => { page += step; reload(); };
  return {
    query(qs) { if (cursors[page]) qs.set("cursor", cursors[page]); },
    reset() { cursors = [""]; page = 0; },
    show(list) {
      cursors[page + 1] = list.next_cursor || null;
      pager.replaceChildren(
        h("button", { type: "button", class: "secondary", disabled: page === 0, onclick: go(-1) }, "Previous page"),
        h("span", {}, `page ${page + 1}`),
        h("button", { type: "button", class: "secondary", disabled: !cursors[page + 1], onclick: go(1) }, "Next page"));
    },
  };
}

// ---- Fleet ----
function fleetPage(view) {
  const f = { status: "", site: "", label: "", capability: "", q: "" };
  let rows = [];
  const counts = h("div", { class: "counts", "aria-label": "Agent counts" });
  const form = h("form", { class: "filters", role: "search" },
    field("Status", h("select", { name: "status", id: "f-status" }, h("option", { value: "" }, "any"), h("option", {}, "online"), h("option", {}, "offline"))),
    field("Site", h("input", { name: "site", id: "f-site", size: 10 })),
    field("Label (key=value)", h("input", { name: "label", id: "f-label", size: 14 })),
    field("Capability", h("input", { name: "capability", id: "f-capability", size: 10 })),
    field("Id prefix", h("input", { name: "q", id: "f-q", size: 12 })),
    h("button", { type: "submit" }, "Filter"));
  const body = h("div", { class: "table-wrap" });
  const pager = h("div", { class: "pager" });
  view.append(h("h1", {}, "Fleet"), counts, form, body, pager);
  const pages = keyset(pager, () => refresh());

  form.addEventListener("submit", (e) => {
    e.preventDefault();
    for (const k of Object.keys(f)) f[k] = form.elements[k].value.trim();
    pages.reset(); refresh();
  });

  async function load() {
    const qs = new URLSearchParams({ limit: "50" });
    for (const [k, v] of Object.entries(f)) if (v) qs.set(k, v);
    pages.query(qs);
    const [list, sum] = await Promise.all([api("GET", "/agents?" + qs), api("GET", "/metrics")]);
    rows = list.items;
    pages.show(list);
    counts.replaceChildren(
      h("div", { class: "count" }, h("b", { id: "count-online" }, String(sum.agents.online)), "online"),
      h("div", { class: "count" }, h("b", { id: "count-stale" }, String(stale(rows))), "stale (this page)"),
      h("div", { class: "count" }, h("b", { id: "count-offline" }, String(sum.agents.offline)), "offline"),
      h("div", { class: "count" }, h("b", {}, String(sum.agents.total)), "registered"));
    body.replaceChildren(table(["Id", "Hostname", "Site", "Labels", "Version", "Status", "Last seen"], rows.map((a) => [
      h("a", { href: "#/agents/" + encodeURIComponent(a.id) }, a.id), a.hostname, a.site, labels(a.labels), a.version,
      statusCell(agentState(a)), fmtAgo(a.last_seen_at)]), "agents"));
  }
  const refresh = coalesce(load, 1000);
  refresh();
  const off = events.on((ev) => { if (ev.type.startsWith("agent.")) refresh(); });
  return { dispose() { off(); refresh.stop(); } };
}

// An online agent silent for three heartbeats plus a flush is "stale" (the
// API's default threshold; GET /agents/{id}/health says it exactly).
const STALE_AFTER_S = 95;
function agentState(a) {
  if (a.status !== "online") return "offline";
  if (!a.last_seen_at || (Date.now() - Date.parse(a.last_seen_at)) / 1000 > STALE_AFTER_S) return "stale";
  return "online";
}
function stale(rows) { return rows.filter((a) => agentState(a) === "stale").length; }
function labels(m) { return Object.entries(m || {}).map(([k, v]) => `${k}=${v}`).join(", "); }
function fmtAgo(t) { return t ? h("time", { datetime: t, title: fmtTime(t) }, ago(t)) : "never"; }

function field(label, input) {
  const id = input.id || (input.id = "i-" + Math.random().toString(36).slice(2));
  return h("div", {}, h("label", { for: id }, label), input);
}

// ---- Agent ----
function agentPage(view, id) {
  const path = "/agents/" + encodeURIComponent(id);
  const info = h("div", {});
  const charts = h("div", { class: "grid", id: "charts" });
  const ranges = h("div", { class: "row", role: "group", "aria-label": "Telemetry range" });
  const recent = h("div", { class: "table-wrap" });
  let range = "1h";
  view.append(h("h1", {}, "Agent ", h("code", {}, id)), info, h("h2", {}, "Telemetry"), ranges, charts, h("h2", {}, "Recent commands"), recent);
  const spans = { "1h": [3600, "1m"], "24h": [86400, "15m"], "30d": [30 * 86400, "6h"] };
  const drawRanges = () => ranges.replaceChildren(...Object.keys(spans).map((r) =>
    h("button", { type: "button", class: r === range ? "" : "secondary", "aria-pressed": String(r === range), onclick: () => { range = r; drawRanges(); loadCharts(); } }, r)));
  drawRanges();

  async function loadInfo() {
    const [a, health] = await Promise.all([api("GET", path), api("GET", path + "/health")]);
    info.replaceChildren(h("dl", { class: "kv" },
      ...kv("State", statusCell(health.state)), ...kv("Health", `${health.health.status || "unknown"}, up ${health.health.uptime_s}s`),
      ...kv("Last seen", fmtAgo(health.last_seen_at)), ...kv("Hostname", a.hostname), ...kv("Site", a.site),
      ...kv("Labels", labels(a.labels) || "none"), ...kv("Capabilities", a.capabilities.join(", ") || "none"),
      ...kv("Version", a.version), ...kv("OS / arch", `${a.os} / ${a.arch}`), ...kv("Gateway", a.gateway_id)));
  }
  async function loadCharts() {
    const [span, step] = spans[range];
    const to = Math.floor(Date.now() / 1000), from = to - span;
    const qs = new URLSearchParams({ from: String(from), to: String(to), step });
    for (const m of ["cpu_percent", "mem_percent", "disk_percent", "load1"]) qs.append("metric", m);
    const t = await api("GET", `${path}/telemetry?${qs}`);
    const names = { cpu_percent: "CPU %", mem_percent: "Memory %", disk_percent: "Disk %", load1: "Load (1 min)" };
    charts.replaceChildren(...Object.keys(names).map((m) => {
      const s = t.series.find((x) => x.metric === m) || { points: [] };
      return chart(names[m], s.points, from, to);
    }));
  }
  async function loadRecent() {
    const list = await api("GET", "/commands?limit=10&agent=" + encodeURIComponent(id));
    recent.replaceChildren(commandTable(list.items));
  }
  const refresh = coalesce(loadInfo, 1000);
  refresh();
  loadCharts().catch(showError);
  loadRecent().catch(showError);
  const off = events.on((ev) => { if (ev.agent_id === id) refresh(); });
  return { dispose() { off(); refresh.stop(); } };
}

function kv(k, v) { return [h("dt", {}, k), h("dd", {}, v)]; }

// ---- Commands ----
function commandTable(items) {
  return table(["Id", "Verb", "Status", "Priority", "Created by", "Created", "Targets"], items.map((c) => [
    h("a", { href: "#/commands/" + c.id }, c.id.slice(0, 8)), c.verb, statusCell(c.status), c.priority, c.created_by,
    fmtAgo(c.created_at), Object.entries(c.counts || {}).map(([k, v]) => `${v} ${k}`).join(", ")]), "commands");
}

function commandsPage(view) {
  const statuses = ["", "queued", "running", ...FINAL];
  const form = h("form", { class: "filters", role: "search" },
    field("Status", h("select", { name: "status", id: "c-status" }, ...statuses.map((s) => h("option", { value: s }, s || "any")))),
    field("Verb", h("input", { name: "verb", id: "c-verb", size: 12 })),
    field("Agent", h("input", { name: "agent", id: "c-agent", size: 12 })),
    h("button", { type: "submit" }, "Filter"));
  const body = h("div", { class: "table-wrap" });
  const pager = h("div", { class: "pager" });
  view.append(h("h1", {}, "Commands"), form, body, pager);
  const pages = keyset(pager, () => refresh());
  form.addEventListener("submit", (e) => { e.preventDefault(); pages.reset(); refresh(); });
  async function load() {
    const qs = new URLSearchParams({ limit: "50" });
    for (const k of ["status", "verb", "agent"]) { const v = form.elements[k].value.trim(); if (v) qs.set(k, v); }
    pages.query(qs);
    const list = await api("GET", "/commands?" + qs);
    pages.show(list);
    body.replaceChildren(commandTable(list.items));
  }
  const refresh = coalesce(load, 1000);
  refresh();
  const off = events.on((ev) => { if (ev.type === "command.status") refresh(); });
  return { dispose() { off(); refresh.stop(); } };
}

function commandPage(view, id) {
  const head = h("div", {});
  const execs = h("div", { class: "table-wrap" });
  view.append(h("h1", {}, "Command ", h("code", {}, id)), head, h("h2", {}, "Executions"), execs);
  async function load() {
    const c = await api("GET", "/commands/" + id);
    const open = !FINAL.includes(c.status);
    const cancel = session.allows("operator") && open
      ? h("button", { type: "button", class: "danger", id: "cancel", onclick: async (e) => {
        e.target.disabled = true;
        try { await api("DELETE", "/commands/" + id); showMessage("Cancelled."); } catch (err) { showError(err); }
        refresh();
      } }, "Cancel")
      : "";
    head.replaceChildren(h("dl", { class: "kv" },
      ...kv("Status", h("span", { id: "command-status" }, statusCell(c.status))), ...kv("Verb", c.verb),
      ...kv("Arguments", h("pre", {}, JSON.stringify(c.args))), ...kv("Priority", c.priority),
      ...kv("Created", `${fmtTime(c.created_at)} by ${c.created_by}`), ...kv("Finished", c.finished_at ? fmtTime(c.finished_at) : "—"),
      ...kv("Counts", Object.entries(c.counts).map(([k, v]) => `${v} ${k}`).join(", ")),
      ...(c.schedule_id ? kv("Schedule", h("a", { href: "#/schedules/" + encodeURIComponent(c.schedule_id), id: "command-schedule" }, c.schedule_id)) : [])), cancel);
    execs.replaceChildren(table(["Agent", "Status", "Attempts", "Exit code", "Output", "Error", "Dispatched", "Duration"], c.executions.map((e) => [
      h("a", { href: "#/agents/" + encodeURIComponent(e.agent_id) }, e.agent_id), statusCell(e.status), String(e.attempts),
      e.exit_code == null ? "—" : String(e.exit_code), h("pre", {}, e.output), e.error,
      e.dispatched_at ? fmtTime(e.dispatched_at) : "—", duration(e.started_at || e.dispatched_at, e.finished_at)]), "executions"));
  }
  const refresh = coalesce(load, 500);
  refresh();
  const off = events.on((ev) => { if (ev.command_id === id) refresh(); });
  return { dispose() { off(); refresh.stop(); } };
}

function duration(from, to) {
  if (!from || !to) return "—";
  const ms = Date.parse(to) - Date.parse(from);
  return ms < 1000 ? `${ms} ms` : `${(ms / 1000).toFixed(1)} s`;
}

// ---- Send command ----
function sendPage(view) {
  const num = (name, label, min) => field(label, h("input", { name, id: "s-" + name, type: "number", min: String(min), inputmode: "numeric" }));
  const form = h("form", { id: "send-form", novalidate: true },
    h("div", { class: "row" },
      field("Verb", h("input", { name: "verb", id: "s-verb", required: true, size: 18, value: "echo" })),
      field("Mode", h("select", { name: "mode", id: "s-mode" }, h("option", { value: "" }, "default (all matching agents)"),
        h("option", { value: "all" }, "all matching agents"), h("option", { value: "any" }, "any one online agent"))),
      field("Priority", h("select", { name: "priority", id: "s-priority" }, h("option", { value: "" }, "default (normal)"),
        ...["low", "normal", "high", "critical"].map((p) => h("option", {}, p))))),
    field("Arguments (a JSON object)", h("textarea", { name: "args", id: "s-args", spellcheck: "false" }, '{"message": "hello"}')),
    h("fieldset", {}, h("legend", {}, "Or from a template (its verb and arguments; its defaults unless set here)"),
      h("div", { class: "row" },
        field("Template", h("select", { name: "template", id: "s-template" }, h("option", { value: "" }, "none: the verb and arguments above"))),
        h("div", { class: "grow" }, field("Params (a JSON object)", h("textarea", { name: "params", id: "s-params", spellcheck: "false" }, "{}"))))),
    h("fieldset", {}, h("legend", {}, "Targets: agent ids and/or a selector"),
      h("div", { class: "row" },
        field("Agent ids (comma separated)", h("input", { name: "ids", id: "s-ids", size: 30 })),
        field("Site", h("input", { name: "site", id: "s-site", size: 12 })),
        field("Labels (key=value, comma separated)", h("input", { name: "labels", id: "s-labels", size: 24 })),
        field("Capability", h("input", { name: "capability", id: "s-capability", size: 12 })))),
    h("div", { class: "row" }, num("timeout_seconds", "Timeout (s)", 1), num("ttl_seconds", "TTL (s)", 1),
      num("max_retries", "Max retries", 0), num("max_concurrency", "Max concurrency", 1), num("max_errors", "Max errors", 0)),
    h("div", { class: "preview", id: "preview", "aria-live": "polite" }, "Fill in targets to see which agents match."),
    h("button", { type: "submit", id: "send" }, "Send command"));
  view.append(h("h1", {}, "Send a command"), form);

  // build turns the form into a request body; it throws on invalid input.
  function build() {
    const el = form.elements;
    const body = {};
    if (el.mode.value) body.mode = el.mode.value;
    if (el.priority.value) body.priority = el.priority.value;
    if (el.template.value) {
      body.template = el.template.value;
      const params = jsonObject(el.params.value, "Params");
      if (params) body.params = params;
    } else {
      body.verb = el.verb.value.trim();
      const args = jsonObject(el.args.value, "Arguments");
      if (args) body.args = args;
    }
    const ids = el.ids.value.split(",").map((s) => s.trim()).filter(Boolean);
    if (ids.length) body.agent_targets = ids;
    const sel = {};
    if (el.site.value.trim()) sel.site = el.site.value.trim();
    if (el.capability.value.trim()) sel.capability = el.capability.value.trim();
    const lbl = el.labels.value.split(",").map((s) => s.trim()).filter(Boolean);
    if (lbl.length) {
      sel.labels = {};
      for (const l of lbl) {
        const i = l.indexOf("=");
        if (i < 1) throw new Error(`Label "${l}" is not key=value`);
        sel.labels[l.slice(0, i)] = l.slice(i + 1);
      }
    }
    if (Object.keys(sel).length) body.selector = sel;
    for (const k of ["timeout_seconds", "ttl_seconds", "max_retries", "max_concurrency", "max_errors"]) {
      const v = el[k].value.trim();
      if (v === "") continue;
      if (!/^\d+$/.test(v)) throw new Error(`${k} must be a whole number`);
      body[k] = Number(v);
    }
    return body;
  }
  const pick = form.elements.template;
  const fromTemplate = () => { form.elements.verb.disabled = form.elements.args.disabled = pick.value !== ""; };
  pick.addEventListener("change", fromTemplate);
  api("GET", "/templates?limit=200").then((l) => {
    pick.append(...l.items.map((t) => h("option", { value: t.name }, `${t.name} (v${t.version}, ${t.verb})`)));
  }).catch(showError);
  const box = form.querySelector("#preview");
  async function preview() {
    let body;
    try { body = build(); } catch (err) { box.textContent = err.message; return; }
    if (!body.agent_targets && !body.selector) { box.textContent = "Fill in targets to see which agents match."; return; }
    try {
      const p = await api("POST", "/commands/preview", { agent_targets: body.agent_targets, selector: body.selector, mode: body.mode });
      const list = p.agents.slice(0, 10).map((a) => a.id).join(", ") + (p.agents_truncated || p.agents.length > 10 ? ", …" : "");
      box.replaceChildren(h("strong", { id: "preview-summary" }, `${p.matched} agents match: ${p.online} online, ${p.stale} stale, ${p.offline} offline`),
        h("div", { class: "hint" }, p.mode === "any" ? "Mode any runs it on one online agent among them. " : "", list));
    } catch (err) {
      if (err instanceof ProblemError) box.textContent = `${err.problem.title}: ${err.problem.detail || ""}`;
      else box.textContent = String(err.message || err);
    }
  }
  const refresh = coalesce(preview, 400);
  form.addEventListener("input", refresh);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    showError(null);
    let body;
    try { body = build(); } catch (err) { showError(err); return; }
    const btn = form.querySelector("#send");
    btn.disabled = true;
    try {
      const c = await api("POST", "/commands", body);
      location.hash = "#/commands/" + c.id;
    } catch (err) {
      showError(err);
    } finally {
      btn.disabled = false;
    }
  });
  return { dispose() { refresh.stop(); } };
}

// ---- Schedules ----
function timetable(s) {
  if (s.interval_seconds) return `every ${s.interval_seconds} s`;
  return `${s.cron} (${s.timezone || "UTC"})`;
}
function scheduleCommand(s) { return s.template ? `template ${s.template}` : `verb ${s.command.verb}`; }
function pausedCell(s) { return statusCell(s.paused ? "paused" : "active"); }
function maybeAgo(t) { return t ? fmtAgo(t) : "—"; }
function fmtWhen(t) { return t ? h("time", { datetime: t, title: fmtTime(t) }, fmtTime(t)) : "—"; }

function schedulesPage(view) {
  const body = h("div", { class: "table-wrap" });
  const pager = h("div", { class: "pager" });
  view.append(h("h1", {}, "Schedules"), body, pager);
  const pages = keyset(pager, () => refresh());
  async function load() {
    const qs = new URLSearchParams({ limit: "50" });
    pages.query(qs);
    const list = await api("GET", "/schedules?" + qs);
    pages.show(list);
    body.replaceChildren(table(["Name", "Timetable", "Command", "State", "Next run", "Last run", "Last outcome"], list.items.map((s) => [
      h("a", { href: "#/schedules/" + encodeURIComponent(s.id) }, s.name), timetable(s), scheduleCommand(s), pausedCell(s),
      s.paused ? "—" : fmtWhen(s.next_run_at), maybeAgo(s.last_run_at), s.last_outcome || "—"]), "schedules"));
  }
  // Runs are ordinary commands: their events (and a modest poll, for a
  // schedule whose due time is skipped) keep the list current.
  const refresh = coalesce(load, 1000);
  refresh();
  const off = events.on((ev) => { if (ev.type === "command.status") refresh(); });
  const timer = setInterval(refresh, 5000);
  return { dispose() { off(); clearInterval(timer); refresh.stop(); } };
}

function schedulePage(view, id) {
  const path = "/schedules/" + encodeURIComponent(id);
  const head = h("div", {});
  const controls = h("div", { class: "row", id: "schedule-controls" });
  const runs = h("div", { class: "table-wrap" });
  view.append(h("h1", {}, "Schedule ", h("code", {}, id)), head, controls, h("h2", {}, "Last runs"), runs);
  const act = (label, cls, fn) => h("button", { type: "button", class: cls, id: label.toLowerCase(), onclick: async (e) => {
    e.target.disabled = true;
    try { await fn(); } catch (err) { showError(err); e.target.disabled = false; }
  } }, label);
  let gone = false, shown = null; // shown: the paused state the controls are for
  async function load() {
    if (gone) return;
    const s = await api("GET", path);
    const c = s.command;
    const targets = [c.agent_targets.length ? "agents " + c.agent_targets.join(", ") : "",
      c.selector ? "selector " + JSON.stringify(c.selector) : ""].filter(Boolean).join("; ");
    head.replaceChildren(h("dl", { class: "kv" },
      ...kv("Name", s.name), ...kv("State", h("span", { id: "schedule-state" }, pausedCell(s))), ...kv("Timetable", timetable(s)),
      ...kv("Jitter", `${s.jitter_seconds} s`), ...kv("Overlap", s.overlap), ...kv("Catch up", s.catch_up),
      ...kv("Window", `${s.start_at ? fmtTime(s.start_at) : "now"} – ${s.end_at ? fmtTime(s.end_at) : "no end"}`),
      ...kv("Command", scheduleCommand(s)),
      ...(s.template ? kv("Params", h("pre", {}, JSON.stringify(s.params))) : []),
      ...kv("Arguments", h("pre", {}, JSON.stringify(c.args))), ...kv("Targets", targets || "none"),
      ...kv("Mode / priority", `${c.mode} / ${c.priority}`),
      ...kv("Next run", s.paused ? "— (paused)" : fmtWhen(s.next_run_at)), ...kv("Last run", maybeAgo(s.last_run_at)),
      ...kv("Last outcome", s.last_outcome || "—"), ...kv("Created", `${fmtTime(s.created_at)} by ${s.created_by}`)));
    if (session.allows("operator") && shown !== s.paused) {
      shown = s.paused;
      controls.replaceChildren(
        s.paused
          ? act("Resume", "", async () => { await api("POST", path + "/resume"); showMessage("Resumed."); refresh(); })
          : act("Pause", "secondary", async () => { await api("POST", path + "/pause"); showMessage("Paused."); refresh(); }),
        confirmButton("Delete", "delete", async () => {
          await api("DELETE", path);
          gone = true;
          navigate("#/schedules", `Deleted the schedule "${s.name}"; its runs stay as commands.`);
        }));
    }
    runs.replaceChildren(table(["Command", "Due", "Status", "Created", "Finished"], (s.runs || []).map((r) => [
      h("a", { href: "#/commands/" + r.command_id }, r.command_id.slice(0, 8)), fmtWhen(r.due_at), statusCell(r.status),
      fmtAgo(r.created_at), r.finished_at ? fmtWhen(r.finished_at) : "—"]), "runs"));
  }
  const refresh = coalesce(load, 1000);
  refresh();
  const off = events.on((ev) => { if (ev.type === "command.status") refresh(); });
  const timer = setInterval(refresh, 5000);
  return { dispose() { off(); clearInterval(timer); refresh.stop(); } };
}

// confirmButton asks twice: the first click turns it into "Confirm …",
// the second runs fn (a dialog would be modal and unlabelled).
function confirmButton(label, id, fn) {
  return h("button", { type: "button", class: "danger", id, onclick: async (e) => {
    const b = e.currentTarget;
    if (!b.dataset.armed) { b.dataset.armed = "true"; b.textContent = "Confirm " + label.toLowerCase(); return; }
    b.disabled = true;
    try { await fn(); } catch (err) { showError(err); b.disabled = false; }
  } }, label);
}

// ---- Templates ----
function templatesPage(view) {
  const body = h("div", { class: "table-wrap" });
  const pager = h("div", { class: "pager" });
  view.append(h("h1", {}, "Templates"), body, pager);
  const pages = keyset(pager, () => load().catch(showError));
  async function load() {
    const qs = new URLSearchParams({ limit: "50" });
    pages.query(qs);
    const list = await api("GET", "/templates?" + qs);
    pages.show(list);
    body.replaceChildren(table(["Name", "Version", "Verb", "Parameters", "Description", "Created"], list.items.map((t) => [
      h("a", { href: "#/templates/" + encodeURIComponent(t.name) }, t.name), String(t.version), t.verb,
      Object.keys(t.parameters || {}).join(", ") || "none", t.description, fmtAgo(t.created_at)]), "templates"));
  }
  load().catch(showError);
  return { dispose() {} };
}

// paramRows shows a template's parameters: a secret one says so, and its
// default (the API never holds a secret's value) is not shown either.
function paramRows(params) {
  return Object.entries(params || {}).sort(([a], [b]) => a.localeCompare(b)).map(([name, p]) => [
    h("code", {}, name), p.type + (p.type === "enum" && p.values ? ` (${p.values.join(", ")})` : "") + (p.pattern ? ` matching ${p.pattern}` : ""),
    p.required ? "required" : "optional",
    p.secret ? h("span", { class: "secret" }, "secret") : "no",
    p.secret || p.default === undefined ? "—" : JSON.stringify(p.default), p.description || ""]);
}

function templatePage(view, name) {
  const path = "/templates/" + encodeURIComponent(name);
  const head = h("div", {});
  const params = h("div", { class: "table-wrap" });
  const versions = h("div", { class: "table-wrap" });
  const controls = h("div", { class: "row" });
  view.append(h("h1", {}, "Template ", h("code", {}, name)), head, controls, h("h2", {}, "Parameters"), params, h("h2", {}, "Versions"), versions);
  async function load() {
    const [t, vs] = await Promise.all([api("GET", path), api("GET", path + "/versions")]);
    const d = t.defaults || {};
    head.replaceChildren(h("dl", { class: "kv" },
      ...kv("Latest version", String(t.version)), ...kv("Description", t.description || "—"), ...kv("Verb", t.verb),
      ...kv("Arguments", h("pre", {}, JSON.stringify(t.args))),
      ...kv("Defaults", Object.keys(d).length ? h("pre", {}, JSON.stringify(d)) : "none"),
      ...kv("Created", `${fmtTime(t.created_at)} by ${t.created_by}`)));
    params.replaceChildren(table(["Name", "Type", "Required", "Secret", "Default", "Description"], paramRows(t.parameters), "parameters"));
    versions.replaceChildren(table(["Version", "Verb", "Parameters", "Created by", "Created"], vs.items.map((v) => [
      String(v.version), v.verb, Object.keys(v.parameters || {}).join(", ") || "none", v.created_by, fmtWhen(v.created_at)]), "versions"));
    if (session.allows("admin")) {
      controls.replaceChildren(confirmButton("Retire", "retire", async () => {
        await api("DELETE", path);
        navigate("#/templates", `Retired the template "${name}"; commands and schedules made from it keep what they were made of.`);
      }));
    }
  }
  load().catch(showError);
  return { dispose() {} };
}

// jsonObject parses a form's JSON object field ("" is none); it throws a
// message naming the field otherwise.
function jsonObject(text, name) {
  const raw = text.trim();
  if (!raw) return null;
  let v;
  try { v = JSON.parse(raw); } catch (err) { throw new Error(`${name} are not valid JSON: ${err.message}`); }
  if (v === null || typeof v !== "object" || Array.isArray(v)) throw new Error(`${name} must be a JSON object`);
  return v;
}

// ---- Status ----
function statusPage(view) {
  const body = h("div", {});
  view.append(h("h1", {}, "Status"), body);
  async function load() {
    const [s, m] = await Promise.all([api("GET", "/status"), api("GET", "/metrics")]);
    const q = s.queue_depth;
    body.replaceChildren(
      h("div", { class: "counts" },
        h("div", { class: "count" }, h("b", {}, String(s.agents_online)), "agents online"),
        h("div", { class: "count" }, h("b", {}, String(q.total)), "queued"),
        h("div", { class: "count" }, h("b", {}, fmtMs(m.dispatch_latency.p50_ms)), "dispatch p50"),
        h("div", { class: "count" }, h("b", {}, fmtMs(m.dispatch_latency.p99_ms)), "dispatch p99")),
      h("h2", {}, "Queue depth by priority"),
      table(["Critical", "High", "Normal", "Low", "Total"], [[q.critical, q.high, q.normal, q.low, q.total].map(String)], "queue"),
      h("h2", {}, "Gateways"),
      table(["Id", "Agents online", "Live", "Hostname", "Version", "Last seen"], s.gateways.map((g) => [g.id, String(g.agents_online), g.live ? "yes" : "no", g.hostname, g.version, fmtAgo(g.last_seen_at)]), "gateways"),
      h("h2", {}, "Schedulers"),
      table(["Id", "Leader", "Hostname", "Version", "Last seen"], s.schedulers.map((x) => [x.id, x.leader ? "leader" : "", x.hostname, x.version, fmtAgo(x.last_seen_at)]), "schedulers"),
      h("h2", {}, "API servers"),
      table(["Id", "Hostname", "Version", "Last seen"], s.api_servers.map((x) => [x.id, x.hostname, x.version, fmtAgo(x.last_seen_at)]), "api servers"),
      h("p", { class: "hint" }, `Leader elected: ${s.leader_elected ? "yes" : "no"}. Dispatch latency over the last ${m.dispatch_latency.window_s} s, ${m.dispatch_latency.samples} samples.`));
  }
  const refresh = coalesce(load, 2000);
  refresh();
  const timer = setInterval(refresh, 5000);
  return { dispose() { clearInterval(timer); refresh.stop(); } };
}
function fmtMs(v) { return v == null ? "—" : `${Math.round(v * 10) / 10} ms`; }

// ---- Admin ----
function adminPage(view) {
  const sections = {
    rules: h("div", { class: "table-wrap" }), alerts: h("div", { class: "table-wrap" }), hooks: h("div", { class: "table-wrap" }),
    deliveries: h("div", { class: "table-wrap" }), keys: h("div", { class: "table-wrap" }), secrets: h("div", { class: "table-wrap" }),
    audit: h("div", { class: "table-wrap" }), verify: h("div", { id: "verify-result", "aria-live": "polite" }),
  };
  const verify = h("button", { type: "button", id: "verify", onclick: async () => {
    sections.verify.textContent = "Verifying…";
    try {
      const v = await api("GET", "/audit/verify");
      sections.verify.replaceChildren(statusCell(v.ok ? "ok" : "failed"), document.createTextNode(" " + JSON.stringify(v)));
    } catch (err) { sections.verify.textContent = ""; showError(err); }
  } }, "Verify");
  view.append(h("h1", {}, "Admin"),
    h("h2", {}, "Alert rules"), sections.rules, h("h2", {}, "Alerts"), sections.alerts,
    h("h2", {}, "Webhooks"), sections.hooks, sections.deliveries, h("h2", {}, "API keys"), sections.keys,
    h("h2", {}, "Enrollment secrets"), sections.secrets, h("h2", {}, "Audit trail"), h("div", { class: "row" }, verify, sections.verify), sections.audit);
  const show = (key, p, fn) => p.then(fn).catch(showError);
  show("rules", api("GET", "/alert-rules?limit=50"), (l) => sections.rules.replaceChildren(
    table(["Name", "Kind", "Params", "Enabled", "Created by"], l.items.map((r) => [r.name, r.kind, h("pre", {}, JSON.stringify(r.params)), r.enabled ? "yes" : "no", r.created_by]), "alert rules")));
  show("alerts", api("GET", "/alerts?limit=50"), (l) => sections.alerts.replaceChildren(
    table(["Rule", "Subject", "State", "Fired", "Resolved"], l.items.map((a) => [a.rule_name || a.rule_id, a.subject, statusCell(a.state), fmtAgo(a.fired_at), a.resolved_at ? fmtAgo(a.resolved_at) : "—"]), "alerts")));
  show("hooks", api("GET", "/webhooks?limit=50"), (l) => sections.hooks.replaceChildren(
    table(["URL", "Created", "Deliveries"], l.items.map((w) => [w.url, fmtAgo(w.created_at),
      h("button", { type: "button", class: "secondary", onclick: () => deliveries(w) }, "Show deliveries")]), "webhooks")));
  function deliveries(w) {
    show("deliveries", api("GET", `/webhooks/${w.id}/deliveries?limit=50`), (l) => sections.deliveries.replaceChildren(
      h("h3", {}, "Deliveries to " + w.url),
      table(["Event", "Status", "Attempts", "Response", "Error", "Created"], l.items.map((d) => [d.event || "", statusCell(d.status), String(d.attempts), String(d.response_code ?? "—"), d.last_error || "", fmtAgo(d.created_at)]), "deliveries")));
  }
  show("keys", api("GET", "/api-keys?limit=50"), (l) => sections.keys.replaceChildren(
    table(["Name", "Role", "Prefix", "Created", "Expires", "Revoked"], l.items.map((k) => [k.name, k.role, k.prefix || "", fmtAgo(k.created_at), k.expires_at ? fmtTime(k.expires_at) : "never", k.revoked_at ? fmtTime(k.revoked_at) : "—"]), "API keys")));
  show("secrets", api("GET", "/enrollment-secrets?limit=50"), (l) => sections.secrets.replaceChildren(
    table(["Name", "Site", "Labels", "Uses", "Expires", "Revoked"], l.items.map((s) => [s.name, s.site || "", labels(s.labels), `${s.uses}/${s.max_uses ?? "∞"}`, s.expires_at ? fmtTime(s.expires_at) : "never", s.revoked_at ? fmtTime(s.revoked_at) : "—"]), "enrollment secrets")));
  show("audit", api("GET", "/audit?limit=50"), (l) => sections.audit.replaceChildren(
    table(["Time", "Actor", "Action", "Target", "Details"], l.items.map((a) => [fmtTime(a.at || a.created_at), a.actor, a.action, a.target || "", h("pre", {}, JSON.stringify(a.details ?? {}))]), "audit events")));
  return { dispose() {} };
}

// ---- start ----
showSignedOut("");
document.body.dataset.ready = "true";
