// Small DOM and API helpers. Every piece of data reaches the page as a text node or an attribute value set
// through the DOM: there is no innerHTML anywhere in the console, so alert text can never become markup.

const SVG_NS = "http://www.w3.org/2000/svg";

function put(el, attrs, children) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "text") el.textContent = String(v);
    else if (k === "class") el.setAttribute("class", v);
    else if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "value" || k === "checked" || k === "disabled" || k === "selected") el[k] = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** An HTML element: h("a", {href: "#/x", class: "k"}, "text", child). Strings become text nodes. */
export function h(tag, attrs, ...children) {
  return put(document.createElement(tag), attrs, children);
}

/** An SVG element, same shape as h(). */
export function s(tag, attrs, ...children) {
  return put(document.createElementNS(SVG_NS, tag), attrs, children);
}

// Characters that are invisible or change how the text around them is shown: controls (C0, DEL, C1), format
// characters (bidi embeddings, overrides, isolates and marks, zero-width ones, soft hyphen, tags) and the line
// and paragraph separators. A key "user\u202egnp.exe" would read "userexe.png": they are shown as escapes.
const INVISIBLE = /[\p{Cc}\p{Cf}\p{Zl}\p{Zp}]/gu;
const NAMES = {
  0x200b: "zero width space", 0x200c: "zero width non-joiner", 0x200d: "zero width joiner",
  0x200e: "left-to-right mark", 0x200f: "right-to-left mark", 0x061c: "Arabic letter mark",
  0x202a: "left-to-right embedding", 0x202b: "right-to-left embedding", 0x202c: "pop directional formatting",
  0x202d: "left-to-right override", 0x202e: "right-to-left override", 0x2066: "left-to-right isolate",
  0x2067: "right-to-left isolate", 0x2068: "first strong isolate", 0x2069: "pop directional isolate",
  0x00ad: "soft hyphen", 0xfeff: "zero width no-break space", 0x2028: "line separator",
  0x2029: "paragraph separator",
};

function escapeOf(ch) {
  const cp = ch.codePointAt(0);
  const hex = cp.toString(16).padStart(4, "0");
  return cp > 0xffff ? `\\u{${hex}}` : `\\u${hex}`;
}

function nameOf(ch) {
  const cp = ch.codePointAt(0);
  const kind = NAMES[cp] || (cp < 0x20 || (cp >= 0x7f && cp <= 0x9f) ? "control character" : "format character");
  return `U+${cp.toString(16).toUpperCase().padStart(4, "0")} ${kind}`;
}

/** The text with every invisible or direction-changing character written as an escape (for attributes). */
export function plain(text) {
  return text === null || text === undefined ? "" : String(text).replace(INVISIBLE, escapeOf);
}

/**
 * Text as shown in the page: each invisible or direction-changing character becomes a marked escape
 * (<span class="esc" title="U+202E right-to-left override">\u202e</span>), inside a <bdi>, so that neither the
 * text nor what follows it can be reordered. `keepLines`: newlines and tabs stay (free text: notes, comments).
 */
export function shown(text, { keepLines = false, cls = null } = {}) {
  const s = text === null || text === undefined ? "" : String(text);
  const parts = [];
  let at = 0;
  for (const m of s.matchAll(INVISIBLE)) {
    if (keepLines && (m[0] === "\n" || m[0] === "\t" || m[0] === "\r")) continue;
    if (m.index > at) parts.push(s.slice(at, m.index));
    parts.push(h("span", { class: "esc", title: nameOf(m[0]) }, escapeOf(m[0])));
    at = m.index + m[0].length;
  }
  if (at < s.length) parts.push(s.slice(at));
  return h("bdi", { class: cls }, parts);
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

export class ApiError extends Error {
  constructor(status, body) {
    const msg = body && body.error ? body.error : `HTTP ${status}`;
    super(msg);
    this.status = status;
    this.field = body ? body.field : null;
    this.value = body ? body.value : null;
  }

  describe() {
    let text = this.message;
    if (this.field) text = `${this.field}: ${text}`;
    if (this.value !== null && this.value !== undefined) text += ` (got ${JSON.stringify(this.value)})`;
    return text;
  }
}

let onSignedOut = () => {};
export function whenSignedOut(fn) { onSignedOut = fn; }

/** Call the console API (same origin; the session cookie authenticates, the header marks our own page). */
export async function api(path, { method = "GET", body } = {}) {
  const init = { method, credentials: "same-origin", headers: { "X-Vigil-Console": "1", Accept: "application/json" } };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const r = await fetch("/api" + path, init);
  let data = null;
  try { data = await r.json(); } catch (_) { data = null; }
  if (r.status === 401) onSignedOut();
  if (!r.ok) throw new ApiError(r.status, data);
  return data;
}

export function qs(params) {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== null && v !== undefined && v !== "") p.set(k, String(v));
  const t = p.toString();
  return t ? "?" + t : "";
}

const pad = (n, w = 2) => String(n).padStart(w, "0");

/** Local date and time, "2024-05-01 13:04:05". */
export function when(ms) {
  if (ms === null || ms === undefined) return "–";
  const d = new Date(ms);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

export function clock(ms) {
  const d = new Date(ms);
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** A duration in ms as "850 ms", "12 s", "4.5 min", "3.2 h", "2.1 d". */
export function dur(ms) {
  if (ms === null || ms === undefined || !isFinite(ms)) return "–";
  const a = Math.abs(ms);
  if (a < 1000) return `${Math.round(ms)} ms`;
  if (a < 60e3) return `${(ms / 1e3).toFixed(a < 10e3 ? 1 : 0)} s`;
  if (a < 3600e3) return `${(ms / 60e3).toFixed(1)} min`;
  if (a < 86400e3) return `${(ms / 3600e3).toFixed(1)} h`;
  return `${(ms / 86400e3).toFixed(1)} d`;
}

export function num(x, digits = 0) {
  if (x === null || x === undefined || !isFinite(x)) return "–";
  return Number(x).toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: 0 });
}

/** A number with about 4 significant digits. */
export function sig(x) {
  if (x === null || x === undefined || !isFinite(x)) return "–";
  const a = Math.abs(x);
  if (a !== 0 && (a >= 1e6 || a < 1e-3)) return Number(x).toExponential(2);
  return String(Number(Number(x).toPrecision(4)));
}

export function badge(text, kind) {
  return h("span", { class: `badge ${kind || ""}`.trim() }, text);
}

/** The state badges of an alert: status, then silenced / inhibited / acked / flapping. */
export function stateBadges(a) {
  const out = [badge(a.status, `status-${a.status}`)];
  if (a.silenced) out.push(badge("silenced", "silenced"));
  if (a.inhibited) out.push(badge("inhibited", "inhibited"));
  if (a.acked) out.push(badge("acked", "acked"));
  if (a.flapping) out.push(badge("flapping", "flapping"));
  return h("span", { class: "badges" }, out);
}

export function errorBox(err) {
  const text = err instanceof ApiError ? err.describe() : String(err && err.message ? err.message : err);
  return h("p", { class: "error", role: "alert" }, text);
}

/** The name of whoever uses this browser (remembered for acks and labels). */
export function userName() {
  try { return localStorage.getItem("vigil.by") || ""; } catch (_) { return ""; }
}

export function rememberUser(name) {
  try { localStorage.setItem("vigil.by", name); } catch (_) { /* private mode: nothing to remember */ }
}

let fieldSeq = 0;
/** A labelled form field: h("label") + control, with matching for/id. */
export function field(labelText, control, hint) {
  const id = control.id || `f${++fieldSeq}`;
  control.id = id;
  return h("div", { class: "field" }, h("label", { for: id }, labelText), control,
    hint ? h("small", { class: "muted" }, hint) : null);
}

// a group key is "<route path>|<receiver>|{label="value",...}": show the labels, and whom the group notifies
export function groupTitle(g) {
  const m = /^([^|]*)\|([^|]*)\|(\{[\s\S]*\})$/.exec(g || "");
  if (!m) return [h("code", {}, g ? shown(g) : "(no group)")];
  return [h("code", { title: `group key ${plain(g)}` }, shown(m[3] === "{}" ? "(all alerts)" : m[3])),
    h("span", { class: "muted" }, " notifies "), shown(m[2])];
}
