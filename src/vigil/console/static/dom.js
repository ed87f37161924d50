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
