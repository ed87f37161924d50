// The Vigil console: a hash-routed single page. Routes: #/alerts?filters (where it lands: an on-call engineer
// opens it for the alerts), #/alert/<fp>, #/live[/key], #/silences, #/services, #/incidents, #/incident/<id>.

import { alertPage } from "./alert.js";
import { alertsPage } from "./alerts.js";
import { api, clear, dur, h, num, plain, whenSignedOut } from "./dom.js";
import { incidentPage, incidentsPage } from "./incidents.js";
import { livePage } from "./live.js";
import { servicesPage } from "./services.js";
import { silencesPage } from "./silences.js";

const HEALTH_EVERY_MS = 2000;
const main = document.getElementById("main");
const healthEl = document.getElementById("health");
const banner = document.getElementById("banner");
const pages = { live: livePage, alerts: alertsPage, alert: alertPage, silences: silencesPage, services: servicesPage,
  incidents: incidentsPage, incident: incidentPage };
const parentOf = { alert: "alerts", incident: "incidents" };
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
    name: parts[0] || "alerts",
    arg: parts.slice(1).map(dec).join("/"),
    params: new URLSearchParams(q >= 0 ? raw.slice(q + 1) : ""),
  };
}

function render() {
  if (current && current.stop) current.stop();
  current = null;
  const r = route();
  const page = pages[r.name] || pages.alerts;
  for (const a of document.querySelectorAll("nav a")) {
    const on = a.dataset.nav === r.name || parentOf[r.name] === a.dataset.nav;
    if (on) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  }
  clear(main);
  current = page(main, r) || null;
}

function tile(label, value, level, title, hint) {
  return h("div", { class: `tile ${level || ""}`.trim(), title: title || null },
    h("span", { class: "tile-label" }, label), h("span", { class: "tile-value" }, value),
    hint ? h("span", { class: "tile-hint" }, hint) : null);
}

const LAG_WARN_MS = 10_000;
const LAG_BAD_MS = 60_000;
const level = (ms) => (ms === null || ms === undefined ? "" : ms >= LAG_BAD_MS ? "bad" : ms >= LAG_WARN_MS ? "warn" : "");

function alertTiles(a, exact) {
  const more = exact === false ? "≥ " : "";
  return [
    tile("firing", num(a.firing || 0), a.firing ? "bad" : "", "alerts firing now"),
    tile("resolved", num(a.resolved || 0)),
    tile("silenced", more + num(a.silenced || 0), "", "firing alerts an active silence matches" +
      (more ? " (counted among the most recently changed firing alerts)" : "")),
    tile("acked", num(a.acked || 0), "", "firing alerts someone acknowledged"),
  ];
}

function pipelineTiles(hl) {
  if (!hl.attached) {
    return [tile("pipeline", "not attached", "muted", "This console serves an alert store only: no live " +
      "counters, lags or charts. `vigil run <pipeline>` serves the console next to a running pipeline.",
      "alert store only")];
  }
  const st = hl.stats || {};
  const out = [
    tile("events", num(st.events_in)),
    tile("events/s", num(st.events_per_s)),
    tile("alerts raised", num(st.alerts)),
    tile("late", num(st.late_events), st.late_events > 0 ? "warn" : ""),
    tile("dead letters", num(st.dead_letters), st.dead_letters > 0 ? "warn" : ""),
  ];
  if (st.finished) {
    out.push(tile("run", "finished", "muted", "The source ended: the counters are final; nothing lags."));
  } else {
    const wm = st.watermark_ms ? `watermark ${new Date(st.watermark_ms).toISOString()}` : "no watermark yet";
    out.push(tile("event-time lag", dur(hl.event_lag_ms), level(hl.event_lag_ms),
      "Event time: how far the watermark trails the newest event seen (out-of-order slack, idle partitions). " +
      `Replayed old data is not late by this measure. ${wm}` +
      (hl.newest_event_ms ? `, newest event ${new Date(hl.newest_event_ms).toISOString()}` : ""),
      "watermark → newest event"));
    out.push(tile("processing lag", dur(hl.processing_lag_ms), level(hl.processing_lag_ms),
      "Wall-clock time since the pipeline last processed a batch: grows when the pipeline is stuck or idle.",
      "since the last batch"));
  }
  out.push(tile("checkpoint age", hl.checkpoint_age_s === null ? "–" : dur(hl.checkpoint_age_s * 1000)));
  const models = hl.model_health || [];
  const sick = models.filter((m) => !m.healthy);
  out.push(tile("models", models.length ? (sick.length ? `${sick.length} in fallback` : "healthy") : "n/a",
    sick.length ? "bad" : "", sick.map((m) => `${m.step}: ${m.reason || "unhealthy"}`).join("\n") || null));
  const selfs = hl.self_alerts || [];
  out.push(tile("self-alerts", String(selfs.length), selfs.length ? "bad" : "",
    selfs.map((x) => `${x.rule}: ${x.message}`).join("\n") || null));
  if (hl.lag) {
    const total = Object.values(hl.lag).reduce((x, y) => x + y, 0);
    out.push(tile("consumer lag", num(total), total > 0 ? "warn" : ""));
  }
  return out;
}

function renderHealth(hl) {
  const name = plain(hl.pipeline || "");
  document.getElementById("pipeline-name").textContent = name;
  if (!location.hash.startsWith("#/alert/") && !location.hash.startsWith("#/incident/")) document.title = `Vigil · ${name || "console"}`;
  clear(healthEl).append(
    h("div", { class: "tile-group", role: "group", "aria-label": "Alerts" }, alertTiles(hl.alerts || {},
      hl.alerts_exact)),
    h("div", { class: "tile-group", role: "group", "aria-label": "Pipeline" }, pipelineTiles(hl)));
}

async function pollHealth() {
  try {
    renderHealth(await api("/health"));
    healthEl.classList.remove("stale");
    healthEl.removeAttribute("title");
  } catch (err) {
    healthEl.classList.add("stale");
    if (!healthEl.querySelector(".tile")) {
      clear(healthEl).append(tile("health", "unavailable", "bad", String(err && err.message ? err.message : err)));
    } else {
      healthEl.title = `Not refreshed: ${err && err.message ? err.message : err}`;
    }
  } finally {
    setTimeout(pollHealth, HEALTH_EVERY_MS);
  }
}

window.addEventListener("hashchange", render);
render();
pollHealth();
