// dbpool dashboard: polls the pool monitor every 2 s and draws the table and one pool's
// history as inline SVG. No dependencies, no build step, nothing fetched from elsewhere.
// The bearer key is asked for only when the API answers 401, kept in sessionStorage (this
// tab only) and sent only in the Authorization header, never in a URL.
"use strict";

const API = "/api/external-db-connections";
const REFRESH_MS = 2000;
const KEY_STORE = "dbpool.apiKey";
const SVG = "http://www.w3.org/2000/svg";
const MIN_SPAN_SAMPLES = 30; // the time axis spans at least this many sample intervals
const STATES = {
  ok: "serving normally",
  degraded: "the last health check failed",
  circuit_open: "connects keep failing: requests fail fast while a probe retries",
  auth_failed: "the database refused the credentials",
};

const $ = (id) => document.getElementById(id);
let selected = null; // connection id whose history is drawn
let timer = null;
let waitingForKey = false;

class ApiError extends Error {
  constructor(kind, message) {
    super(message);
    this.kind = kind; // "unauthorized" | "unreachable" | "http"
  }
}

async function api(path) {
  const key = sessionStorage.getItem(KEY_STORE);
  const headers = { Accept: "application/json" };
  if (key) headers.Authorization = `Bearer ${key}`;
  let response;
  try {
    response = await fetch(path, { headers, cache: "no-store" });
  } catch (err) {
    throw new ApiError("unreachable", `Cannot reach the dbpool API at ${location.origin} (${err.message}).`);
  }
  let body = null;
  try {
    body = await response.json();
  } catch (err) {
    body = null;
  }
  if (response.status === 401) {
    throw new ApiError("unauthorized", body?.error?.message ?? "401 Unauthorized");
  }
  if (!response.ok || !body?.success) {
    const detail = body?.error ? `${body.error.code}: ${body.error.message}` : `HTTP ${response.status}`;
    throw new ApiError("http", `The API answered ${response.status} (${detail}).`);
  }
  return body.data;
}

// ---- status line, panels ----------------------------------------------------------------

// The live region changes only when its words do (a screen reader announces each change);
// the time of the last refresh sits beside it, outside the region.
function setStatus(text, stale = false) {
  const status = $("status");
  if (status.textContent !== text) status.textContent = text;
  status.parentElement.classList.toggle("stale", stale);
  $("updated").textContent = stale ? "" : `· updated ${new Date().toLocaleTimeString()}`;
}

function show(id, visible) {
  $(id).hidden = !visible;
}

function showError(err) {
  if (err.kind === "unauthorized") {
    const had = Boolean(sessionStorage.getItem(KEY_STORE));
    $("key-message").textContent = had
      ? `The key was refused (401 Unauthorized: ${err.message}). Enter a valid DBPOOL_API_KEY or DBPOOL_ADMIN_API_KEY.`
      : "This dbpool needs a bearer key. It stays in this tab's session storage and is sent only in the Authorization header.";
    show("key-panel", true);
    show("error-panel", had);
    $("error-message").textContent = had ? "The key was refused (401). Nothing is shown until a valid key is entered." : "";
    show("pools-panel", false);
    show("chart-panel", false);
    show("empty-panel", false);
    setStatus(had ? "Key refused (401)" : "Key needed", true);
    waitingForKey = true;
    $("key-input").focus();
    return;
  }
  show("error-panel", true);
  $("error-message").textContent = `${err.message} Retrying every ${REFRESH_MS / 1000} s; the figures below are from the last successful refresh.`;
  setStatus(err.kind === "unreachable" ? "API unreachable" : "API error", true);
}

// ---- the table ------------------------------------------------------------------------

function cell(row, label, field, value, text = String(value), cls = "") {
  const td = row.insertCell();
  td.dataset.label = label;
  td.dataset.field = field;
  td.dataset.value = String(value);
  if (cls) td.className = cls;
  td.textContent = text;
  return td;
}

function stateCell(row, p) {
  const td = document.createElement("span"); // badge and probe time: one group on phones
  cell(row, "State", "state", p.state, "").append(td);
  const badge = document.createElement("span");
  badge.className = `state state-${p.state in STATES ? p.state : "other"}`;
  badge.textContent = p.state.replace(/_/g, " ");
  badge.title = STATES[p.state] ?? p.state;
  td.append(badge);
  if (p.nextProbeAt) { // while the circuit is open: when the breaker tries again
    const next = document.createElement("div");
    next.className = "bar-text";
    const seconds = Math.max(0, Math.round((Date.parse(p.nextProbeAt) - Date.now()) / 1000));
    next.textContent = `next try in ${seconds} s`;
    td.append(next);
  }
}

function connectionsCell(row, p) {
  const td = cell(row, "Connections", "openConnections", p.openConnections, "", "conn");
  td.dataset.active = String(p.activeConnections);
  td.dataset.idle = String(p.idleConnections);
  td.dataset.max = String(p.maxConnections);
  const bar = document.createElement("div");
  bar.className = "bar";
  bar.setAttribute("role", "img");
  const max = Math.max(1, p.maxConnections);
  const active = document.createElement("span");
  active.className = "active";
  active.style.width = `${(100 * p.activeConnections) / max}%`;
  const idle = document.createElement("span");
  idle.className = "idle";
  idle.style.left = active.style.width;
  idle.style.width = `${(100 * p.idleConnections) / max}%`;
  bar.append(active, idle);
  const text = document.createElement("div");
  text.className = "bar-text";
  text.textContent = `${p.activeConnections} active · ${p.idleConnections} idle · ${p.openConnections} / ${p.maxConnections} open`;
  bar.setAttribute("aria-label", text.textContent);
  td.append(bar, text);
}

function ago(iso) {
  const seconds = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  if (seconds < 60) return `${seconds} s ago`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
  return `${Math.floor(seconds / 3600)} h ago`;
}

function renderTable(pools) {
  const body = $("pools").tBodies[0];
  const rows = pools.map((p) => {
    const row = document.createElement("tr");
    row.dataset.connectionId = String(p.connectionId);
    row.classList.toggle("selected", p.connectionId === selected);
    const name = document.createElement("span");
    cell(row, "Name", "connectionName", p.connectionName, "").append(name);
    const pick = document.createElement("button");
    pick.type = "button";
    pick.className = "link";
    pick.textContent = p.connectionName;
    pick.title = "Show this pool's history";
    pick.addEventListener("click", () => select(p.connectionId));
    const id = document.createElement("span");
    id.className = "id";
    id.textContent = ` #${p.connectionId}`;
    name.append(pick, id);
    cell(row, "Type", "dbType", p.dbType);
    stateCell(row, p);
    connectionsCell(row, p);
    cell(row, "Waiting", "waitingRequests", p.waitingRequests, undefined, "num");
    const used = cell(row, "Last used", "lastUsedAt", p.lastUsedAt, "");
    const time = document.createElement("time");
    time.dateTime = p.lastUsedAt;
    time.title = p.lastUsedAt;
    time.textContent = ago(p.lastUsedAt);
    used.append(time);
    cell(row, "Idle s", "idleSeconds", p.idleSeconds, undefined, "num");
    cell(row, "Query errors", "queryErrors", p.stats.queryErrors, undefined, "num");
    cell(row, "Acquire timeouts", "acquireTimeouts", p.stats.acquireTimeouts, undefined, "num");
    cell(row, "Rebuilt", "recreations", p.stats.recreations, undefined, "num");
    return row;
  });
  body.replaceChildren(...rows);
}

function renderPicker(pools) {
  const picker = $("chart-pool");
  const options = pools.map((p) => new Option(`${p.connectionName} (#${p.connectionId})`, String(p.connectionId)));
  picker.replaceChildren(...options);
  picker.value = String(selected);
}

// ---- the charts -----------------------------------------------------------------------

function el(name, attrs, parent) {
  const node = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  parent.append(node);
  return node;
}

// Clears the chart and sizes its coordinates to the element's own pixels, so text keeps its
// size at any width; draws the value grid and returns the plot area.
function frame(svg, top, label) {
  svg.replaceChildren();
  const width = Math.max(200, Math.round(svg.clientWidth || 600));
  const height = Math.round(svg.clientHeight || 160);
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  const plot = { x: 40, y: 10, w: width - 50, h: height - 30 };
  for (const f of [0, 0.5, 1]) {
    const y = plot.y + plot.h * (1 - f);
    el("line", { x1: plot.x, x2: plot.x + plot.w, y1: y, y2: y, class: "grid" }, svg);
    el("text", { x: plot.x - 6, y: y + 4, "text-anchor": "end", class: "axis" }, svg).textContent = label(top * f);
  }
  return plot;
}

function timeAxis(svg, plot, from, to) {
  const span = Math.max(1, Math.round((to - from) / 1000));
  const left = span >= 120 ? `−${Math.round(span / 60)} min` : `−${span} s`;
  el("text", { x: plot.x, y: plot.y + plot.h + 16, class: "axis" }, svg).textContent = left;
  el("text", { x: plot.x + plot.w, y: plot.y + plot.h + 16, "text-anchor": "end", class: "axis" }, svg).textContent = "now";
}

// One polyline path through the points; a null value breaks the line.
function linePath(xs, values, y) {
  let d = "";
  let pen = false;
  values.forEach((v, i) => {
    if (v === null || v === undefined) {
      pen = false;
      return;
    }
    d += `${pen ? "L" : "M"}${xs[i].toFixed(1)},${y(v).toFixed(1)}`;
    pen = true;
  });
  return d;
}

// A filled band between two series (lower and upper), as one closed path.
function bandPath(xs, lower, upper, y) {
  if (!xs.length) return "";
  const top = xs.map((x, i) => `${x.toFixed(1)},${y(upper[i]).toFixed(1)}`);
  const bottom = xs.map((x, i) => `${x.toFixed(1)},${y(lower[i]).toFixed(1)}`).reverse();
  return `M${top.join("L")}L${bottom.join("L")}Z`;
}

function series(history, pool) {
  // The samples, plus the live status as the newest point, so the chart moves every refresh.
  const s = history ? history.samples : { at: [], active: [], idle: [], waiting: [], max: [], waitP99Ms: [], queriesPerSecond: [] };
  return {
    at: [...s.at, Date.now()],
    active: [...s.active, pool.activeConnections],
    idle: [...s.idle, pool.idleConnections],
    waiting: [...s.waiting, pool.waitingRequests],
    max: [...s.max, pool.maxConnections],
    p99: [...s.waitP99Ms, s.waitP99Ms.length ? s.waitP99Ms[s.waitP99Ms.length - 1] : null],
    qps: [...s.queriesPerSecond, s.queriesPerSecond.length ? s.queriesPerSecond[s.queriesPerSecond.length - 1] : null],
  };
}

function renderCharts(data, pool) {
  const history = data.pools.find((h) => h.connectionId === pool.connectionId);
  const s = series(history, pool);
  // At least a few dozen intervals, growing with the history up to its window.
  const from = Math.min(s.at[0], Date.now() - MIN_SPAN_SAMPLES * data.intervalSeconds * 1000);
  const to = s.at[s.at.length - 1];
  const conn = $("chart-connections");
  const top = Math.max(1, ...s.max, ...s.active.map((a, i) => a + s.idle[i]), ...s.waiting);
  const plot = frame(conn, top, (v) => String(Math.round(v)));
  const x = (t) => plot.x + (plot.w * (t - from)) / Math.max(1, to - from);
  const y = (v) => plot.y + plot.h * (1 - v / top);
  const xs = s.at.map(x);
  const zeros = s.active.map(() => 0);
  const opened = s.active.map((a, i) => a + s.idle[i]);
  el("path", { d: bandPath(xs, s.active, opened, y), class: "idle" }, conn);
  el("path", { d: bandPath(xs, zeros, s.active, y), class: "active" }, conn);
  el("path", { d: linePath(xs, s.waiting, y), class: "waiting" }, conn);
  el("path", { d: linePath(xs, s.max, y), class: "max" }, conn);
  timeAxis(conn, plot, from, to);
  conn.dataset.points = String(xs.length);

  const wait = $("chart-wait");
  const known = s.p99.filter((v) => v !== null);
  const topMs = Math.max(1, ...known);
  const plot2 = frame(wait, topMs, (v) => (v >= 10 ? String(Math.round(v)) : v.toFixed(1)));
  const x2 = (t) => plot2.x + (plot2.w * (t - from)) / Math.max(1, to - from);
  const y2 = (v) => plot2.y + plot2.h * (1 - v / topMs);
  const qpsKnown = s.qps.filter((v) => v !== null);
  const topQps = Math.max(1, ...qpsKnown);
  el("path", { d: linePath(s.at.map(x2), s.qps.map((v) => (v === null ? null : (v / topQps) * topMs)), y2), class: "qps" }, wait);
  el("path", { d: linePath(s.at.map(x2), s.p99, y2), class: "p99" }, wait);
  $("qps-scale").textContent = `queries/s (top of the chart: ${topQps >= 10 ? Math.round(topQps) : topQps.toFixed(1)}/s)`;
  timeAxis(wait, plot2, from, to);
  wait.dataset.points = String(known.length);

  const samples = history ? history.samples.at.length : 0;
  const lastQps = qpsKnown.length ? qpsKnown[qpsKnown.length - 1] : null;
  const lastP99 = known.length ? known[known.length - 1] : null;
  $("chart-title").textContent = `History: ${pool.connectionName}`;
  $("chart-summary").textContent =
    `${samples} samples, one every ${data.intervalSeconds} s (up to ${Math.round(data.windowSeconds / 60)} min). ` +
    `Latest: ${lastQps === null ? "no" : lastQps.toFixed(1)} queries/s, wait p99 ${lastP99 === null ? "n/a (nothing waited)" : `${lastP99.toFixed(2)} ms`}, ` +
    `peak in view ${Math.max(...opened)} open of ${pool.maxConnections}.`;
  conn.setAttribute("aria-label", `Connections of ${pool.connectionName} over the last ${Math.round((to - from) / 60000)} minutes`);
}

// ---- the refresh loop ---------------------------------------------------------------------

function renderEmpty() {
  const origin = location.origin;
  $("curl-register").textContent =
    `curl -X POST ${origin}${API} -H "Authorization: Bearer $DBPOOL_ADMIN_API_KEY" -H "Content-Type: application/json" ` +
    `-d '{"name": "crm", "dbType": "postgresql", "host": "127.0.0.1", "port": 5432, "database": "crm", "username": "app", "password": "…"}'`;
  $("curl-query").textContent =
    `curl -X POST ${origin}${API}/1/query -H "Authorization: Bearer $DBPOOL_API_KEY" -H "Content-Type: application/json" -d '{"sql": "SELECT 1"}'`;
}

async function refresh() {
  clearTimeout(timer);
  if (waitingForKey) return;
  try {
    const status = await api(`${API}/pool-status`);
    const pools = status.pools;
    if (!pools.some((p) => p.connectionId === selected)) selected = pools.length ? pools[0].connectionId : null;
    show("key-panel", false);
    show("error-panel", false);
    show("forget-key", Boolean(sessionStorage.getItem(KEY_STORE)));
    show("empty-panel", pools.length === 0);
    show("pools-panel", pools.length > 0);
    show("chart-panel", pools.length > 0);
    renderTable(pools);
    renderPicker(pools);
    if (selected !== null) {
      const history = await api(`${API}/pool-status/history?connectionId=${selected}`);
      renderCharts(history, pools.find((p) => p.connectionId === selected));
    }
    const open = pools.filter((p) => p.state !== "ok").length;
    setStatus(`${pools.length} pools · ${status.activePools} active` + (open ? ` · ${open} not ok` : ""));
  } catch (err) {
    showError(err);
  } finally {
    clearTimeout(timer); // a refresh started by a click may overlap the timer's: keep one loop
    if (!waitingForKey) timer = setTimeout(refresh, REFRESH_MS);
  }
}

function select(connectionId) {
  selected = connectionId;
  refresh();
}

function init() {
  renderEmpty();
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const key = $("key-input").value.trim();
    if (!key) return;
    sessionStorage.setItem(KEY_STORE, key);
    $("key-input").value = "";
    waitingForKey = false;
    setStatus("Loading…");
    refresh();
  });
  $("forget-key").addEventListener("click", () => {
    sessionStorage.removeItem(KEY_STORE);
    show("forget-key", false);
    refresh();
  });
  $("chart-pool").addEventListener("change", (event) => select(Number(event.target.value)));
  refresh();
}

init();
