// The dashboard page: one snapshot per server-sent event, rendered with
// textContent only (names and models come from the network).
"use strict";

const $ = (id) => document.getElementById(id);
let tasks = [];

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function pill(word) {
  const w = String(word || "unknown").toLowerCase();
  return el("span", w.toUpperCase(), "pill " + w.replace(/[^a-z]/g, ""));
}

const ms = (v) =>
  v == null ? "—" : v >= 1000 ? (v / 1000).toFixed(2) + " s" : v.toFixed(v < 10 ? 1 : 0) + " ms";
const num = (v, d) => (v == null ? "—" : Number(v).toFixed(v >= 1000 ? 0 : d));
const pct = (v) => (v == null ? "—" : (v * 100).toFixed(0) + "%");
const clock = (t) => new Date(t).toLocaleTimeString();

// Set a cell's text; flash it when the value changed since the last snapshot.
function setCell(td, text) {
  const s = String(text);
  if (td.textContent !== s) {
    if (td.dataset.seen) {
      td.classList.remove("changed");
      void td.offsetWidth;
      td.classList.add("changed");
    }
    td.textContent = s;
    td.dataset.seen = "1";
  }
}

function loadedCell(td, n) {
  td.replaceChildren();
  if (!n.loaded || n.loaded.length === 0) {
    td.textContent = "—";
    return;
  }
  for (const m of n.loaded) {
    const line = el("div", m.name + " " + pct(m.vram_share));
    const bar = el("span", null, "bar");
    const fill = el("span");
    fill.style.width = Math.round((m.vram_share || 0) * 100) + "%";
    bar.append(fill);
    line.append(bar);
    td.append(line);
  }
}

function renderNodes(nodes) {
  const body = $("nodes");
  const rows = new Map([...body.children].map((r) => [r.dataset.node, r]));
  const keep = new Set();
  for (const n of nodes) {
    keep.add(n.name);
    let r = rows.get(n.name);
    if (!r) {
      r = el("tr");
      r.dataset.node = n.name;
      for (const c of ["name", "status", "host", "models", "loaded", "requests", "errors", "latency", "tps", "inflight"]) {
        const td = el("td", null, c);
        if (["requests", "errors", "latency", "tps", "inflight"].includes(c)) td.classList.add("num");
        r.append(td);
      }
      body.append(r);
    }
    const cell = (c) => r.querySelector("td." + c);
    cell("name").replaceChildren(el("div", n.name), el("div", n.url, "models"));
    cell("status").replaceChildren(pill(n.status));
    if (n.last_error && n.status !== "up") cell("status").title = n.last_error;
    cell("host").textContent = n.host;
    cell("models").replaceChildren(el("span", (n.models || []).join(", ") || "—", "models"));
    loadedCell(cell("loaded"), n);
    setCell(cell("requests"), n.requests);
    setCell(cell("errors"), n.errors);
    setCell(cell("latency"), ms(n.avg_latency_ms));
    setCell(cell("tps"), num(n.tokens_per_sec, 1));
    setCell(cell("inflight"), n.in_flight);
  }
  for (const [name, r] of rows) if (!keep.has(name)) r.remove();
  $("nodes-empty").hidden = nodes.length > 0;
}

function renderPairs(dl, obj, empty) {
  dl.replaceChildren();
  const has = obj && typeof obj === "object" && Object.keys(obj).length > 0;
  empty.hidden = has;
  if (!has) return;
  for (const [k, v] of Object.entries(obj)) {
    if (v === null) continue;
    dl.append(el("dt", k.replace(/_/g, " ")));
    const dd = el("dd");
    if (k === "status") dd.append(pill(v));
    else if (Array.isArray(v)) dd.textContent = v.map((x) => (typeof x === "object" ? JSON.stringify(x) : x)).join(", ");
    else if (typeof v === "object") dd.textContent = JSON.stringify(v);
    else dd.textContent = typeof v === "number" && !Number.isInteger(v) ? v.toFixed(3) : v;
    dl.append(dd);
  }
}

function renderBackends(list) {
  const body = $("backends");
  body.replaceChildren();
  for (const b of list) {
    const r = el("tr");
    r.dataset.backend = b.address || "";
    const st = el("td");
    st.append(pill(b.status));
    r.append(el("td", b.address || "?"), st, el("td", b.requests ?? "—", "num"),
      el("td", pct(b.success_rate), "num"), el("td", ms(b.avg_latency_ms), "num"));
    body.append(r);
  }
  $("backends-empty").hidden = list.length > 0;
}

function renderTasks() {
  const body = $("tasks");
  body.replaceChildren();
  const now = Date.now();
  for (const t of tasks) {
    const r = el("tr");
    r.dataset.task = t.task;
    body.append(r);
    r.append(el("td", t.task), el("td", t.node), el("td", ((now - t.started_at_ms) / 1000).toFixed(1) + " s", "num"));
  }
  $("tasks-empty").hidden = tasks.length > 0;
}

function renderList(ol, items, line, empty) {
  ol.replaceChildren(...items.slice().reverse().map(line));
  empty.hidden = items.length > 0;
}

function renderGateway(g) {
  $("gateway-section").hidden = !g;
  if (!g) return;
  $("gateway-address").textContent = g.address ? "(" + g.address + ")" : "";
  const { recent, by_route, address, ...counts } = g;
  renderPairs($("gateway"), counts, { hidden: false });
  const body = $("gateway-recent");
  body.replaceChildren();
  for (const r of (recent || []).slice().reverse()) {
    const row = el("tr");
    row.append(el("td", clock(r.at_ms)), el("td", r.route), el("td", r.model), el("td", r.node),
      el("td", r.host || "—"), el("td", r.status, "num"), el("td", ms(r.ms), "num"),
      el("td", r.queue_ms == null ? "—" : ms(r.queue_ms), "num"));
    body.append(row);
  }
}

function render(s) {
  renderGateway(s.gateway);
  renderNodes(s.nodes || []);
  renderPairs($("coordinator"), s.coordinator, $("coordinator-empty"));
  renderBackends(s.backends || []);
  tasks = s.tasks || [];
  renderTasks();
  renderList($("routing"), s.routing || [], (d) => {
    const li = el("li");
    li.append(el("span", clock(d.at_ms) + " ", "dim"), el("strong", d.decision), el("span", " — " + d.reason, "dim"));
    return li;
  }, $("routing-empty"));
  const notices = (s.notices || []).slice(-5);
  $("notices-section").hidden = notices.length === 0;
  renderList($("notices"), notices, (n) => el("li", clock(n.at_ms) + "  " + n.line), { hidden: false });
  renderPairs($("metrics"), s.metrics, $("metrics-empty"));
  document.body.dataset.version = s.version;
  $("updated").textContent = "updated " + new Date().toLocaleTimeString();
}

function connect() {
  const conn = $("conn");
  const es = new EventSource("api/events");
  es.addEventListener("snapshot", (e) => {
    conn.textContent = "live";
    conn.className = "pill live";
    render(JSON.parse(e.data));
  });
  es.onerror = () => {
    conn.textContent = "offline — retrying";
    conn.className = "pill offline";
  };
}

document.addEventListener("DOMContentLoaded", () => {
  connect();
  setInterval(renderTasks, 1000);
});
