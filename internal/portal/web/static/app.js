// Edgeport operations portal. Hand-written, no dependencies: each page's
// function below is chosen by <body data-page>. Live data comes over
// Server-Sent Events; writes carry the session's CSRF token.
"use strict";

const csrf = document.querySelector('meta[name="csrf-token"]')?.content || "";

// h builds an element: h("td", {class: "num"}, "text", child...).
function h(tag, attrs, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const kid of kids.flat()) {
    if (kid === undefined || kid === null || kid === false) continue;
    el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  }
  return el;
}

const $ = (id) => document.getElementById(id);

async function call(method, url, body, type) {
  const opts = { method, headers: { "X-CSRF-Token": csrf }, credentials: "same-origin" };
  if (body !== undefined) {
    opts.headers["Content-Type"] = type || "application/json";
    opts.body = typeof body === "string" ? body : JSON.stringify(body);
  }
  const resp = await fetch(url, opts);
  const text = await resp.text();
  let data = text;
  try { data = JSON.parse(text); } catch (e) { /* YAML or text */ }
  if (resp.status === 401) { location.href = "/login?next=" + encodeURIComponent(location.pathname); }
  return { ok: resp.ok, status: resp.status, data };
}

// Units on every number.
function fmtNum(n, digits) {
  return Number(n).toLocaleString(undefined, { maximumFractionDigits: digits ?? 0 });
}
function fmtBytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return fmtNum(n, i ? 1 : 0) + " " + units[i];
}
function fmtRate(n) { return fmtNum(n, n < 10 ? 2 : 0) + " msg/s"; }
function fmtMs(n) { return n === null || n === undefined ? "–" : fmtNum(n, n < 10 ? 2 : 1) + " ms"; }
function fmtCount(n, one, many) { return fmtNum(n) + " " + (n === 1 ? one : many); }
function fmtDuration(s) {
  s = Math.floor(s);
  const d = Math.floor(s / 86400), hr = Math.floor(s % 86400 / 3600), m = Math.floor(s % 3600 / 60);
  if (d) return `${d} d ${hr} h`;
  if (hr) return `${hr} h ${m} min`;
  if (m) return `${m} min ${s % 60} s`;
  return `${s} s`;
}
// Times in the browser's zone.
function fmtTime(t) {
  if (!t) return "–";
  const d = new Date(t);
  return isNaN(d) || d.getFullYear() < 2000 ? "–" : d.toLocaleString();
}
function fmtClock(t) { return new Date(t).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }); }

// live opens an event stream and calls on[event](data); the browser
// reconnects by itself after an error.
function live(url, on) {
  const es = new EventSource(url);
  for (const [ev, fn] of Object.entries(on)) es.addEventListener(ev, (e) => fn(JSON.parse(e.data)));
  return es;
}

// selectable makes a row or node clickable and keyboard-activatable.
function selectable(el, fn) {
  el.tabIndex = 0;
  el.addEventListener("click", fn);
  el.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); fn(); } });
  return el;
}

function select(container, el) {
  container.querySelectorAll('[aria-selected="true"]').forEach((x) => x.setAttribute("aria-selected", "false"));
  el.setAttribute("aria-selected", "true");
}

// ---- Charts: an SVG line over the last hour.
const SVGNS = "http://www.w3.org/2000/svg";
function s(tag, attrs, text) {
  const el = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  if (text !== undefined) el.textContent = text;
  return el;
}
// chart draws points ({t: ms, v}) over the last hour, or since the first
// sample when the server has run for less.
function chart(svg, points, fmt) {
  const W = 600, H = 160, L = 70, R = 8, T = 10, B = 22;
  svg.replaceChildren();
  const now = Date.now();
  const pts = points.filter((p) => p.v !== null && p.v !== undefined && p.t >= now - 3600e3);
  const from = Math.min(now - 10e3, pts.length ? pts[0].t : now - 3600e3);
  const span = Math.max(1, now - from);
  const max = Math.max(1e-9, ...pts.map((p) => p.v)) * 1.1;
  const x = (t) => L + (t - from) / span * (W - L - R);
  const y = (v) => T + (1 - v / max) * (H - T - B);
  const clock = (t) => new Date(t).toLocaleTimeString([], span < 600e3 ? { hour: "2-digit", minute: "2-digit", second: "2-digit" } : { hour: "2-digit", minute: "2-digit" });
  svg.append(s("line", { class: "axis", x1: L, y1: H - B, x2: W - R, y2: H - B }));
  svg.append(s("line", { class: "axis", x1: L, y1: T, x2: L, y2: H - B }));
  svg.append(s("text", { x: L - 6, y: T + 10, "text-anchor": "end" }, fmt(max)));
  svg.append(s("text", { x: L - 6, y: H - B, "text-anchor": "end" }, fmt(0)));
  svg.append(s("text", { x: L, y: H - 6 }, clock(from)));
  svg.append(s("text", { x: W - R, y: H - 6, "text-anchor": "end" }, clock(now)));
  if (!pts.length) {
    svg.append(s("text", { x: (W + L) / 2, y: H / 2, "text-anchor": "middle" }, "no data yet"));
    return;
  }
  const line = pts.map((p) => `${x(p.t).toFixed(1)},${y(p.v).toFixed(1)}`).join(" ");
  svg.append(s("polygon", { class: "area", points: `${x(pts[0].t).toFixed(1)},${H - B} ${line} ${x(pts[pts.length - 1].t).toFixed(1)},${H - B}` }));
  svg.append(s("polyline", { class: "line", points: line }));
  const last = pts[pts.length - 1];
  svg.append(s("circle", { class: "dot", cx: x(last.t).toFixed(1), cy: y(last.v).toFixed(1), r: 3 }));
  svg.append(s("text", { x: W - R, y: T + 10, "text-anchor": "end", class: "now" }, "now " + fmt(last.v)));
}

// ---- Pages.
const pages = {};

pages.overview = () => {
  let samples = [];
  const draw = (d) => {
    const st = d.status;
    const v = d.verdict;
    const lv = $("verdict-level");
    lv.textContent = v.level;
    lv.className = "level-" + v.level;
    $("verdict-reasons").replaceChildren(...(v.reasons.length ? v.reasons.map((r) =>
      h("li", { class: r.level === "failing" ? "fail" : "warn" }, h("strong", {}, r.subject + ": "), r.message))
      : [h("li", { class: "ok" }, "Every check passes: listeners bound, storage writable, self-test delivering, resources Ready.")]));
    $("f-version").textContent = st.version || "unknown";
    $("f-uptime").textContent = fmtDuration(st.uptimeSeconds);
    $("f-connections").textContent = fmtCount(st.broker.connectedSessions, "client", "clients");
    $("f-sessions").textContent = fmtCount(st.broker.totalSessions, "session", "sessions");
    $("f-subscriptions").textContent = fmtCount(st.broker.subscriptions, "subscription", "subscriptions");
    $("f-retained").textContent = fmtCount(st.broker.retainedMessages, "message", "messages");
    $("f-resources").textContent = fmtCount(d.resources, "resource", "resources");
    if (d.storageUsed === null) {
      $("f-storage").textContent = "in memory";
    } else {
      $("f-storage").textContent = fmtBytes(d.storageUsed) + (d.storageQuota ? " of " + fmtBytes(d.storageQuota) : "");
      if (d.storageQuota) {
        $("storage-meter").hidden = false;
        $("storage-bar").style.width = Math.min(100, 100 * d.storageUsed / d.storageQuota).toFixed(1) + "%";
        $("storage-note").textContent = fmtNum(100 * d.storageUsed / d.storageQuota, 1) + " % of the storage quota";
      } else if (st.storage) {
        $("storage-note").textContent = "No quota; " + fmtBytes(st.storage.freeBytes) + " free of " + fmtBytes(st.storage.totalBytes) + " on the data directory's file system.";
      }
    }
    $("listeners").replaceChildren(...st.listeners.map((l) => h("tr", {},
      h("td", {}, l.name), h("td", {}, l.protocol + (l.path ? " " + l.path : "")),
      h("td", { class: l.address ? "" : "fail" }, l.address || ("not bound: " + (l.error || l.configured || ""))),
      h("td", {}, l.tls ? "yes" : "no"), h("td", {}, l.admits || "–"), h("td", {}, l.authentication || "none"))));
    const pts = (f) => samples.map((p) => ({ t: Date.parse(p.t), v: f(p) }));
    chart($("c-connections"), pts((p) => p.connections), (n) => fmtCount(Math.round(n), "client", "clients"));
    chart($("c-in"), pts((p) => p.inRate), fmtRate);
    chart($("c-out"), pts((p) => p.outRate), fmtRate);
    chart($("c-selftest"), pts((p) => p.selfTestMs), fmtMs);
  };
  live("/ui/events/overview", {
    init: (d) => { samples = d.samples; draw(d); },
    sample: (d) => {
      samples.push(...d.samples);
      const from = Date.now() - 3600e3;
      samples = samples.filter((p) => Date.parse(p.t) >= from);
      draw(d);
    },
  });
};

pages.clients = () => {
  let sessions = [], total = 0, selected = null;
  const render = () => {
    const q = $("client-search").value.toLowerCase();
    const internal = $("client-internal").checked;
    const shown = sessions.filter((c) => (internal || !c.internal) &&
      (!q || c.clientId.toLowerCase().includes(q) || (c.username || "").toLowerCase().includes(q) || (c.remoteAddr || "").includes(q)));
    $("client-count").textContent = `${fmtCount(shown.length, "session", "sessions")} shown of ${fmtNum(total)}`;
    const tbody = $("clients");
    tbody.replaceChildren(...shown.map((c) => {
      const tr = h("tr", { "data-client": c.clientId, "aria-selected": c.clientId === selected ? "true" : "false" },
        h("td", {}, c.clientId), h("td", {}, h("span", { class: "badge " + (c.online ? "on" : "off") }, c.online ? "online" : "offline")),
        h("td", {}, c.username || "–"), h("td", {}, c.listener || "–"),
        h("td", { class: "num" }, fmtCount(c.subscriptions.length, "filter", "filters")),
        h("td", { class: "num" }, fmtCount(c.queued + c.inflight, "msg", "msgs")));
      return selectable(tr, () => { selected = c.clientId; select(tbody, tr); detail(); });
    }));
    detail();
  };
  const detail = () => {
    const box = $("client-detail");
    const c = sessions.find((x) => x.clientId === selected);
    if (!c) {
      box.replaceChildren(h("p", { class: "hint" }, selected ? `Client ${selected} has no session any more.` : "Select a client to see its subscriptions and queue."));
      return;
    }
    const result = h("div", { role: "status" });
    const act = async (what) => {
      const r = await call("POST", "/ui/clients/" + what, { clientId: c.clientId });
      result.textContent = r.ok ? (what === "disconnect" ? "Disconnected." : "Session deleted.") : (r.data.error || "failed: " + r.status);
      result.className = r.ok ? "ok" : "error";
    };
    box.replaceChildren(
      h("h2", {}, c.clientId),
      h("dl", {},
        h("dt", {}, "State"), h("dd", {}, c.online ? "online from " + (c.remoteAddr || "in process") : "offline since " + fmtTime(c.offlineSince)),
        h("dt", {}, "Listener"), h("dd", {}, c.listener || "–"),
        h("dt", {}, "User"), h("dd", {}, c.username || "anonymous"),
        h("dt", {}, "MQTT version"), h("dd", {}, c.protocolVersion === 5 ? "5.0" : c.protocolVersion === 4 ? "3.1.1" : String(c.protocolVersion)),
        h("dt", {}, "Session expiry"), h("dd", {}, c.expirySeconds < 0 ? "never" : c.expirySeconds === 0 ? "with the connection" : fmtNum(c.expirySeconds) + " s"),
        h("dt", {}, "Queued"), h("dd", {}, fmtCount(c.queued, "message", "messages") + ", " + fmtBytes(c.queuedBytes)),
        h("dt", {}, "In flight"), h("dd", {}, fmtCount(c.inflight, "message", "messages")),
        h("dt", {}, "Will"), h("dd", {}, c.hasWill ? "yes" : "no")),
      h("h3", {}, "Subscriptions"),
      c.subscriptions.length ? h("ul", {}, c.subscriptions.map((sub) => h("li", {}, h("code", {}, sub.filter), " QoS " + sub.qos))) : h("p", { class: "hint" }, "none"),
      h("div", { class: "actions" },
        c.online ? h("button", { type: "button", id: "client-disconnect", onclick: () => act("disconnect") }, "Disconnect")
          : h("button", { type: "button", class: "danger", id: "client-delete", onclick: () => act("delete") }, "Delete session")),
      result);
  };
  $("client-search").addEventListener("input", render);
  $("client-internal").addEventListener("change", render);
  live("/ui/events/clients", { clients: (d) => { sessions = d.sessions; total = d.total; render(); } });
};

pages.topics = () => {
  const topics = new Map();
  let selected = null, info = {};
  const tree = $("topic-tree");
  const render = () => {
    const q = $("topic-filter").value.toLowerCase();
    const root = { kids: new Map() };
    for (const [name, e] of topics) {
      if (q && !name.toLowerCase().includes(q)) continue;
      let n = root;
      const parts = name.split("/");
      parts.forEach((p, i) => {
        if (!n.kids.has(p)) n.kids.set(p, { kids: new Map(), path: parts.slice(0, i + 1).join("/") });
        n = n.kids.get(p);
      });
      n.entry = e;
    }
    const build = (n) => h("ul", { role: "group" }, [...n.kids.keys()].sort().map((k) => {
      const c = n.kids.get(k), e = c.entry;
      const node = h("div", { class: "node", role: "treeitem", "data-topic": c.path, "aria-selected": c.path === selected ? "true" : "false" },
        h("span", { class: "name" }, k || "(empty)"),
        e ? [h("span", { class: "preview" }, e.preview),
          e.retained ? h("span", { class: "badge retained" }, "retained") : null,
          h("span", { class: "rate" }, fmtRate(e.rate) + " · " + fmtBytes(e.size))] : h("span", { class: "rate" }, fmtCount(c.kids.size, "subtopic", "subtopics")));
      if (e) selectable(node, () => { selected = c.path; select(tree, node); show(); });
      return h("li", {}, node, c.kids.size ? build(c) : null);
    }));
    const focused = document.activeElement?.dataset?.topic;
    tree.replaceChildren(build(root));
    if (focused) tree.querySelector(`[data-topic="${CSS.escape(focused)}"]`)?.focus();
    $("topic-count").textContent = `${fmtCount(info.total || 0, "topic", "topics")}` +
      (info.untracked ? ` (limit ${fmtNum(info.max)} topics reached: ${fmtCount(info.untracked, "message", "messages")} on further topics not shown)` : "");
  };
  const show = async () => {
    const box = $("topic-detail");
    const r = await call("GET", "/ui/topic?name=" + encodeURIComponent(selected));
    if (!r.ok) { box.replaceChildren(h("p", { class: "error" }, r.data.error)); return; }
    const m = r.data;
    const bytes = Uint8Array.from(atob(m.payload || ""), (c) => c.charCodeAt(0));
    let text = null;
    try { text = new TextDecoder("utf-8", { fatal: true }).decode(bytes); } catch (e) { /* binary */ }
    let json = null;
    if (text !== null) { try { json = JSON.stringify(JSON.parse(text), null, 2); } catch (e) { /* not JSON */ } }
    const hex = [...bytes].map((b, i) => (i % 16 ? " " : (i ? "\n" : "") + i.toString(16).padStart(6, "0") + "  ") + b.toString(16).padStart(2, "0")).join("");
    const views = { JSON: json, Text: text, Hex: hex };
    const pre = h("pre", { id: "payload" });
    const tabs = h("div", { class: "tabs", role: "tablist" });
    const pick = (name) => {
      pre.textContent = views[name] ?? "";
      tabs.querySelectorAll("button").forEach((b) => b.setAttribute("aria-selected", b.textContent === name ? "true" : "false"));
    };
    for (const name of Object.keys(views)) {
      if (views[name] === null) continue;
      tabs.append(h("button", { type: "button", role: "tab", onclick: () => pick(name) }, name));
    }
    box.replaceChildren(h("h2", {}, m.topic),
      h("p", {}, fmtBytes(m.size) + (m.truncated ? " (first " + fmtBytes(bytes.length) + " shown)" : "") + " · QoS " + m.qos +
        (m.retained ? " · retained" : "") + " · " + fmtTime(m.time) + (m.contentType ? " · " + m.contentType : "")),
      m.userProperties?.length ? h("ul", {}, m.userProperties.map((u) => h("li", {}, h("code", {}, u.Key ?? u.key), " = ", u.Value ?? u.value))) : null,
      tabs, pre);
    pick(json !== null ? "JSON" : text !== null ? "Text" : "Hex");
  };
  $("topic-filter").addEventListener("input", render);
  live("/ui/events/topics", {
    topics: (d) => {
      if (d.full) topics.clear();
      for (const e of d.topics) topics.set(e.topic, e);
      info = d;
      render();
      if (selected && d.topics.some((e) => e.topic === selected)) show();
    },
  });
};

pages.resources = () => {
  const want = (document.body.dataset.kinds || "").split(",").filter(Boolean);
  let plurals = {}, current = null;
  const load = async () => {
    const r = await call("GET", "/ui/kinds");
    if (!r.ok) return;
    plurals = Object.fromEntries(r.data.map((k) => [k.kind, k.plural]));
    const kinds = r.data.filter((k) => !want.length || want.includes(k.kind));
    const empty = kinds.filter((k) => !k.items.length).map((k) => k.kind);
    $("kinds").replaceChildren(...kinds.filter((k) => k.items.length).map((k) => h("section", { class: "card kind", "data-kind": k.kind },
      h("h2", {}, k.kind, h("span", { class: "hint" }, fmtCount(k.items.length, "resource", "resources"))),
      k.items.length ? h("table", { class: "list" },
        h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Name"), h("th", { scope: "col" }, "Ready"), h("th", { scope: "col" }, "Reason"),
          h("th", { scope: "col" }, "Message"), h("th", { scope: "col", class: "num" }, "Generation"))),
        h("tbody", {}, k.items.map((it) => selectable(h("tr", { "data-name": it.name, "aria-selected": current && current.kind === k.kind && current.name === it.name ? "true" : "false" },
          h("td", {}, it.name),
          h("td", { class: it.ready === "True" ? "ok" : it.ready === "False" ? "fail" : "warn" }, it.ready || "–"),
          h("td", {}, it.reason || ""), h("td", {}, it.message || ""),
          h("td", { class: "num" }, it.observedGeneration < it.generation ? `${it.generation} (applying)` : String(it.generation))),
        () => open(k, it.name))))) : null)),
      empty.length ? h("p", { class: "card hint", id: "empty-kinds" }, "No resources of kind " + empty.join(", ") + ".") : null);
  };
  const open = async (k, name) => {
    const r = await call("GET", `/ui/yaml/${k.plural}/${encodeURIComponent(name)}`);
    current = { kind: k.kind, name };
    $("res-title").textContent = `${k.kind} ${name}`;
    $("res-yaml").value = r.ok ? r.data : "";
    $("res-delete").disabled = false;
    $("res-result").replaceChildren();
    document.querySelectorAll("#kinds tr[aria-selected]").forEach((tr) => tr.setAttribute("aria-selected",
      tr.closest("[data-kind]").dataset.kind === k.kind && tr.dataset.name === name ? "true" : "false"));
  };
  const outcome = (r, okText) => {
    const box = $("res-result");
    if (r.ok) { box.replaceChildren(h("p", { class: "ok", id: "res-ok" }, okText)); return; }
    const d = typeof r.data === "object" ? r.data : { error: String(r.data) };
    box.replaceChildren(h("p", { class: "error", id: "res-error" }, d.error),
      d.details ? h("ul", { class: "field-errors error", id: "res-field-errors" }, d.details.map((x) => h("li", {}, x))) : null);
  };
  $("res-new").addEventListener("click", () => {
    current = null;
    $("res-title").textContent = "New resource";
    $("res-yaml").value = "apiVersion: edgeport.io/v1\nkind: \nmetadata:\n  name: \nspec:\n";
    $("res-delete").disabled = true;
    $("res-result").replaceChildren();
    $("res-yaml").focus();
  });
  $("res-apply").addEventListener("click", async () => {
    const text = $("res-yaml").value;
    const kind = (text.match(/^kind:\s*["']?([A-Za-z]+)/m) || [])[1];
    const name = (text.match(/^metadata:\s*\n(?:[ \t]+.*\n)*?[ \t]+name:\s*["']?([^"'\s#]+)/m) || [])[1];
    if (!kind || !plurals[kind]) { outcome({ ok: false, data: { error: `kind: ${kind ? `unknown kind "${kind}"` : "required"}` } }); return; }
    const url = name ? `/ui/api/v1/${plurals[kind]}/${encodeURIComponent(name)}` : `/ui/api/v1/${plurals[kind]}`;
    const r = await call(name ? "PUT" : "POST", url, text, "application/yaml");
    const result = r.ok ? (r.status === 201 ? "created" : "applied") : "";
    outcome(r, `${kind} ${name || ""} ${result}.`);
    if (r.ok) { current = { kind, name }; $("res-delete").disabled = false; load(); }
  });
  $("res-delete").addEventListener("click", async () => {
    if (!current || !confirm(`Delete ${current.kind} ${current.name}?`)) return;
    const r = await call("DELETE", `/ui/api/v1/${plurals[current.kind]}/${encodeURIComponent(current.name)}`);
    outcome(r, `${current.kind} ${current.name} deleted.`);
    if (r.ok) { current = null; $("res-delete").disabled = true; load(); }
  });
  load();
  setInterval(load, 10000);
};

pages.schemas = () => {
  let selected = null, list = [];
  const total = (sc, f) => sc.validations.reduce((n, v) => n + v[f], 0);
  const uses = (sc) => {
    const flows = new Set(sc.usedBy.filter((u) => u.kind === "Dataflow").map((u) => u.name)).size;
    const sets = sc.usedBy.filter((u) => u.kind !== "Dataflow").length;
    return [flows ? fmtCount(flows, "dataflow", "dataflows") : "", sets ? fmtCount(sets, "asset dataset", "asset datasets") : ""].filter(Boolean).join(", ") || "–";
  };
  const pretty = (text) => { try { return JSON.stringify(JSON.parse(text), null, 2); } catch (e) { return text; } };
  const table = (label, id, head, rows) => rows.length
    ? h("table", { class: "list", "aria-label": label, id }, h("thead", {}, h("tr", {}, head.map(([t, c]) => h("th", { scope: "col", class: c }, t)))), h("tbody", {}, rows))
    : h("p", { class: "hint", id: id + "-none" }, "None.");
  const show = () => {
    const sc = list.find((x) => x.name === selected);
    if (!sc) { $("schema-body").replaceChildren(); return; }
    $("schema-title").textContent = `Schema ${sc.name}` + (sc.displayName ? ` (${sc.displayName})` : "");
    $("schema-hint").textContent = [sc.format, sc.compatibility + " compatibility", sc.registeredBy === "mqtt" ? "registered through the schema registry API" : "", sc.description].filter(Boolean).join(" · ");
    $("schema-body").replaceChildren(
      h("h3", {}, "Used by"),
      table("Users", "schema-users", [["Kind"], ["Name"], ["Role"], ["Version"], ["Topics or destination"]],
        sc.usedBy.map((u) => h("tr", {}, h("td", {}, u.kind), h("td", { class: "wrap" }, u.name), h("td", {}, u.role), h("td", {}, u.version),
          h("td", { class: "wrap" }, (u.topics || []).map((t) => h("code", {}, t)), u.destination ? h("code", {}, u.destination) : null)))),
      h("h3", {}, "Validations"),
      table("Validations", "schema-validations", [["Dataflow"], ["Version"], ["Validations", "num"], ["Failures", "num"]],
        sc.validations.map((v) => h("tr", {}, h("td", {}, v.dataflow), h("td", {}, v.version), h("td", { class: "num" }, fmtNum(v.validations)),
          h("td", { class: v.failures ? "num fail" : "num" }, fmtNum(v.failures))))),
      h("h3", {}, "Versions"),
      ...sc.versions.slice().reverse().map((v) => h("details", { class: "schema-version", "data-version": v.name, open: v === sc.versions[sc.versions.length - 1] },
        h("summary", {}, `Version ${v.name} `, h("code", { class: "hint" }, v.hash.slice(0, 12))),
        h("pre", { class: "schema-content" }, pretty(v.content)))));
  };
  const load = async () => {
    const r = await call("GET", "/ui/schemas");
    if (!r.ok) return;
    list = r.data;
    $("schema-count").textContent = fmtCount(list.length, "schema", "schemas");
    $("schema-list").replaceChildren(...list.map((sc) => selectable(h("tr", { "data-name": sc.name, "aria-selected": sc.name === selected ? "true" : "false" },
      h("td", { class: "wrap" }, sc.name), h("td", {}, sc.format), h("td", { class: "num" }, String(sc.versions.length)),
      h("td", {}, uses(sc)), h("td", { class: "num" }, fmtNum(total(sc, "validations"))),
      h("td", { class: total(sc, "failures") ? "num fail" : "num" }, fmtNum(total(sc, "failures")))), () => {
      selected = sc.name;
      select($("schema-list"), $("schema-list").querySelector(`tr[data-name="${CSS.escape(sc.name)}"]`));
      show();
    })));
    show();
  };
  load();
  setInterval(load, 5000);
};

pages.state = () => {
  const show = (v) => {
    const bytes = Uint8Array.from(atob(v || ""), (c) => c.charCodeAt(0));
    try { return new TextDecoder("utf-8", { fatal: true }).decode(bytes); } catch (e) { return "0x" + [...bytes].map((b) => b.toString(16).padStart(2, "0")).join(""); }
  };
  const result = (r, okText) => {
    $("state-result").textContent = r.ok ? okText : (r.data.error || "failed: " + r.status);
    $("state-result").className = r.ok ? "ok" : "error";
  };
  const load = async () => {
    const r = await call("GET", "/ui/state?prefix=" + encodeURIComponent($("state-prefix").value));
    if (!r.ok) { result(r); return; }
    $("state-count").textContent = fmtCount(r.data.keys.length, "key", "keys") + (r.data.next ? " (first page)" : "");
    $("state-keys").replaceChildren(...r.data.keys.map((k) => {
      const value = show(k.value);
      const tr = h("tr", { "data-key": k.key }, h("td", {}, h("code", {}, k.key)), h("td", {}, value.length > 120 ? value.slice(0, 120) + "…" : value),
        h("td", {}, h("code", {}, k.version)),
        h("td", {}, h("button", { type: "button", class: "danger", onclick: async (e) => {
          e.stopPropagation();
          if (!confirm(`Delete key ${k.key}?`)) return;
          const r = await call("POST", "/ui/state/delete", { key: k.key });
          result(r, `Deleted ${k.key}.`);
          load();
        } }, "Delete")));
      return selectable(tr, () => { $("state-key").value = k.key; $("state-value").value = value; });
    }));
  };
  $("state-refresh").addEventListener("click", load);
  $("state-prefix").addEventListener("keydown", (e) => { if (e.key === "Enter") load(); });
  $("state-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const r = await call("POST", "/ui/state", { key: $("state-key").value, value: $("state-value").value });
    result(r, `Set ${$("state-key").value} (version ${r.data.version}).`);
    load();
  });
  load();
};

pages.diagnostics = () => {
  let es = null, count = 0;
  const start = () => {
    if (es) es.close();
    count = 0;
    $("log-lines").replaceChildren();
    es = live("/ui/events/logs?level=" + $("log-level").value, {
      logs: (lines) => {
        const body = $("log-lines");
        for (const l of lines) {
          body.prepend(h("tr", {}, h("td", {}, fmtTime(l.time)), h("td", { class: "lvl-" + l.level }, l.level), h("td", {}, l.msg),
            h("td", {}, Object.entries(l.attrs || {}).map(([k, v]) => `${k}=${v}`).join(" "))));
          count++;
        }
        while (body.children.length > 1000) body.lastChild.remove();
        $("log-count").textContent = fmtCount(Math.min(count, 1000), "line", "lines") + " (newest first)";
      },
    });
  };
  $("log-level").addEventListener("change", start);
  start();
};

document.addEventListener("DOMContentLoaded", () => {
  const fn = pages[document.body.dataset.page];
  if (fn) fn();
});
