// A service graph drawn as inline SVG: a deterministic layered layout by call depth, edges weighted by traffic,
// anomalous services in red *and* labelled "anomalous" (colour is never the only sign), root causes ringed.

import { h, plain, s, sig } from "./dom.js";

const COL_W = 250;
const ROW_H = 64;
const NODE_W = 175;
const NODE_H = 38;
const PAD = 24;

/**
 * Call depth of every node: roots (nothing calls them) are 0, a callee one more than its deepest caller.
 * Cycles are cut where they close (each node is placed once, at most at depth n - 1). Deterministic: ties by id.
 */
export function layers(nodes, edges) {
  const ids = nodes.map((n) => n.id).sort();
  const callers = new Map(ids.map((id) => [id, []]));
  for (const e of edges) if (callers.has(e.target) && callers.has(e.source) && e.source !== e.target) callers.get(e.target).push(e.source);
  const depth = new Map();
  const visiting = new Set();
  const walk = (id) => {
    if (depth.has(id)) return depth.get(id);
    if (visiting.has(id)) return -1; // a cycle: this caller does not push the node down
    visiting.add(id);
    let d = 0;
    for (const c of callers.get(id).slice().sort()) d = Math.max(d, walk(c) + 1);
    visiting.delete(id);
    depth.set(id, Math.min(d, ids.length - 1));
    return depth.get(id);
  };
  for (const id of ids) walk(id);
  return depth;
}

/** Positions: one column per depth, nodes in a column ordered by the mean row of their callers, then by id. */
export function layout(nodes, edges) {
  const depth = layers(nodes, edges);
  const cols = [];
  for (const [id, d] of depth) (cols[d] = cols[d] || []).push(id);
  const row = new Map();
  const callersOf = (id) => edges.filter((e) => e.target === id && row.has(e.source)).map((e) => row.get(e.source));
  for (const col of cols) {
    if (!col) continue;
    const key = (id) => { const r = callersOf(id); return r.length ? r.reduce((a, b) => a + b, 0) / r.length : -1; };
    col.sort((a, b) => key(a) - key(b) || (a < b ? -1 : a > b ? 1 : 0));
    col.forEach((id, i) => row.set(id, i));
  }
  const pos = new Map();
  const tallest = Math.max(1, ...cols.map((c) => (c ? c.length : 0)));
  cols.forEach((col, d) => (col || []).forEach((id, i) => {
    const offset = (tallest - col.length) * ROW_H / 2; // centre short columns
    pos.set(id, { x: PAD + d * COL_W, y: PAD + offset + i * ROW_H });
  }));
  return { pos, width: PAD * 2 + Math.max(0, cols.length - 1) * COL_W + NODE_W, height: PAD * 2 + (tallest - 1) * ROW_H + NODE_H };
}

/** An edge's traffic weight: its calls, else its rate (calls/s), else its last window's rate; null if unknown. */
export function weightOf(e) {
  for (const v of [e.calls, e.rate, e.last_window && e.last_window.rate]) if (typeof v === "number" && isFinite(v)) return v;
  return null;
}

let graphSeq = 0;

function shortName(id) {
  return id.length > 21 ? id.slice(0, 20) + "…" : id;
}

/**
 * The graph as an <svg class="graph">.
 * @param {object} g  {nodes: [{id, anomalous, cause_rank?, layer?}], edges: [{source, target, calls|rate, errors, anomalous?}]}
 * @param {object} o  {title: accessible name, href: (id) => link or null, nodeNote: (node) => extra title text}
 */
export function drawGraph(g, o = {}) {
  const nodes = g.nodes || [];
  const edges = (g.edges || []).filter((e) => e.source !== e.target);
  const { pos, width, height } = layout(nodes, edges);
  const weights = edges.map(weightOf).filter((w) => w !== null && w > 0);
  const maxW = weights.length ? Math.max(...weights) : 1;
  const widthOf = (e) => {
    const w = weightOf(e);
    return w === null || w <= 0 ? 1.5 : 1.5 + 6 * Math.sqrt(w / maxW);
  };
  const bad = nodes.filter((n) => n.anomalous).map((n) => n.id);
  const label = `${o.title || "Service graph"}: ${nodes.length} services, ${edges.length} call edges` +
    (bad.length ? `; anomalous: ${bad.join(", ")}` : "; none anomalous");
  const marker = `arrow-${++graphSeq}`; // ids are per document: each graph its own
  const svg = s("svg", { class: "graph", viewBox: `0 0 ${width} ${height}`, width, height, role: "img",
    "aria-label": plain(label) },
  s("title", {}, plain(label)),
  s("defs", {}, s("marker", { id: marker, viewBox: "0 0 10 10", refX: "10", refY: "5", markerWidth: "9",
    markerHeight: "9", markerUnits: "userSpaceOnUse", orient: "auto-start-reverse" }, s("path", { d: "M 0 0 L 10 5 L 0 10 z", class: "arrowhead" }))));
  const byId = new Map(nodes.map((n) => [n.id, n]));
  for (const e of edges) {
    const a = pos.get(e.source);
    const b = pos.get(e.target);
    if (!a || !b) continue;
    const x1 = a.x + NODE_W;
    const y1 = a.y + NODE_H / 2;
    const x2 = b.x;
    const y2 = b.y + NODE_H / 2;
    const back = x2 <= x1; // a call to the same or an earlier column: curve around
    const mx = back ? Math.max(x1, b.x + NODE_W) + 40 : (x1 + x2) / 2;
    const d = back ? `M ${x1} ${y1} C ${mx} ${y1}, ${mx} ${y2}, ${b.x + NODE_W} ${y2}`
      : `M ${x1} ${y1} C ${mx} ${y1}, ${mx} ${y2}, ${x2} ${y2}`;
    const w = weightOf(e);
    const tip = `${e.source} → ${e.target}` + (e.calls != null ? `: ${e.calls} calls` : e.rate != null ? `: ${sig(e.rate)} calls/s` : "") +
      (e.errors ? `, ${e.errors} errors` : "") + (e.layer ? `, decided by ${e.layer}` : "");
    const hot = e.anomalous || (byId.get(e.target) && byId.get(e.target).anomalous && byId.get(e.source) && byId.get(e.source).anomalous);
    svg.append(s("path", { d, class: `edge${hot ? " hot" : ""}`, "stroke-width": widthOf(e).toFixed(2),
      "marker-end": `url(#${marker})`, "data-source": e.source, "data-target": e.target, "data-weight": w === null ? null : String(w) },
    s("title", {}, plain(tip))));
  }
  for (const n of nodes) {
    const p = pos.get(n.id);
    if (!p) continue;
    const cls = ["node", n.anomalous ? "anomalous" : "", n.cause_rank === 1 ? "cause" : ""].filter(Boolean).join(" ");
    const status = n.anomalous ? "anomalous" : "normal";
    const extra = [n.cause_rank ? `cause #${n.cause_rank}` : null, n.layer ? `decided by ${n.layer}` : null,
      o.nodeNote ? o.nodeNote(n) : null].filter(Boolean).join(", ");
    const sub = [n.anomalous ? "⚠ anomalous" : null, n.cause_rank ? `cause #${n.cause_rank}` : null,
      !n.anomalous && !n.cause_rank && n.layer ? n.layer : null].filter(Boolean).join(" · ");
    const body = s("g", { class: cls, "data-id": n.id, "data-status": status, transform: `translate(${p.x},${p.y})` },
      s("title", {}, plain(`${n.id}: ${status}${extra ? ", " + extra : ""}`)),
      s("rect", { width: NODE_W, height: NODE_H, rx: "6" }),
      s("text", { x: "8", y: sub ? "15" : "23", class: "name" }, plain(shortName(n.id))),
      sub ? s("text", { x: "8", y: "31", class: "sub" }, sub) : null);
    const href = o.href ? o.href(n.id) : null;
    svg.append(href ? s("a", { href }, body) : body);
  }
  return svg;
}

/** The legend under a graph. */
export function graphLegend() {
  return h("p", { class: "legend muted" },
    h("span", { class: "key-swatch anomalous", "aria-hidden": "true" }), " anomalous (labelled ⚠) ",
    h("span", { class: "key-swatch cause", "aria-hidden": "true" }), " top cause ",
    h("span", { class: "key-swatch normal", "aria-hidden": "true" }), " normal · columns are call depth (callers " +
    "left of callees) · an edge is thicker the more traffic it carries");
}
