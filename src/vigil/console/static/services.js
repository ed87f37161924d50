// #/services: the live service graph of the running pipeline (a service_graph or services step), anomalous services
// marked, each service's deciding layer, and the orchestrator's decisions and fallbacks. Refreshes every 5 s.

import { drawGraph, graphLegend, weightOf } from "./graph.js";
import { api, ApiError, badge, clear, errorBox, h, num, shown, sig, when } from "./dom.js";

const REFRESH_MS = 5000;

function counters(title, rows, what) {
  if (!rows || !rows.length) return h("div", {}, h("h3", {}, title), h("p", { class: "muted" }, "None yet."));
  return h("div", {}, h("h3", {}, title), h("table", { class: "compact" },
    h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Layer"), h("th", { scope: "col" }, what),
      h("th", { scope: "col", class: "num" }, "Count"))),
    h("tbody", {}, rows.map((r) => h("tr", {}, h("td", {}, r.layer), h("td", {}, r.verdict || r.reason),
      h("td", { class: "num" }, num(r.value)))))));
}

function serviceTable(g) {
  const rich = g.nodes.some((n) => n.layer !== undefined);
  const cols = ["Service", "State", ...(rich ? ["Deciding layer", "Bins decided per layer", "Strategy", "Tier"] : ["Spans", "Errors", "Versions"])];
  return h("table", { class: "compact services-table" },
    h("caption", { class: "visually-hidden" }, "Services of the graph"),
    h("thead", {}, h("tr", {}, cols.map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", {}, g.nodes.map((n) => h("tr", { "data-id": n.id },
      h("td", {}, h("code", {}, shown(n.id))),
      h("td", {}, n.anomalous ? badge("anomalous", "status-firing") : badge("normal", "muted")),
      ...(rich ? [h("td", {}, n.layer || "–"),
        h("td", {}, Object.entries(n.decided_by || {}).map(([k, v]) => `${k} ${num(v)}`).join(", ") || "–"),
        h("td", {}, (n.strategy || []).join(" + ") || "–"), h("td", {}, n.tier || "–")]
        : [h("td", {}, num(n.spans)), h("td", {}, num(n.errors)), h("td", {}, Object.keys(n.versions || {}).join(", ") || "–")])))));
}

export function servicesPage(main) {
  let stopped = false;
  let timer = null;
  const box = h("div", {}, h("p", { class: "loading" }, "Loading the service graph…"));
  main.append(h("h1", {}, "Services"), box);

  async function tick() {
    let g;
    try {
      g = await api("/services/graph");
    } catch (err) {
      if (stopped) return;
      clear(box).append(err instanceof ApiError && err.status === 404 ? h("div", { class: "empty-state card" },
        h("p", {}, "No service graph: the pipeline this console runs with has no service_graph or services step."),
        h("p", { class: "muted" }, "Run a traces pipeline (an otlp source with a `service_graph:` or `services:` " +
          "step) with its console to see the graph built from parent/child spans, live.")) : errorBox(err));
      if (!(err instanceof ApiError && err.status === 404)) timer = setTimeout(tick, REFRESH_MS);
      return;
    }
    if (stopped) return;
    const bad = g.nodes.filter((n) => n.anomalous);
    const orch = g.orchestrator;
    const heaviest = g.edges.slice().sort((a, b) => (weightOf(b) || 0) - (weightOf(a) || 0)).slice(0, 5);
    clear(box).append(
      h("p", { class: "summary", role: "status" }, `Step ${g.step}: ${num(g.nodes.length)} services, ` +
        `${num(g.edges.length)} call edges; ${bad.length ? `anomalous: ${bad.map((n) => n.id).join(", ")}` : "none anomalous"}` +
        (g.last_event_ms ? ` · latest event ${when(g.last_event_ms)}` : g.last_bin_ms ? ` · last bin ${when(g.last_bin_ms)}` : "")),
      h("section", { class: "card", "aria-label": "Service graph" }, h("h2", {}, "Dependency graph"),
        h("div", { class: "scroll graph-box" }, drawGraph(g, { title: "Live service graph" })), graphLegend()),
      h("div", { class: "grid2" },
        h("section", { class: "card" }, h("h2", {}, "Services"), h("div", { class: "scroll" }, serviceTable(g))),
        h("section", { class: "card" }, h("h2", {}, "Orchestrator"), orch ? [
          h("p", {}, "Layers down: ", Object.keys(orch.down || {}).length
            ? Object.entries(orch.down).map(([k, v]) => badge(`${k}: ${v}`, "status-firing")) : "none"),
          counters("Decisions (vigil_services_decisions_total)", orch.decisions, "Verdict"),
          counters("Fallbacks (vigil_services_fallbacks_total)", orch.fallbacks, "Reason")]
          : h("p", { class: "muted" }, "This step has no orchestrator (a service_graph step judges by its SLO rules only)."),
        h("h3", {}, "Busiest edges"), h("ul", { class: "people" }, heaviest.map((e) => h("li", {},
          h("code", {}, shown(`${e.source} → ${e.target}`)), " ",
          h("span", { class: "muted" }, e.calls != null ? `${num(e.calls)} calls, ${num(e.errors || 0)} errors`
            : `${sig(e.rate)} calls/s`)))))));
    timer = setTimeout(tick, REFRESH_MS);
  }

  tick();
  return { stop() { stopped = true; clearTimeout(timer); } };
}
