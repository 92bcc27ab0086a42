// The run inspector's one script (docs/inspector.md): no framework, no build step.
// Every call goes to the ordinary API, signed in by the HttpOnly session cookie; a state-changing
// call echoes the noetl_csrf cookie in X-NoETL-CSRF. Ids are kept as strings: a Snowflake does
// not fit a JavaScript number.
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);
const el = (tag, attrs = {}, ...kids) => {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "text") node.textContent = v; else if (v !== null && v !== undefined && v !== false) node.setAttribute(k, v);
  }
  for (const kid of kids) node.append(kid);
  return node;
};
const SVG = "http://www.w3.org/2000/svg";
const svg = (tag, attrs = {}) => {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
};

function csrf() {
  const m = document.cookie.match(/(?:^|;\s*)noetl_csrf=([^;]+)/);
  return m ? m[1] : "";
}

// JSON.parse keeping integers beyond 2^53 exact, as strings (reviver source text access).
function parseJson(text) {
  return JSON.parse(text, (key, value, ctx) =>
    typeof value === "number" && !Number.isSafeInteger(value) && Number.isInteger(value) && ctx && ctx.source
      ? ctx.source : value);
}

async function api(method, path, body) {
  const init = { method, headers: { accept: "application/json" }, credentials: "same-origin" };
  if (method !== "GET") {
    init.headers["x-noetl-csrf"] = csrf();
    if (body !== undefined) { init.headers["content-type"] = "application/json"; init.body = JSON.stringify(body); }
  }
  const reply = await fetch(path, init);
  if (reply.status === 401) { location.href = "/ui/login"; throw new Error("signed out"); }
  const text = await reply.text();
  const data = text ? parseJson(text) : null;
  if (!reply.ok) {
    const err = new Error((data && (data.detail || data.message)) || `${reply.status} ${reply.statusText}`);
    err.status = reply.status;
    throw err;
  }
  return data;
}

const short = (iso) => (iso || "").slice(11, 23);
const ms = (iso) => (iso ? Date.parse(iso) : NaN);
const dur = (a, b) => { const d = ms(b) - ms(a); return Number.isFinite(d) ? (d >= 1000 ? `${(d / 1000).toFixed(2)} s` : `${d} ms`) : ""; };
const pretty = (v) => JSON.stringify(v, null, 2);
const TERMINAL = new Set(["COMPLETED", "FAILED", "CANCELLED"]);

function setupLogout() {
  const button = $("#logout");
  if (button) button.addEventListener("click", async () => {
    await fetch("/ui/logout", { method: "POST", headers: { "x-noetl-csrf": csrf() } });
    location.href = "/ui/login";
  });
}

// ---- runs list: the rows are re-rendered by the server while any of them runs ----
function runsPage() {
  const table = $("#runs");
  if (!table || !table.dataset.live) return;
  const refresh = async () => {
    if (!table.querySelector('tr[data-status="RUNNING"]')) return;
    const reply = await fetch(`/ui/rows?${table.dataset.query}`);
    if (reply.ok) $("#runs-body").outerHTML = await reply.text();
  };
  setInterval(refresh, 2000);
}

// ---- run page ----
const state = { id: null, summary: null, selected: null, lastEvent: null, eventsAfter: null, source: null,
  refreshing: false, again: false, logsAfter: null, logsLoading: false };

async function loadSummary() {
  if (state.refreshing) { state.again = true; return; }
  state.refreshing = true;
  try {
    state.summary = await api("GET", `/api/executions/${state.id}/summary`);
    render();
  } catch (err) {
    showError(err.message);
  } finally {
    state.refreshing = false;
    if (state.again) { state.again = false; setTimeout(loadSummary, 250); }
  }
}

function showError(text) { const box = $("#run-error"); box.hidden = false; box.textContent = text; }

function render() {
  const s = state.summary;
  const status = $("#run-status");
  status.textContent = s.status; status.className = `status s-${s.status}`;
  document.body.dataset.status = s.status;
  document.body.dataset.complete = s.complete ? "1" : "";
  const meta = $("#run-meta"); meta.textContent = "";
  meta.append(`${s.path} v${s.version} · created ${s.created_at || ""} · updated ${s.updated_at || ""} · ${s.events} events${s.events_cut ? " (the summary read only these)" : ""}`);
  if (s.parent_execution_id) meta.append(" · parent ", el("a", { href: `/ui/runs/${s.parent_execution_id}`, text: s.parent_execution_id }));
  if (s.rerun_of) meta.append(" · restart of ", el("a", { id: "rerun-of", href: `/ui/runs/${s.rerun_of}`, text: s.rerun_of }));
  if (s.reruns.length) {
    meta.append(" · restarted as");
    for (const r of s.reruns) meta.append(" ", el("a", { class: "rerun", href: `/ui/runs/${r.execution_id}`, text: r.execution_id }));
  }
  const box = $("#run-error");
  if (s.error) {
    box.hidden = false; box.textContent = "";
    box.append(el("strong", { text: s.error.step ? `Step ${s.error.step} failed: ` : "Error: " }), s.error.message);
    box.dataset.step = s.error.step || "";
  } else box.hidden = true;
  const cancel = $("#cancel"); if (cancel) cancel.hidden = s.status !== "RUNNING";
  const restart = $("#restart"); if (restart) restart.hidden = !TERMINAL.has(s.status);
  drawGraph(s); drawGantt(s); drawSteps(s); drawChildren(s);
  if (state.selected) showStep(state.selected, false);
  if (s.complete) { replayBadge(); if (state.source) { state.source.close(); state.source = null; } }
  $("#live").textContent = state.source ? "live" : ""; $("#live").className = state.source ? "badge ok" : "badge";
}

function layers(s) {
  const names = s.steps.map((x) => x.name);
  const depth = new Map(); const out = new Map(names.map((n) => [n, []]));
  for (const a of s.arcs) if (out.has(a.source)) out.get(a.source).push(a.target);
  const queue = names.length ? [names[0]] : []; if (queue.length) depth.set(names[0], 0);
  while (queue.length) {
    const n = queue.shift();
    for (const t of out.get(n) || []) if (!depth.has(t)) { depth.set(t, depth.get(n) + 1); queue.push(t); }
  }
  let extra = Math.max(0, ...depth.values()) + 1;
  for (const n of names) if (!depth.has(n)) depth.set(n, extra++);
  return depth;
}

function drawGraph(s) {
  const depth = layers(s); const cols = new Map(); const pos = new Map();
  const W = 150, H = 36, GX = 70, GY = 26;
  for (const step of s.steps) {
    const d = depth.get(step.name); const row = cols.get(d) || 0; cols.set(d, row + 1);
    pos.set(step.name, { x: 20 + d * (W + GX), y: 20 + row * (H + GY) });
  }
  const width = 40 + (Math.max(0, ...depth.values()) + 1) * (W + GX);
  const height = 40 + Math.max(1, ...cols.values()) * (H + GY);
  const root = svg("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img" });
  const defs = svg("defs"); const marker = svg("marker", { id: "head", viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 9, markerHeight: 9, markerUnits: "userSpaceOnUse", orient: "auto-start-reverse" });
  marker.append(svg("path", { d: "M 0 0 L 10 5 L 0 10 z", fill: "#57606a" })); defs.append(marker); root.append(defs);
  for (const a of s.arcs) {
    const p = pos.get(a.source), q = pos.get(a.target); if (!p || !q) continue;
    const x1 = p.x + W, y1 = p.y + H / 2, x2 = q.x, y2 = q.y + H / 2;
    const back = x2 <= x1; const mx = (x1 + x2) / 2;
    const d = back ? `M ${x1} ${y1} C ${x1 + 60} ${y1 - 80}, ${x2 - 60} ${y2 - 80}, ${x2} ${y2}` : `M ${x1} ${y1} C ${mx} ${y1}, ${mx} ${y2}, ${x2} ${y2}`;
    const path = svg("path", { d, class: a.fired ? "arc fired" : "arc", "marker-end": "url(#head)", "data-source": a.source, "data-target": a.target, "data-fired": a.fired });
    const title = svg("title"); title.textContent = `${a.source} → ${a.target}${a.when ? ` when ${a.when}` : ""}: fired ${a.fired}×${a.implicit ? " (implicit)" : ""}`;
    path.append(title); root.append(path);
    if (a.fired > 1) { const t = svg("text", { x: mx, y: (y1 + y2) / 2 - 4, class: "arc-label" }); t.textContent = `×${a.fired}`; root.append(t); }
  }
  for (const step of s.steps) {
    const p = pos.get(step.name);
    const g = svg("g", { class: `node s-${step.status}${state.selected === step.name ? " selected" : ""}`, "data-step": step.name, transform: `translate(${p.x},${p.y})` });
    g.append(svg("rect", { width: W, height: H }));
    const label = svg("text", { x: 8, y: 15 }); label.textContent = step.name.length > 20 ? `${step.name.slice(0, 19)}…` : step.name;
    const sub = svg("text", { x: 8, y: 29, fill: "#57606a" });
    sub.textContent = `${step.status.toLowerCase()}${step.loop ? ` · loop ${step.loop_count ?? ""}` : ""}`;
    const title = svg("title"); title.textContent = `${step.name} (${(step.tools || []).join(", ") || "no tool"})`;
    g.append(label, sub, title); g.addEventListener("click", () => showStep(step.name, true));
    root.append(g);
  }
  $("#graph").replaceChildren(root);
}

function drawGantt(s) {
  const bars = s.bars; const box = $("#gantt");
  if (!bars.length) { box.replaceChildren(el("p", { class: "hint", text: "No command has run yet." })); return; }
  const t0 = Math.min(...bars.map((b) => ms(b.issued_at || b.start)).filter(Number.isFinite));
  const ends = bars.map((b) => ms(b.end)).filter(Number.isFinite);
  const t1 = Math.max(t0 + 1, ...ends, s.status === "RUNNING" ? Date.now() : t0 + 1);
  const pct = (t) => `${(100 * (t - t0)) / (t1 - t0)}%`;
  const rows = bars.map((b) => {
    const track = el("div", { class: "track" });
    const start = ms(b.start), end = Number.isFinite(ms(b.end)) ? ms(b.end) : (s.status === "RUNNING" ? Date.now() : start);
    if (Number.isFinite(ms(b.issued_at)) && Number.isFinite(start)) {
      const q = el("div", { class: "queued" }); q.style.left = pct(ms(b.issued_at)); q.style.width = `${(100 * (start - ms(b.issued_at))) / (t1 - t0)}%`; track.append(q);
    }
    if (Number.isFinite(start)) {
      const bar = el("div", { class: `bar s-${b.status}`, title: `${b.label}: ${dur(b.start, b.end)}${b.worker_id ? ` on ${b.worker_id}` : ""}` });
      bar.style.left = pct(start); bar.style.width = `${(100 * (end - start)) / (t1 - t0)}%`; track.append(bar);
    }
    const info = b.count !== null && b.count !== undefined
      ? `${b.done}/${b.count} done${b.failed ? `, ${b.failed} failed` : ""}${b.attempts > b.count ? `, ${b.attempts} attempts` : ""}`
      : `${b.status.toLowerCase()} ${dur(b.start, b.end)}`;
    const label = el("div", { class: "label", title: b.label }, b.label);
    for (const c of b.children || []) label.append(" ", el("a", { href: `/ui/runs/${c.execution_id}`, class: "child", text: `↳ ${c.path}` }));
    return el("div", { class: `row${b.count != null ? " loop" : ""}`, "data-step": b.step, "data-count": b.count ?? "" }, label, track, el("div", { class: "meta", text: info }));
  });
  box.replaceChildren(...rows);
}

function drawSteps(s) {
  const rows = s.steps.map((step) => {
    const tr = el("tr", { "data-step": step.name, class: state.selected === step.name ? "selected" : "" },
      el("td", { text: step.name }), el("td", {}, el("span", { class: `status s-${step.status}`, text: step.status })),
      el("td", { text: step.loop ? `${step.loop_count ?? 0} items${step.failed_iterations ? `, ${step.failed_iterations} failed` : ""}` : `${step.attempts} attempt(s)` }),
      el("td", { text: dur(step.started_at, step.ended_at) }));
    tr.addEventListener("click", () => showStep(step.name, true));
    return tr;
  });
  $("#steps").replaceChildren(el("thead", {}, el("tr", {}, el("th", { text: "Step" }), el("th", { text: "Status" }), el("th", { text: "Work" }), el("th", { text: "Time" }))), el("tbody", {}, ...rows));
  const pick = $("#event-step"); const current = pick.value;
  pick.replaceChildren(el("option", { value: "", text: "any" }), ...s.steps.map((x) => el("option", { value: x.name, text: x.name })));
  pick.value = current;
}

function drawChildren(s) {
  const list = $("#children");
  list.replaceChildren(...(s.children.length ? s.children.map((c) => el("li", {}, el("a", { href: `/ui/runs/${c.execution_id}`, text: c.execution_id }), ` ${c.path} `, el("span", { class: `status s-${c.status}`, text: c.status })))
    : [el("li", { class: "hint", text: "none" })]));
}

function showStep(name, fresh) {
  const step = state.summary.steps.find((x) => x.name === name); if (!step) return;
  if (fresh) { state.selected = name; drawGraph(state.summary); drawSteps(state.summary); state.logsAfter = null; }
  const box = $("#step-detail");
  const parts = [el("h3", { text: `${step.name} ` }, el("span", { class: `status s-${step.status}`, text: step.status }))];
  if (step.error) parts.push(el("h4", { text: "Error" }), el("pre", { class: "error step-error", text: typeof step.error === "string" ? step.error : pretty(step.error) }));
  parts.push(el("h4", { text: "Input" }), el("pre", { class: "step-input", text: pretty(step.input) }));
  parts.push(el("h4", { text: `Output${step.output_cut ? ` (first items of ${step.output_chars} characters)` : ""}` }), el("pre", { class: "step-output", text: step.output === null ? "—" : pretty(step.output) }));
  const logs = el("pre", { class: "logs", id: "logs", text: "loading…" });
  parts.push(el("h4", { text: "Logs" }), logs);
  if (fresh || !$("#logs")) { box.replaceChildren(...parts); loadLogs(name, logs); }
  else { const keep = $("#logs"); parts[parts.length - 1] = keep; box.replaceChildren(...parts); loadLogs(name, keep, true); }
}

async function loadLogs(step, target, more) {
  if (state.logsLoading === step) return;
  state.logsLoading = step;
  try {
    const after = more ? state.logsAfter : null;
    const reply = await api("GET", `/api/executions/${state.id}/logs?step=${encodeURIComponent(step)}&limit=500${after ? `&after=${after}` : ""}`);
    if (state.selected !== step) return;
    if (!after) target.textContent = "";
    for (const item of reply.items) target.append(`${short(item.at)} ${item.stream}${item.level ? ` ${item.level}` : ""} ${item.text}\n`);
    if (reply.items.length) state.logsAfter = String(reply.items[reply.items.length - 1].seq);
    if (!target.textContent) target.textContent = "(no log lines)";
    if (reply.truncated && !after) target.append("… some output was cut at the bound\n");
  } catch (err) {
    target.textContent = err.status === 404 ? "No logs are recorded for this execution on this server." : `logs: ${err.message}`;
  } finally {
    if (state.logsLoading === step) state.logsLoading = false;
  }
}

// ---- event log: server-side filters, paged by event id ----
function eventRow(e) {
  const detail = JSON.stringify({ ...(e.context || {}), ...(e.meta ? { meta: e.meta } : {}) });
  const tr = el("tr", { "data-type": e.event_type, "data-step": e.step || "" }, el("td", { text: short(e.created_at) }),
    el("td", { text: e.event_type }), el("td", { text: e.step || "" }), el("td", { text: e.status || "" }),
    el("td", { class: "detail-cell mono", text: detail.length > 4000 ? `${detail.slice(0, 4000)}…` : detail }));
  tr.addEventListener("click", () => tr.classList.toggle("open"));
  return tr;
}

function filterQuery() {
  const form = $("#event-filters"); const q = new URLSearchParams();
  for (const name of ["event_type", "step"]) { const v = form.elements[name].value; if (v) q.set(name, v); }
  return q;
}

async function loadEvents(reset) {
  const body = $("#events tbody");
  if (reset) { body.replaceChildren(); state.eventsAfter = null; }
  const q = filterQuery(); q.set("limit", "200"); if (state.eventsAfter) q.set("after", state.eventsAfter);
  const reply = await api("GET", `/api/executions/${state.id}/events?${q}`);
  for (const e of reply.events) body.append(eventRow(e));
  if (reply.events.length) state.eventsAfter = String(reply.events[reply.events.length - 1].event_id);
  $("#more-events").hidden = reply.events.length < 200;
}

function matches(e) {
  const q = filterQuery(); const type = q.get("event_type"), step = q.get("step");
  if (step && e.step !== step) return false;
  if (!type) return true;
  return type.endsWith(".") ? e.event_type.startsWith(type) : e.event_type === type;
}

let summaryTimer = null;
function follow() {
  if (state.summary.complete || state.source) return;
  const after = state.summary.last_event_id ? `?after=${state.summary.last_event_id}` : "";
  const source = new EventSource(`/api/executions/${state.id}/stream${after}`);
  state.source = source;
  source.onmessage = (msg) => {
    const e = parseJson(msg.data);
    if ($("#more-events").hidden && matches(e)) { $("#events tbody").append(eventRow(e)); state.eventsAfter = String(e.event_id); }
    if (!summaryTimer) summaryTimer = setTimeout(() => { summaryTimer = null; loadSummary(); }, 300);
    if (e.event_type.startsWith("playbook.") && e.event_type !== "playbook.started" && e.event_type !== "playbook.execution_requested") {
      source.close(); state.source = null; setTimeout(loadSummary, 50);
    }
  };
  source.onerror = () => { if (source.readyState === EventSource.CLOSED) state.source = null; };
  render();
}

async function replayBadge() {
  const badge = $("#replay");
  if (badge.dataset.done === state.summary.last_event_id) return;
  badge.dataset.done = state.summary.last_event_id;
  badge.className = "badge wait"; badge.textContent = "replay: checking…";
  try {
    const r = await api("GET", `/api/executions/${state.id}/replay`);
    if (!r.log_complete) { badge.className = "badge wait"; badge.textContent = "replay: log incomplete"; badge.dataset.done = ""; }
    else if (r.matches) { badge.className = "badge ok"; badge.textContent = "replay = stored state"; }
    else { badge.className = "badge bad"; badge.textContent = `replay differs: ${Object.keys(r.differences).join(", ")}`; }
  } catch (err) { badge.className = "badge bad"; badge.textContent = `replay: ${err.message}`; }
}

// ---- actions ----
function setupActions() {
  const cancel = $("#cancel");
  if (cancel) cancel.addEventListener("click", async () => {
    if (!confirm(`Cancel execution ${state.id}?`)) return;
    try { await api("POST", `/api/executions/${state.id}/cancel`, { reason: "cancelled from the run inspector" }); }
    catch (err) { showError(err.message); }
    loadSummary();
  });
  const dialog = $("#restart-dialog"); const restart = $("#restart");
  if (!restart) return;
  const body = () => ({ from_step: $("#restart-step").value, failed_iterations_only: $("#restart-failed-only").checked });
  const fail = (err) => { const p = $("#restart-error"); p.hidden = false; p.textContent = err.message; };
  restart.addEventListener("click", () => {
    const s = state.summary; const pick = $("#restart-step");
    pick.replaceChildren(...s.steps.map((x) => el("option", { value: x.name, text: x.name })));
    pick.value = state.selected || (s.error && s.error.step) || (s.steps[0] && s.steps[0].name) || "";
    $("#restart-plan").replaceChildren(); $("#restart-error").hidden = true; $("#restart-confirm").disabled = true;
    dialog.showModal();
  });
  $("#restart-step").addEventListener("change", () => { $("#restart-confirm").disabled = true; $("#restart-plan").replaceChildren(); });
  $("#restart-preview").addEventListener("click", async () => {
    $("#restart-error").hidden = true;
    try {
      const plan = await api("POST", `/api/executions/${state.id}/rerun`, { ...body(), dry_run: true });
      $("#restart-plan").replaceChildren(el("p", { text: `Reused: ${plan.reused.join(", ") || "none"}` }), el("p", { id: "restart-rerun", text: `Run again: ${plan.rerun.join(", ") || "none"}` }));
      $("#restart-confirm").disabled = false;
    } catch (err) { fail(err); }
  });
  $("#restart-confirm").addEventListener("click", async () => {
    try {
      const made = await api("POST", `/api/executions/${state.id}/rerun`, { ...body(), dry_run: false });
      location.href = `/ui/runs/${made.execution_id}`;
    } catch (err) { fail(err); }
  });
  $("#restart-close").addEventListener("click", () => dialog.close());
}

async function runPage(root) {
  state.id = root.dataset.executionId;
  setupActions();
  $("#event-filters").addEventListener("change", () => loadEvents(true).catch((err) => showError(err.message)));
  $("#more-events").addEventListener("click", () => loadEvents(false).catch((err) => showError(err.message)));
  await loadSummary();
  if (!state.summary) return;
  follow();
  loadEvents(true).catch((err) => showError(err.message));
  document.body.dataset.readyAt = String(Math.round(performance.now()));
  document.body.dataset.ready = "1";
}

document.addEventListener("DOMContentLoaded", () => {
  setupLogout();
  const root = $("#page");
  if (!root) return;
  if (root.dataset.page === "runs") runsPage();
  if (root.dataset.page === "run") runPage(root);
});
