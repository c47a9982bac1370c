// app.js — the dashboard (docs/dashboard.md). Plain JavaScript and SVG: no framework, no
// library, nothing fetched but the cluster's own endpoints. One model of the cluster is fed
// by trace records (docs/trace.md, "JSON lines") from one of two sources:
//   live    served by kvd at /ui/: every member's GET /v1/events (server-sent events) and
//           GET /v1/status, polled; controls through the fault filter and /v1/transfer
//   replay  a JSON-lines trace opened from a file, or embedded by raftsim run --html: played
//           with play/pause/step/seek and a speed
"use strict";

const SVGNS = "http://www.w3.org/2000/svg";
const MAX_EVENTS = 300; // lines kept in the event list
const MAX_RECORDS = 20000; // live: records kept for following a request
const MAX_ARROWS = 24; // messages drawn at once; beyond, heartbeats are sampled out
const $ = (id) => document.getElementById(id);

// ---------------------------------------------------------------------------
// The model

const model = {
  nodes: new Map(), // id -> {id, up, groups: Map(group -> state)}
  cuts: new Map(), // reporter -> [[from, to], ...] (the simulator reports as node 0)
  group: null, // the group on view
  groups: new Set(),
  shardOf: new Map(), // group -> shard (kvd)
  events: [],
  requests: [], // [{req, group, t}] newest last
  followed: null,
  timeline: [], // [{t, node, term, group, what}]
  violation: null,
  caption: "",
  captionComment: false,
  arrows: [], // [{from, to, cls, start, dur, id}]
  sampled: 0,
  t0: null,
  tNow: 0,
  records: [], // what following a request searches
};

function node(id) {
  let n = model.nodes.get(id);
  if (!n) {
    n = { id, up: true, groups: new Map() };
    model.nodes.set(id, n);
  }
  return n;
}

function groupState(n, g) {
  let s = n.groups.get(g);
  if (!s) {
    s = { term: 0, role: "follower", vote: 0, leader: 0, commit: 0, applied: 0, last: 0, log: [], logFrom: 1 };
    n.groups.set(g, s);
  }
  return s;
}

function seeGroup(g) {
  if (model.groups.has(g)) return;
  model.groups.add(g);
  // kvd's group 0 is its members table: a data shard (group 1 on) is the better first view.
  if (model.group === null || (model.group === 0 && g > 0)) model.group = g;
}

function fmtTime(t) {
  if (model.t0 === null) model.t0 = t;
  const d = t - model.t0;
  return (d / 1000).toFixed(3).padStart(8) + "s";
}

function describe(r) {
  const who = r.node ? "n" + r.node : "  ";
  const g = model.groups.size > 1 ? " g" + r.group : "";
  switch (r.kind) {
    case "rule": return `${who}${g} t${r.term} ${r.role}: ${r.rule}${r.peer ? " peer=" + r.peer : ""}${r.index ? " index=" + r.index : ""}${fields(r.fields)}`;
    case "send": return `${who}${g} -> n${r.to} ${r.type}${msgBrief(r)} #${r.id}`;
    case "recv": return `${who}${g} <- n${r.from} ${r.type}${msgBrief(r)} #${r.id}`;
    case "drop": return `${who}${g} x  n${r.from}->n${r.to} ${r.type} #${r.id} dropped: ${r.reason}`;
    case "propose": return `${who}${g} propose ${r.req}${r.index ? " at " + r.index : ""}: ${r.status}`;
    case "commit": return `${who}${g} committed ${r.from}..${r.index} (term ${r.term})`;
    case "apply": return `${who}${g} applied ${r.index} (t${r.term}, ${r.entry})${r.req ? " " + r.req : ""}`;
    case "answer": return `${who}${g} answered ${r.req}: ${r.status}`;
    case "state": return `${who}${g} ${r.up ? "" : "DOWN "}t${r.term} ${r.role} commit=${r.commit} last=${r.last}`;
    case "net": return `${who} cut: ${r.cut.length ? r.cut.map((c) => c[0] + "->" + c[1]).join(" ") : "none"}`;
    case "note": return `   ${r.text}`;
    case "script": return (r.comment ? "   # " : "   > ") + r.text;
    case "violation": return `   VIOLATION ${r.property}: ${r.text}`;
    case "verdict": return `   verdict: ${r.ok ? "PASS" : "FAIL"} ${r.text}`;
    case "lost": return `${who} ${r.count} events lost: this viewer was too slow`;
    default: return `${who} ${r.kind}`;
  }
}

function fields(f) {
  return f ? Object.entries(f).map(([k, v]) => ` ${k}=${v}`).join("") : "";
}

function msgBrief(r) {
  const m = r.msg || {};
  switch (r.type) {
    case "AppendEntries": return m.entries ? ` [${m.first_index}..${m.last_index}] commit=${m.leader_commit}` : ` heartbeat commit=${m.leader_commit}`;
    case "AppendEntriesResult": return m.success ? ` ok match=${m.match_index}` : ` reject at=${m.rejected_index}`;
    case "RequestVote": return m.pre_vote ? " (pre-vote)" : "";
    case "RequestVoteResult": return (m.pre_vote ? " pre-vote" : "") + (m.vote_granted ? " granted" : " denied");
    default: return "";
  }
}

function addEvent(r) {
  // A verdict closes a run; its time says nothing.
  const when = r.kind === "verdict" ? "      end" : fmtTime(r.t);
  model.events.push({ text: when + " " + describe(r), kind: r.kind });
  if (model.events.length > MAX_EVENTS) model.events.shift();
}

function markLeader(r, n, g, term) {
  const last = model.timeline.filter((m) => m.group === g && m.what === "leader").pop();
  if (last && last.node === n && last.term === term) return;
  model.timeline.push({ t: r.t, node: n, term, group: g, what: "leader" });
}

// Apply one record to the model. animate: draw its message.
function apply(r, animate) {
  if (typeof r !== "object" || r === null || typeof r.kind !== "string") return;
  if (model.t0 === null && typeof r.t === "number" && r.kind !== "script" && r.kind !== "verdict") model.t0 = r.t;
  if (r.t > model.tNow) model.tNow = r.t;
  model.records.push(r);
  if (model.records.length > MAX_RECORDS && !replay.records) model.records.splice(0, MAX_RECORDS / 4);
  if (r.node && r.kind !== "net" && r.kind !== "lost") {
    seeGroup(r.group);
    node(r.node);
  }
  switch (r.kind) {
    case "state": {
      const n = node(r.node);
      n.up = r.up;
      n.paused = r.paused;
      const s = groupState(n, r.group);
      const wasLeader = s.role === "leader";
      Object.assign(s, { term: r.term, role: r.role, vote: r.vote, leader: r.leader, commit: r.commit,
        applied: r.applied, last: r.last, log: r.log, logFrom: r.log_from, snapshot: r.snapshot || 0 });
      if (r.election_timeout_ms !== undefined) {
        s.timer = { elapsed: r.election_elapsed_ms, timeout: r.election_timeout_ms, at: performance.now() };
      } else {
        s.timer = null;
      }
      if (r.up && r.role === "leader" && !wasLeader) markLeader(r, r.node, r.group, r.term);
      break;
    }
    case "rule": {
      const s = groupState(node(r.node), r.group);
      s.term = r.term;
      s.role = r.role;
      if (r.text.startsWith("won election")) markLeader(r, r.node, r.group, r.term);
      else if (r.text.startsWith("became candidate")) model.timeline.push({ t: r.t, node: r.node, term: r.term, group: r.group, what: "election" });
      break;
    }
    case "send":
    case "drop":
      if (animate && r.group === model.group && (r.kind === "send" || r.node === r.from)) {
        // kvd's fault filter drops without a record: a send over a cut link is lost.
        const lost = r.kind === "send" && cutPairs().has(r.from + "-" + r.to);
        arrow(lost ? Object.assign({}, r, { kind: "drop" }) : r);
      }
      break;
    case "net":
      model.cuts.set(r.node, r.cut);
      break;
    case "propose":
      model.requests.push({ req: r.req, group: r.group, t: r.t });
      if (model.requests.length > 40) model.requests.shift();
      break;
    case "violation":
      if (!model.violation) model.violation = r;
      break;
    case "script":
      if (r.comment) {
        model.caption = model.captionComment ? model.caption + " " + r.text : r.text;
        model.captionComment = true;
      } else {
        model.captionComment = false;
      }
      break;
  }
  if (r.kind !== "state" || !r.up) addEvent(r);
  dirty();
}

function arrow(r) {
  const heartbeat = (r.type === "AppendEntries" && !(r.msg && r.msg.entries)) || r.type === "AppendEntriesResult";
  if (model.arrows.length >= MAX_ARROWS && heartbeat) {
    model.sampled++;
    return;
  }
  if (model.arrows.length >= MAX_ARROWS * 2) {
    model.sampled++;
    return;
  }
  let cls = r.type.startsWith("RequestVote") || r.type === "TimeoutNow" ? "vote" : r.type === "AppendEntries" ? "append" : "result";
  if (r.kind === "drop" || (r.msg && (r.msg.success === false || r.msg.vote_granted === false))) cls = "fail";
  const dur = replay.records ? Math.max(150, Math.min(900, 500 / replay.speed)) : 450;
  model.arrows.push({ from: r.from, to: r.to, cls, start: performance.now(), dur, id: r.id, group: r.group,
    dropped: r.kind === "drop" });
}

// ---------------------------------------------------------------------------
// Drawing

// Redrawn whole, at most about 20 times a second: records can come by the thousand.
let drawPending = false;
let lastDraw = 0;
function dirty() {
  if (drawPending) return;
  drawPending = true;
  const wait = Math.max(0, 50 - (performance.now() - lastDraw));
  setTimeout(() => requestAnimationFrame(() => {
    drawPending = false;
    lastDraw = performance.now();
    draw();
  }), wait);
}

function svg(tag, attrs, parent) {
  const e = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (parent) parent.appendChild(e);
  return e;
}

function el(tag, attrs, text, parent) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined && text !== null) e.textContent = text;
  if (parent) parent.appendChild(e);
  return e;
}

function termColor(t) {
  return `hsl(${(t * 67 + 200) % 360}, 55%, 42%)`;
}

function positions() {
  const ids = [...model.nodes.keys()].sort((a, b) => a - b);
  const pos = new Map();
  const R = ids.length > 1 ? 205 : 0;
  ids.forEach((id, i) => {
    const a = -Math.PI / 2 + (2 * Math.PI * i) / ids.length;
    pos.set(id, { x: R * Math.cos(a), y: R * Math.sin(a) });
  });
  return { ids, pos };
}

function cutPairs() {
  const cut = new Set();
  for (const list of model.cuts.values()) for (const [a, b] of list) cut.add(a + "-" + b);
  return cut;
}

function draw() {
  const stage = $("stage");
  const { ids, pos } = positions();
  stage.replaceChildren();
  const cut = cutPairs();
  // Links: cut ones red and dashed, with a cross where they break.
  for (let i = 0; i < ids.length; i++) {
    for (let k = i + 1; k < ids.length; k++) {
      const a = ids[i], b = ids[k], p = pos.get(a), q = pos.get(b);
      const isCut = cut.has(a + "-" + b) || cut.has(b + "-" + a);
      svg("line", { x1: p.x, y1: p.y, x2: q.x, y2: q.y, class: isCut ? "cut" : "link", "data-a": a, "data-b": b }, stage);
      if (isCut) {
        const mx = (p.x + q.x) / 2, my = (p.y + q.y) / 2;
        svg("line", { x1: mx - 9, y1: my - 9, x2: mx + 9, y2: my + 9, class: "cutmark" }, stage);
        svg("line", { x1: mx - 9, y1: my + 9, x2: mx + 9, y2: my - 9, class: "cutmark" }, stage);
      }
    }
  }
  // Nodes.
  const now = performance.now();
  for (const id of ids) {
    const n = model.nodes.get(id), p = pos.get(id);
    const s = n.groups.get(model.group);
    const role = s ? s.role : "follower";
    const g = svg("g", { class: "node" + (selected.has(id) ? " selected" : ""), transform: `translate(${p.x},${p.y})`,
      "data-node": id, "data-role": n.up ? role : "down", "data-up": String(n.up), "data-term": s ? s.term : 0 }, stage);
    g.addEventListener("click", () => toggleSelect(id));
    svg("circle", { r: 48, class: "body" }, g);
    svg("text", { y: -16, class: "name" }, g).textContent = "n" + id + (n.paused ? " (paused)" : "");
    svg("text", { y: 2 }, g).textContent = n.up ? `T${s ? s.term : "?"} ${role}` : "down";
    svg("text", { y: 18 }, g).textContent = s ? `vote ${s.vote ? "n" + s.vote : "-"}` : "";
    svg("text", { y: 34 }, g).textContent = s ? `c${s.commit} a${s.applied} l${s.last}` : "";
    // The election timer: a bar that fills until the node stands for election.
    if (n.up && s && s.timer && s.timer.timeout > 0) {
      // Live, the bar runs on between reports; a replay shows what the record said.
      const since = replay.records ? 0 : now - s.timer.at;
      const elapsed = Math.min(s.timer.timeout, s.timer.elapsed + since);
      svg("rect", { x: -40, y: 54, width: 80, height: 7, class: "timer-bg" }, g);
      svg("rect", { x: -40, y: 54, width: (80 * elapsed) / s.timer.timeout, height: 7, class: "timer", "data-timer": "1" }, g);
    }
  }
  // Messages in flight.
  const followedIds = followedMessageIds();
  model.arrows = model.arrows.filter((m) => now - m.start < m.dur);
  for (const m of model.arrows) {
    const p = pos.get(m.from), q = pos.get(m.to);
    if (!p || !q) continue;
    let f = (now - m.start) / m.dur;
    if (m.dropped) f = Math.min(f, 0.5);
    const cls = "msg " + m.cls + (followedIds.has(m.group + ":" + m.from + ":" + m.id) ? " followed" : "");
    svg("circle", { cx: p.x + (q.x - p.x) * f, cy: p.y + (q.y - p.y) * f, r: 6, class: cls }, stage);
  }
  if (model.sampled) svg("text", { x: -320, y: 290, class: "tl-text" }, stage).textContent = `${model.sampled} messages not drawn (sampled)`;
  // The violation, when the checker found one.
  const v = $("violation");
  if (model.violation) {
    v.hidden = false;
    v.textContent = `VIOLATION ${model.violation.property}: ${model.violation.text}`;
    v.dataset.property = model.violation.property;
  } else {
    v.hidden = true;
  }
  $("caption").textContent = model.caption;
  drawLogs();
  drawShards();
  drawTimeline();
  drawEvents();
  drawRequests();
  if (model.arrows.length || (!replay.records && ids.some((id) => { const s = model.nodes.get(id).groups.get(model.group); return s && s.timer; }))) dirty();
}

function drawLogs() {
  const box = $("logs");
  box.replaceChildren();
  $("group-name").textContent = model.group === null ? "" : groupLabel(model.group);
  const ids = [...model.nodes.keys()].sort((a, b) => a - b);
  let hi = 0, commit = 0;
  for (const id of ids) {
    const s = model.nodes.get(id).groups.get(model.group);
    if (s) { hi = Math.max(hi, s.last); commit = Math.max(commit, s.commit); }
  }
  const lo = Math.max(1, Math.min(hi - 23, commit - 12));
  const fidx = followedIndex();
  for (const id of ids) {
    const n = model.nodes.get(id);
    const s = n.groups.get(model.group);
    const row = el("div", { class: "logrow", "data-node": id }, null, box);
    el("span", { class: "who" }, "n" + id, row);
    for (let i = lo; i <= Math.max(hi, lo + 11); i++) {
      const t = s ? termAt(s, i) : 0;
      const cell = el("span", { class: "cell", title: `n${id} index ${i}` }, t ? String(t) : String(i), row);
      if (t) {
        cell.style.background = termColor(t);
        if (i <= s.commit) cell.classList.add("committed");
      } else {
        cell.classList.add("empty");
      }
      if (fidx && i === fidx) cell.classList.add("request");
      if (s && i === s.commit) el("span", { class: "commitmark", title: "commit index" }, null, row);
    }
  }
}

function termAt(s, i) {
  if (!s.log) return 0;
  for (const [a, b, t] of s.log) if (i >= a && i <= b) return t;
  return 0;
}

function groupLabel(g) {
  if (model.shardOf.has(g)) return `group ${g} (shard ${model.shardOf.get(g)})`;
  return g === 0 && model.shardOf.size ? "group 0 (members)" : `group ${g}`;
}

function drawShards() {
  const ids = [...model.nodes.keys()].sort((a, b) => a - b);
  const head = $("shards").tHead;
  head.replaceChildren();
  const hr = el("tr", {}, null, head);
  el("th", {}, "group", hr);
  for (const id of ids) el("th", {}, "n" + id, hr);
  const body = $("shards").tBodies[0];
  body.replaceChildren();
  for (const g of [...model.groups].sort((a, b) => a - b)) {
    const tr = el("tr", { class: g === model.group ? "selected" : "", "data-group": g }, null, body);
    tr.addEventListener("click", () => { model.group = g; dirty(); });
    el("td", {}, groupLabel(g), tr);
    for (const id of ids) {
      const n = model.nodes.get(id), s = n.groups.get(g);
      const text = !s ? "" : !n.up ? "down" : `${s.role === "leader" ? "L" : s.role === "candidate" ? "C" : s.role === "pre-candidate" ? "P" : "F"} t${s.term}`;
      el("td", { class: s && n.up && s.role === "leader" ? "leader" : "" }, text, tr);
    }
  }
}

function drawTimeline() {
  const tl = $("timeline");
  const w = tl.clientWidth || 640;
  tl.setAttribute("viewBox", `0 0 ${w} 54`);
  tl.replaceChildren();
  const marks = model.timeline.filter((m) => m.group === model.group);
  let from, to;
  if (replay.records) {
    from = replay.tFirst;
    to = Math.max(replay.tLast, from + 1);
  } else {
    to = Math.max(model.tNow, 1);
    from = to - 60000;
  }
  const x = (t) => 10 + ((t - from) / (to - from)) * (w - 20);
  svg("line", { x1: 10, y1: 40, x2: w - 10, y2: 40, class: "tl-axis" }, tl);
  for (const m of marks) {
    if (m.t < from) continue;
    const color = m.what === "leader" ? "#38a169" : "#dd6b20";
    svg("line", { x1: x(m.t), y1: m.what === "leader" ? 22 : 30, x2: x(m.t), y2: 48, stroke: color, class: "tl-mark", "data-what": m.what }, tl);
    if (m.what === "leader") svg("text", { x: x(m.t) + 2, y: 18, class: "tl-text" }, tl).textContent = `n${m.node} t${m.term}`;
  }
  if (replay.records) svg("line", { x1: x(model.tNow), y1: 4, x2: x(model.tNow), y2: 50, stroke: "#1d2330" }, tl);
  svg("text", { x: 10, y: 12, class: "tl-text" }, tl).textContent = replay.records ? "elections (orange) and leaders (green) over the trace" : "elections (orange) and leaders (green), last 60 s";
}

function drawEvents() {
  const ol = $("events");
  const atBottom = ol.scrollTop + ol.clientHeight >= ol.scrollHeight - 4;
  ol.replaceChildren();
  for (const e of model.events) el("li", { class: e.kind }, e.text, ol);
  if (atBottom) ol.scrollTop = ol.scrollHeight;
}

function drawRequests() {
  const ul = $("requests");
  ul.replaceChildren();
  for (const q of model.requests.filter((q) => q.group === model.group).slice(-16)) {
    const li = el("li", { class: q.req === model.followed ? "followed" : "", "data-req": q.req }, q.req.length > 14 ? "…" + q.req.slice(-12) : q.req, ul);
    li.title = q.req;
    li.addEventListener("click", () => { model.followed = q.req; dirty(); });
  }
  const ol = $("follow");
  ol.replaceChildren();
  if (!model.followed) return;
  for (const step of followSteps(model.followed)) el("li", { "data-kind": step.kind }, step.text, ol);
}

// ---------------------------------------------------------------------------
// Following one request: propose -> AppendEntries -> receipts -> commit -> apply -> answer

function followedIndex() {
  if (!model.followed) return 0;
  for (const r of model.records) if (r.req === model.followed && r.index && (r.kind === "apply" || r.kind === "propose")) return r.index;
  return 0;
}

function followSteps(req) {
  const recs = model.records;
  const mine = recs.filter((r) => r.req === req);
  if (!mine.length) return [];
  const group = mine[0].group, index = followedIndex(), t0 = mine[0].t;
  const steps = [];
  const sends = new Set();
  for (const r of recs) {
    if (r.group !== group || r.t < t0) continue;
    let text = null;
    if (r.req === req) text = describe(r);
    else if (index && r.kind === "send" && r.type === "AppendEntries" && r.msg.entries && r.msg.first_index <= index && index <= r.msg.last_index) {
      sends.add(r.from + ":" + r.id);
      text = describe(r);
    } else if (r.kind === "recv" && sends.has(r.from + ":" + r.id)) text = describe(r);
    else if (index && r.kind === "commit" && r.from <= index && index <= r.index) text = describe(r);
    if (text) steps.push({ t: r.t, kind: r.kind, text: `+${String(r.t - t0).padStart(5)} ms ${text.trim()}` });
    if (steps.length > 40) break;
  }
  // The nodes' streams interleave as they arrive: put the steps in the order they happened.
  return steps.sort((a, b) => a.t - b.t);
}

function followedMessageIds() {
  const ids = new Set();
  if (!model.followed) return ids;
  const index = followedIndex();
  if (!index) return ids;
  for (const r of model.records.slice(-2000)) {
    if (r.kind === "send" && r.type === "AppendEntries" && r.msg.entries && r.msg.first_index <= index && index <= r.msg.last_index) ids.add(r.group + ":" + r.from + ":" + r.id);
  }
  return ids;
}

// ---------------------------------------------------------------------------
// Selection and controls (live)

const selected = new Set();
function toggleSelect(id) {
  if (selected.has(id)) selected.delete(id);
  else selected.add(id);
  $("selected-nodes").textContent = selected.size ? [...selected].sort().map((i) => "n" + i).join(", ") : "none";
  dirty();
}

function say(text, error) {
  const s = $("status-line");
  s.textContent = text;
  s.classList.toggle("error", !!error);
}

// ---------------------------------------------------------------------------
// Live: every member's stream and status

const live = {
  members: new Map(), // id -> base URL
  streams: new Map(),
  broken: new Set(),
  paused: false,
  held: [],
  controls: false,
};

function authHeaders() {
  const tok = $("token").value.trim();
  return tok ? { Authorization: "Bearer " + tok } : {};
}

function liveRecord(r) {
  if (live.paused) {
    live.held.push(r);
    $("held").textContent = `${live.held.length} events held`;
    return;
  }
  apply(r, true);
}

// A node's server-sent events, read with fetch rather than EventSource, which cannot send
// the password a node may want. A stream that ends (the node died) is marked broken, and
// opened again once the node answers /v1/status.
function connect(id, base) {
  if (live.streams.has(id)) return;
  const ctl = new AbortController();
  live.streams.set(id, ctl);
  fetch(base + "/v1/events", { headers: authHeaders(), signal: ctl.signal, cache: "no-store" })
    .then(async (res) => {
      if (!res.ok) throw new Error(`events: ${res.status}`);
      const reader = res.body.getReader();
      const text = new TextDecoder();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += text.decode(value, { stream: true });
        let end;
        while ((end = buf.indexOf("\n\n")) >= 0) {
          const ev = buf.slice(0, end);
          buf = buf.slice(end + 2);
          for (const line of ev.split("\n")) {
            if (!line.startsWith("data: ")) continue;
            let r;
            try { r = JSON.parse(line.slice(6)); } catch (e) { continue; }
            liveRecord(r);
          }
        }
      }
      throw new Error("the stream ended");
    })
    .catch(() => {
      if (live.streams.get(id) === ctl) live.broken.add(id);
    });
}

async function pollStatus(id, base) {
  try {
    const res = await fetch(base + "/v1/status", { cache: "no-store", headers: authHeaders() });
    if (res.status === 401) {
      say("the nodes want a password: type it in the token box", true);
      return;
    }
    const st = await res.json();
    if (live.paused) return;
    const n = node(id);
    n.up = true;
    if (live.broken.delete(id)) {
      live.streams.delete(id);
      connect(id, base);
    }
    for (const g of st.groups || []) {
      if (typeof g.group !== "number") continue;
      seeGroup(g.group);
      if (typeof g.shard === "number" && g.shard >= 0 && g.group > 0) model.shardOf.set(g.group, g.shard);
      const s = groupState(n, g.group);
      const wasLeader = s.role === "leader";
      Object.assign(s, { term: g.term, role: g.role, leader: g.leader, commit: g.commit, applied: g.applied, last: g.last_index, vote: g.vote || 0 });
      s.timer = g.election_timeout_ms ? { elapsed: g.election_elapsed_ms, timeout: g.election_timeout_ms, at: performance.now() } : null;
      if (g.role === "leader" && !wasLeader) markLeader({ t: Date.now() }, id, g.group, g.term);
    }
    if (model.tNow < Date.now()) model.tNow = Date.now();
  } catch (e) {
    if (!live.paused) node(id).up = false;
  }
  dirty();
}

async function startLive() {
  $("mode").textContent = "live";
  $("live-controls").hidden = false;
  let table;
  try {
    const res = await fetch("/v1/nodes", { cache: "no-store", headers: authHeaders() });
    if (res.status === 401) {
      live.needToken = true;
      say("this node wants a password: type it (or the admin token) in the token box", true);
      return;
    }
    if (!res.ok) throw new Error(`GET /v1/nodes: ${res.status}`);
    table = await res.json();
  } catch (e) {
    say("cannot read the members table from this node: " + e.message, true);
    return;
  }
  live.needToken = false;
  say("");
  $("source").textContent = `cluster ${table.cluster_id}, ${table.nodes.length} nodes, ${table.shards} shards`;
  for (const m of table.nodes) {
    const base = `http://${m.client_host || m.host}:${m.http_port}`;
    live.members.set(m.id, base);
    node(m.id);
  }
  for (const [id, base] of live.members) {
    connect(id, base);
    pollStatus(id, base);
  }
  setInterval(() => { for (const [id, base] of live.members) pollStatus(id, base); }, 700);
  checkControls();
}

// The controls work when this node has fault injection on and, if it has an admin token,
// the token is given: ask the fault filter what it holds.
async function checkControls() {
  const own = [...live.members.values()].find((b) => b === location.origin) || location.origin;
  try {
    const res = await fetch(own + "/v1/admin/faults", { headers: authHeaders(), cache: "no-store" });
    if (res.status === 404) {
      $("control-state").textContent = "controls off: kvd runs without --enable-fault-injection";
      live.controls = false;
    } else if (res.status === 401 || res.status === 403) {
      $("control-state").textContent = "controls need the admin token";
      live.controls = false;
    } else {
      $("control-state").textContent = "controls on";
      live.controls = res.ok;
    }
  } catch (e) {
    live.controls = false;
  }
  $("actions").hidden = !live.controls;
}

async function call(id, method, path, body) {
  const base = live.members.get(id);
  const headers = Object.assign({ "Content-Type": "application/json" }, authHeaders());
  const res = await fetch(base + path, { method, headers, body: body ? JSON.stringify(body) : undefined });
  if (!res.ok) {
    let why = res.status + "";
    try { why = (await res.json()).error || why; } catch (e) { /* not JSON */ }
    throw new Error(`n${id}: ${why}`);
  }
  return res;
}

// A partition A | B: every node of A drops everything to and from B, and B the same.
async function partition(a, b) {
  const errors = [];
  const rules = (peers) => ({ rules: peers.map((p) => ({ peer: p, direction: "both", type: "any", drop: 100 })) });
  await Promise.all([...a.map((n) => [n, b]), ...b.map((n) => [n, a])].map(([n, others]) =>
    call(n, "PUT", "/v1/admin/faults", rules(others)).catch((e) => errors.push(e.message))));
  say(errors.length ? "partition: " + errors.join("; ") : `partitioned ${a.map((i) => "n" + i).join(",")} | ${b.map((i) => "n" + i).join(",")}`, errors.length > 0);
}

async function heal() {
  const errors = [];
  await Promise.all([...live.members.keys()].map((n) => call(n, "DELETE", "/v1/admin/faults").catch((e) => errors.push(e.message))));
  say(errors.length ? "heal: " + errors.join("; ") : "healed: the fault filters are empty", errors.length > 0);
}

async function transfer() {
  if (selected.size !== 1) { say("select one node to hand leadership to", true); return; }
  const to = [...selected][0];
  const g = model.group, shard = model.shardOf.get(g);
  if (shard === undefined) { say("transfers work on a data shard: select one in the table", true); return; }
  const leader = [...model.nodes.values()].find((n) => n.up && n.groups.get(g) && n.groups.get(g).role === "leader");
  if (!leader) { say("no leader to transfer from", true); return; }
  try {
    await call(leader.id, "POST", `/v1/transfer?to=${to}&shard=${shard}`);
    say(`asked n${leader.id} to hand ${groupLabel(g)} to n${to}`);
  } catch (e) { say("transfer: " + e.message, true); }
}

function setupLiveControls() {
  $("partition").addEventListener("click", () => {
    const a = [...selected], b = [...live.members.keys()].filter((i) => !selected.has(i));
    if (!a.length || !b.length) { say("select the nodes of one side", true); return; }
    partition(a, b);
  });
  $("isolate").addEventListener("click", () => {
    if (selected.size !== 1) { say("select one node to isolate", true); return; }
    const a = [...selected];
    partition(a, [...live.members.keys()].filter((i) => i !== a[0]));
  });
  $("heal").addEventListener("click", heal);
  $("transfer").addEventListener("click", transfer);
  $("token").addEventListener("change", () => {
    if (live.needToken) {
      startLive();
      return;
    }
    for (const ctl of live.streams.values()) ctl.abort(); // again, with the token
    live.streams.clear();
    for (const [id, base] of live.members) connect(id, base);
    checkControls();
  });
  $("pause").addEventListener("click", () => {
    live.paused = !live.paused;
    $("pause").textContent = live.paused ? "Resume" : "Pause";
    $("live-step").disabled = !live.paused;
    if (!live.paused) {
      for (const r of live.held.splice(0)) apply(r, false);
      $("held").textContent = "";
    }
  });
  $("live-step").addEventListener("click", () => {
    const r = live.held.shift();
    if (r) apply(r, true);
    $("held").textContent = `${live.held.length} events held`;
  });
}

// ---------------------------------------------------------------------------
// Replay: a trace from a file or embedded in the page

const replay = { records: null, pos: 0, playing: false, speed: 1, scale: 1, tFirst: 0, tLast: 0, vt: 0, last: 0, stopAt: -1 };

function resetModel() {
  model.nodes.clear(); model.cuts.clear(); model.groups.clear(); model.shardOf.clear();
  model.group = null; model.events = []; model.requests = []; model.timeline = []; model.violation = null;
  model.caption = ""; model.captionComment = false; model.arrows = []; model.sampled = 0; model.t0 = null;
  model.tNow = 0; model.records = [];
}

function parseTrace(text) {
  const out = [], bad = [];
  text.split("\n").forEach((line, i) => {
    if (!line.trim()) return;
    try {
      const r = JSON.parse(line);
      if (typeof r === "object" && r !== null && typeof r.kind === "string" && typeof r.t === "number") out.push(r);
      else bad.push(i + 1);
    } catch (e) { bad.push(i + 1); }
  });
  return { records: out, bad };
}

function startReplay(records, source) {
  for (const ctl of live.streams.values()) ctl.abort();
  live.streams.clear();
  $("live-controls").hidden = true;
  $("actions").hidden = true;
  $("mode").textContent = "replay";
  $("source").textContent = source;
  $("player").hidden = false;
  replay.records = records;
  // Simulator traces run in virtual milliseconds that pass quickly: x1 shows 100 ms of them
  // per second; kvd's run in real ones.
  const simulated = records.some((r) => r.kind === "script" || r.kind === "verdict" || r.node === 0);
  replay.scale = simulated ? 0.1 : 1;
  const times = records.filter((r) => r.kind !== "script" && r.kind !== "verdict").map((r) => r.t);
  replay.tFirst = times.length ? Math.min(...times) : 0;
  replay.tLast = times.length ? Math.max(...times) : 0;
  replay.stopAt = records.findIndex((r) => r.kind === "violation");
  $("seek").max = records.length;
  seek(0);
}

function seek(pos) {
  pos = Math.max(0, Math.min(replay.records.length, pos));
  if (pos < replay.pos || pos === 0) {
    resetModel();
    replay.pos = 0;
  }
  while (replay.pos < pos) {
    const r = replay.records[replay.pos++];
    apply(r, pos - replay.pos < 3);
  }
  replay.vt = replay.pos ? replay.records[replay.pos - 1].t : replay.tFirst;
  $("seek").value = replay.pos;
  $("position").textContent = `${replay.pos} / ${replay.records.length}`;
  $("seek").dataset.pos = replay.pos;
  dirty();
}

function play(on) {
  replay.playing = on;
  $("play").textContent = on ? "Pause" : "Play";
  if (on) {
    if (replay.pos >= replay.records.length) seek(0);
    replay.last = performance.now();
    requestAnimationFrame(tick);
  }
}

function tick(now) {
  if (!replay.playing) return;
  replay.vt += (now - replay.last) * replay.speed * replay.scale;
  replay.last = now;
  let n = 0;
  while (replay.pos < replay.records.length && n < 200) {
    const r = replay.records[replay.pos];
    if (r.kind !== "script" && r.kind !== "verdict" && r.t > replay.vt) break;
    apply(r, true);
    replay.pos++;
    n++;
    // Stop at the violation: the moment to look.
    if (replay.pos - 1 === replay.stopAt) {
      play(false);
      break;
    }
  }
  $("seek").value = replay.pos;
  $("seek").dataset.pos = replay.pos;
  $("position").textContent = `${replay.pos} / ${replay.records.length}`;
  if (replay.pos >= replay.records.length) play(false);
  else if (replay.playing) requestAnimationFrame(tick);
}

function setupReplayControls() {
  $("play").addEventListener("click", () => play(!replay.playing));
  $("step").addEventListener("click", () => { play(false); seek(replay.pos + 1); });
  $("to-end").addEventListener("click", () => { play(false); seek(replay.records.length); });
  $("seek").addEventListener("input", (e) => { play(false); seek(Number(e.target.value)); });
  $("speed").addEventListener("change", (e) => { replay.speed = Number(e.target.value); });
  $("open-trace").addEventListener("change", (e) => {
    const f = e.target.files[0];
    if (!f) return;
    f.text().then((text) => {
      const { records, bad } = parseTrace(text);
      if (!records.length) { say(`${f.name}: no trace records in it (one JSON object per line, docs/trace.md)`, true); return; }
      startReplay(records, f.name);
      say(bad.length ? `${f.name}: ${bad.length} lines are not trace records (first: line ${bad[0]}); skipped` : `${f.name}: ${records.length} records`, bad.length > 0);
    });
  });
}

// ---------------------------------------------------------------------------
// Start

function main() {
  setupReplayControls();
  setupLiveControls();
  window.addEventListener("resize", dirty);
  const embedded = document.getElementById("embedded-trace");
  if (embedded) {
    let records = [];
    try { records = JSON.parse(embedded.textContent); } catch (e) { say("the embedded trace does not parse: " + e.message, true); }
    startReplay(records, embedded.dataset.source || "embedded trace");
  } else if (location.protocol === "file:") {
    $("mode").textContent = "replay";
    say("open a JSON-lines trace (raftsim run --json, kvd --trace-file) to replay it");
  } else {
    startLive();
  }
}

main();
