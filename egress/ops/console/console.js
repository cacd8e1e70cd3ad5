// The egress operator console. No framework, no build step, nothing loaded from elsewhere.
//
// Rule one: whatever a skill controls (hosts, paths, queries, headers, bodies, audit
// details) reaches the page as text only: elements are built with createElement and filled
// with textContent, never innerHTML or attributes that take code or URLs. The server's CSP
// allows no inline script, so a string that got through as HTML would still not run.
"use strict";

const state = { csrf: null, user: null, events: null, activityTimer: null, focus: null };

// -- building the page, as text ------------------------------------------------------------
function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === null || value === undefined) continue;
    if (key === "className") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("data-") || ["id", "type", "title", "value", "placeholder"].includes(key)) {
      node.setAttribute(key, String(value));
    } else throw new Error("el: unsupported property " + key);
  }
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function clear(node) { node.replaceChildren(); return node; }
function byId(id) { return document.getElementById(id); }
function show(id, visible) { byId(id).hidden = !visible; }

function when(ts) {
  if (!ts) return "";
  const d = new Date(ts);
  return isNaN(d) ? String(ts) : d.toLocaleString();
}

function target(a) {
  const port = (a.port === 443 || a.port === 80) ? "" : ":" + a.port;
  return (a.method || "") + " " + (a.host || "") + port + (a.path || "") + (a.query ? "?" + a.query : "");
}

// -- talking to egress -------------------------------------------------------------------
async function api(path, options = {}) {
  const init = { method: options.method || "GET", credentials: "same-origin", headers: {} };
  if (options.body !== undefined) {
    init.body = JSON.stringify(options.body);
    init.headers["Content-Type"] = "application/json";
  }
  if (init.method !== "GET" && state.csrf) init.headers["X-Egress-CSRF"] = state.csrf;
  const response = await fetch(path, init);
  let data = null;
  try { data = await response.json(); } catch (e) { data = null; }
  if (response.status === 401 && path !== "/ui/login") {
    loggedOut("Your session ended; log in again.");
  }
  return { ok: response.ok, status: response.status, data };
}

// -- login ---------------------------------------------------------------------------------
async function login(body) {
  const r = await api("/ui/login", { method: "POST", body });
  if (!r.ok) {
    byId("login-error").textContent = (r.data && r.data.message) || ("login failed (" + r.status + ")");
    return false;
  }
  state.csrf = r.data.csrf;
  state.user = r.data.user;
  start();
  return true;
}

function loggedOut(message) {
  if (state.events) { state.events.close(); state.events = null; }
  state.csrf = null;
  for (const id of ["approvals", "activity", "skills", "tabs", "logout"]) show(id, false);
  byId("who").textContent = "";
  byId("login-error").textContent = message || "";
  show("login", true);
}

byId("login-form").addEventListener("submit", (event) => {
  event.preventDefault();
  login({ name: byId("login-name").value, token: byId("login-token").value });
  byId("login-token").value = "";
});

byId("logout").addEventListener("click", async () => {
  await api("/ui/logout", { method: "POST", body: {} });
  loggedOut("Logged out.");
});

// -- tabs ----------------------------------------------------------------------------------
const TABS = ["approvals", "activity", "skills"];

function route() {
  const hash = location.hash.replace(/^#/, "");
  let tab = "approvals";
  if (hash.startsWith("approval=")) {
    state.focus = hash.slice("approval=".length);
  } else if (TABS.includes(hash)) {
    tab = hash;
  }
  for (const t of TABS) {
    show(t, t === tab);
    byId("tab-" + t).className = t === tab ? "active" : "";
  }
  clearInterval(state.activityTimer);
  if (tab === "activity") {
    loadActivity();
    state.activityTimer = setInterval(loadActivity, 30000);
  }
  if (tab === "skills") loadSkills();
  if (tab === "approvals") focusApproval();
}
window.addEventListener("hashchange", route);

// -- approvals -----------------------------------------------------------------------------
function listen() {
  if (state.events) state.events.close();
  const source = new EventSource("/api/events");
  state.events = source;
  source.addEventListener("approvals", (event) => {
    byId("live-status").textContent = "live · updated " + new Date().toLocaleTimeString();
    const data = JSON.parse(event.data);
    renderApprovals(data.approvals);
    renderRecent(data.recent);
  });
  source.addEventListener("error", () => {
    byId("live-status").textContent = "connection lost; reconnecting…";
  });
}

function renderApprovals(approvals) {
  const list = byId("approval-list");
  const notes = {};
  for (const input of list.querySelectorAll("input[data-note]")) notes[input.getAttribute("data-note")] = input.value;
  clear(list);
  byId("pending-count").textContent = approvals.length ? String(approvals.length) : "";
  show("no-pending", approvals.length === 0);
  for (const a of approvals) list.append(approvalCard(a, notes[a.id] || ""));
  focusApproval();
}

function fact(label, value) {
  return el("div", { className: "fact" }, el("dt", { text: label }), el("dd", { text: value }));
}

function approvalCard(a, note) {
  const previous = Object.entries(a.previous || {}).map(([k, v]) => v + " " + k).join(", ");
  const card = el("article", { className: "approval", id: "approval-" + a.id, "data-approval": a.id },
    el("h3", { className: "request-line", text: target(a) }),
    el("dl", { className: "facts" },
      fact("skill", a.skill),
      fact("approval", a.id),
      fact("rule", a.rule),
      fact("credential", a.credential || "none"),
      fact("asked", when(a.asked_at) + (a.asked > 1 ? " (asked " + a.asked + " times)" : "")),
      fact("open until", when(a.expires_at)),
      fact("identical request before", previous || "never"),
      fact("approvals this skill asked before", String(a.skill_asked_before)),
      fact("request id", a.request_id)),
  );
  if (a.query) card.append(el("p", { className: "query" }, el("strong", { text: "query " }), el("code", { text: a.query })));
  if (a.headers && a.headers.length) {
    const table = el("table", { className: "headers" });
    for (const [name, value] of a.headers) table.append(el("tr", {}, el("th", { text: name }), el("td", { text: value })));
    card.append(el("details", {}, el("summary", { text: "headers (" + a.headers.length + ")" }), table));
  }
  const bodyLabel = a.body_kind === "none" ? "no body" :
    "body: " + a.body_kind + ", " + a.body_size + " bytes, sha256 " + a.body_sha256.slice(0, 16) + "…";
  card.append(el("p", { className: "muted", text: bodyLabel }));
  if (a.body_kind !== "none") {
    const pre = el("pre", { className: "body", "data-body": a.id, text: a.body });
    card.append(pre);
    if (a.body_truncated) {
      const more = el("button", { type: "button", text: "Show the whole body" });
      more.addEventListener("click", async () => {
        const r = await api("/api/approvals/" + encodeURIComponent(a.id));
        if (r.ok) { pre.textContent = r.data.body; more.remove(); }
      });
      card.append(more);
    }
  }
  const noteInput = el("input", { type: "text", placeholder: "note (optional)", "data-note": a.id, value: note });
  const approve = el("button", { type: "button", className: "approve", "data-approve": a.id, text: "Approve" });
  const deny = el("button", { type: "button", className: "deny", "data-deny": a.id, text: "Deny" });
  const status = el("span", { className: "decision-status", "data-status": a.id });
  const decide = async (verdict) => {
    approve.disabled = deny.disabled = true;
    const r = await api("/api/approvals/" + encodeURIComponent(a.id) + "/" + verdict,
      { method: "POST", body: { note: noteInput.value } });
    status.textContent = r.ok ? (verdict === "approve" ? "approved" : "denied") :
      ((r.data && r.data.message) || ("failed (" + r.status + ")"));
    if (!r.ok) approve.disabled = deny.disabled = false;
  };
  approve.addEventListener("click", () => decide("approve"));
  deny.addEventListener("click", () => decide("deny"));
  card.append(el("div", { className: "actions" }, noteInput, approve, deny, status));
  return card;
}

function focusApproval() {
  if (!state.focus) return;
  const card = byId("approval-" + state.focus);
  if (card) { card.classList.add("focus"); card.scrollIntoView({ block: "center" }); }
}

function renderRecent(recent) {
  const body = clear(byId("recent-body"));
  for (const a of recent) {
    body.append(el("tr", { "data-recent": a.id },
      el("td", { text: a.id }), el("td", { className: "state-" + a.state, text: a.state }),
      el("td", { text: a.skill }), el("td", { text: target(a) }),
      el("td", { text: a.decided_by || "" }), el("td", { text: a.note || "" }),
      el("td", { text: when(a.decided_at || a.asked_at) })));
  }
}

// -- activity ------------------------------------------------------------------------------
const COLOURS = ["#1f6feb", "#d1242f", "#1a7f37", "#9a6700", "#8250df", "#bf3989", "#0a7b83", "#57606a"];
const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

function drawChart(timeline) {
  const chart = clear(byId("chart"));
  const legend = clear(byId("chart-legend"));
  const width = 960, height = 260, left = 40, bottom = 24, top = 8;
  const skills = Object.keys(timeline.skills).sort();
  let n = 0, max = 1;
  for (const s of skills) {
    n = Math.max(n, timeline.skills[s].requests.length);
    for (const v of timeline.skills[s].requests) max = Math.max(max, v);
  }
  chart.append(svg("line", { x1: left, y1: height - bottom, x2: width, y2: height - bottom, stroke: "#8c959f" }));
  chart.append(svg("text", { x: 2, y: top + 10, "font-size": 11 }, String(max)));
  chart.append(svg("text", { x: 2, y: height - bottom, "font-size": 11 }, "0"));
  if (n === 0) {
    chart.append(svg("text", { x: left + 10, y: height / 2, "font-size": 13 }, "no requests in this period"));
    return;
  }
  const x = (i) => left + (n === 1 ? 0 : i * (width - left - 10) / (n - 1));
  const y = (v) => height - bottom - v * (height - bottom - top) / max;
  for (const i of [0, n - 1]) {
    const t = new Date((timeline.start + i * timeline.step) * 1000);
    chart.append(svg("text", { x: x(i), y: height - 6, "font-size": 11, "text-anchor": i ? "end" : "start" },
      t.toLocaleTimeString()));
  }
  skills.forEach((skill, k) => {
    const colour = COLOURS[k % COLOURS.length];
    const s = timeline.skills[skill];
    const line = (values) => values.map((v, i) => x(i) + "," + y(v)).join(" ");
    chart.append(svg("polyline", { points: line(s.requests), fill: "none", stroke: colour, "stroke-width": 2, "data-skill": skill }));
    chart.append(svg("polyline", { points: line(s.denials), fill: "none", stroke: colour, "stroke-width": 2, "stroke-dasharray": "4 3" }));
    const total = s.requests.reduce((a, b) => a + b, 0), denied = s.denials.reduce((a, b) => a + b, 0);
    const key = el("span", { className: "legend-item" }, el("span", { className: "swatch", "data-colour": k % COLOURS.length }),
      (skill || "(unauthenticated)") + ": " + total + " requests, " + denied + " denied");
    legend.append(key);
  });
  legend.append(el("span", { className: "muted", text: " (solid: requests, dashed: denials; counted by this egress since it started)" }));
}

function renderTopDenied(top) {
  const box = clear(byId("top-denied"));
  const skills = Object.keys(top);
  if (!skills.length) { box.append(el("p", { className: "muted", text: "No denials in this period." })); return; }
  for (const skill of skills) {
    const list = el("ol", {});
    for (const [host, count] of top[skill]) list.append(el("li", {}, el("code", { text: host }), " × " + count));
    box.append(el("div", { className: "top-skill" }, el("h4", { text: skill || "(unauthenticated)" }), list));
  }
}

async function loadActivity() {
  const minutes = byId("activity-minutes").value;
  const r = await api("/api/activity?minutes=" + encodeURIComponent(minutes));
  if (r.ok) { drawChart(r.data.timeline); renderTopDenied(r.data.top_denied_hosts); }
  await loadAudit();
}

async function loadAudit() {
  const params = new URLSearchParams();
  const pairs = { skill: "filter-skill", reason: "filter-reason", host: "filter-host", decision: "filter-decision",
    since: "filter-since", until: "filter-until", limit: "filter-limit" };
  for (const [key, id] of Object.entries(pairs)) {
    const value = byId(id).value.trim();
    if (value) params.set(key, value);
  }
  const r = await api("/api/audit?" + params.toString());
  const body = clear(byId("audit-body"));
  if (!r.ok) { byId("audit-status").textContent = (r.data && r.data.message) || "cannot read the audit log"; return; }
  byId("audit-status").textContent = r.data.audit ? r.data.records.length + " records from " + r.data.audit
    : "The audit log goes to stdout (--audit -); nothing to show here.";
  for (const rec of r.data.records) {
    const request = (rec.method ? rec.method + " " : "") + (rec.host || "") + (rec.port ? ":" + rec.port : "") + (rec.path || "");
    body.append(el("tr", { className: "decision-" + rec.decision, "data-record": rec.id || "" },
      el("td", { text: when(rec.ts) }), el("td", { text: rec.skill || "" }), el("td", { text: rec.decision || "" }),
      el("td", { text: rec.reason || "" }), el("td", { text: rec.kind || "" }), el("td", { className: "request", text: request }),
      el("td", { text: (rec.folded ? "×" + rec.folded + " " : "") + (rec.detail || "") + (rec.decided_by ? " — " + rec.decided_by : "") }),
      el("td", { text: rec.approval ? rec.id + " (approval " + rec.approval + ")" : (rec.id || "") })));
  }
}

byId("activity-minutes").addEventListener("change", loadActivity);
byId("audit-filter").addEventListener("submit", (event) => { event.preventDefault(); loadAudit(); });

// -- skills --------------------------------------------------------------------------------
function ruleText(rule) {
  const parts = [rule.host + ":" + rule.ports.join(",")];
  if (rule.methods) parts.push(rule.methods.join(" "));
  if (rule.paths) parts.push(rule.paths.join(" "));
  if (rule.credential) parts.push("credential " + rule.credential);
  if (rule.approval) parts.push("approval (wait " + rule.approval.wait + "s, valid " + rule.approval.valid_for + "s)");
  if (rule.raw_tcp) parts.push("raw TCP");
  if (rule.limits) parts.push(JSON.stringify(rule.limits));
  return parts.join(" · ");
}

async function loadSkills() {
  const r = await api("/api/skills");
  if (!r.ok) return;
  byId("policy-digest").textContent = "policy " + (r.data.policy || "none loaded");
  const list = clear(byId("skill-list"));
  const select = byId("filter-skill");
  const chosen = select.value;
  clear(select).append(el("option", { value: "", text: "any" }));
  for (const s of r.data.skills) {
    select.append(el("option", { value: s.name, text: s.name }));
    const rules = el("ul", { className: "rules" });
    for (const rule of s.rules) rules.append(el("li", {}, el("code", { text: ruleText(rule) }), el("span", { className: "muted", text: " " + rule.rule })));
    list.append(el("article", { className: "skill", "data-skill": s.name },
      el("h3", {}, s.name, " ", el("span", { className: "mode mode-" + s.mode, text: s.mode })),
      el("dl", { className: "facts" },
        fact("defined at", s.source),
        fact("credentials", s.credentials.map((c) => c.name + " (" + c.header + ")").join(", ") || "none"),
        fact("limits", s.limits ? JSON.stringify(s.limits) : "none"),
        fact("last activity", s.last_activity ? when(s.last_activity) : "none since egress started"),
        fact("open connections", String(s.open_connections))),
      rules));
  }
  select.value = chosen;
}

// -- start ---------------------------------------------------------------------------------
function start() {
  show("login", false);
  show("tabs", true);
  show("logout", true);
  byId("who").textContent = state.user ? "signed in as " + state.user : "";
  listen();
  loadSkills();
  route();
}

async function init() {
  const hash = location.hash;
  const code = hash.match(/^#code=([A-Za-z0-9_-]+)$/);
  if (code) {
    history.replaceState(null, "", location.pathname);  // the code is used once; drop it
    if (await login({ code: code[1] })) return;
  }
  const r = await api("/ui/session");
  if (r.ok && r.data.csrf) {
    state.csrf = r.data.csrf;
    state.user = r.data.user;
    start();
  } else {
    loggedOut("");
  }
}

init();
