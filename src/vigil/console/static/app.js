// The Vigil console: a hash-routed single page. Routes: #/live[/key], #/alerts?filters, #/alert/<fp>, #/silences.

import { alertPage, alertsPage } from "./alerts.js";
import { api, clear, dur, h, num, whenSignedOut } from "./dom.js";
import { livePage } from "./live.js";
import { silencesPage } from "./silences.js";

const HEALTH_EVERY_MS = 2000;
const main = document.getElementById("main");
const healthEl = document.getElementById("health");
const banner = document.getElementById("banner");
const pages = { live: livePage, alerts: alertsPage, alert: alertPage, silences: silencesPage };
let current = null;

whenSignedOut(() => {
  banner.hidden = false;
  banner.textContent = "Signed out: open the console link printed by `vigil console` (…/?token=…) again.";
});

function route() {
  const raw = location.hash.replace(/^#\/?/, "");
  const q = raw.indexOf("?");
  const path = q >= 0 ? raw.slice(0, q) : raw;
  const parts = path.split("/").filter((p, i) => p !== "" || i === 0);
  const dec = (p) => { try { return decodeURIComponent(p); } catch (_) { return p; } };
  return {
    name: parts[0] || "live",
    arg: parts.slice(1).map(dec).join("/"),
    params: new URLSearchParams(q >= 0 ? raw.slice(q + 1) : ""),
  };
}

function render() {
  if (current && current.stop) current.stop();
  current = null;
  const r = route();
  const page = pages[r.name] || pages.live;
  for (const a of document.querySelectorAll("nav a")) {
    const on = a.dataset.nav === r.name || (r.name === "alert" && a.dataset.nav === "alerts");
    if (on) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  }
  clear(main);
  current = page(main, r) || null;
}

function tile(label, value, level, title) {
  return h("div", { class: `tile ${level || ""}`.trim(), title: title || null },
    h("span", { class: "tile-label" }, label), h("span", { class: "tile-value" }, value));
}

function renderHealth(hl) {
  document.getElementById("pipeline-name").textContent = hl.pipeline || "";
  document.title = `Vigil · ${hl.pipeline || "console"}`;
  const a = hl.alerts || {};
  const tiles = [];
  if (!hl.attached) {
    tiles.push(tile("pipeline", "no pipeline attached", "muted", "the console serves an alert store only"));
  } else {
    const st = hl.stats || {};
    tiles.push(tile("events", num(st.events_in)));
    tiles.push(tile("events/s", num(st.events_per_s)));
    tiles.push(tile("alerts raised", num(st.alerts)));
    tiles.push(tile("late", num(st.late_events), st.late_events > 0 ? "warn" : ""));
    tiles.push(tile("dead letters", num(st.dead_letters), st.dead_letters > 0 ? "warn" : ""));
    tiles.push(tile("watermark lag", hl.watermark_lag_ms === null ? "–" : dur(hl.watermark_lag_ms), "",
      st.watermark_ms ? `watermark ${new Date(st.watermark_ms).toISOString()}` : "no watermark yet"));
    tiles.push(tile("checkpoint age", hl.checkpoint_age_s === null ? "–" : dur(hl.checkpoint_age_s * 1000)));
    const models = hl.model_health || [];
    const sick = models.filter((m) => !m.healthy);
    tiles.push(tile("models", models.length ? (sick.length ? `${sick.length} in fallback` : "healthy") : "n/a",
      sick.length ? "bad" : "", sick.map((m) => `${m.step}: ${m.reason || "unhealthy"}`).join("\n") || null));
    const selfs = hl.self_alerts || [];
    tiles.push(tile("self-alerts", String(selfs.length), selfs.length ? "bad" : "",
      selfs.map((x) => `${x.rule}: ${x.message}`).join("\n") || null));
    if (hl.lag) {
      const total = Object.values(hl.lag).reduce((x, y) => x + y, 0);
      tiles.push(tile("consumer lag", num(total), total > 0 ? "warn" : ""));
    }
    if (st.finished) tiles.push(tile("run", "finished", "muted"));
  }
  tiles.push(tile("firing", num(a.firing || 0), a.firing ? "bad" : ""));
  tiles.push(tile("resolved", num(a.resolved || 0)));
  tiles.push(tile("silenced", num(a.silenced || 0)));
  tiles.push(tile("acked", num(a.acked || 0)));
  clear(healthEl).append(...tiles);
}

async function pollHealth() {
  try {
    renderHealth(await api("/health"));
    healthEl.classList.remove("stale");
  } catch (_) {
    healthEl.classList.add("stale");
  } finally {
    setTimeout(pollHealth, HEALTH_EVERY_MS);
  }
}

window.addEventListener("hashchange", render);
render();
pollHealth();
