// #/incidents[?status=]: incidents, newest first, a page at a time. #/incident/<id>: one incident — the affected
// subgraph drawn, the ranked causes with their evidence, the timeline, and the playbook runs on it with their steps,
// the actions taken, and an Approve button on a gate that waits for a person.

import { drawGraph, graphLegend } from "./graph.js";
import {
  api, ApiError, badge, clear, errorBox, field, h, plain, qs, rememberUser, shown, sig, userName, when,
} from "./dom.js";

const PAGE = 50;
const STATUSES = [["", "All"], ["open", "Open"], ["mitigated", "Mitigated"], ["resolved", "Resolved"]];

export function incidentHref(id) { return "#/incident/" + encodeURIComponent(id); }

const statusBadge = (st) => badge(st, st === "open" ? "status-firing" : st === "resolved" ? "status-resolved" : "acked");
const sevBadge = (sev) => badge(sev || "–", `sev ${sev || ""}`);

function noStore() {
  return h("div", { class: "empty-state card" }, h("p", {}, "No incident store attached."),
    h("p", { class: "muted" }, "Start the console with ", h("code", {}, "--incidents PATH"), " (and ",
      h("code", {}, "--remediation PATH"), " for the playbook runs), e.g. ",
      h("code", {}, "vigil console --incidents vigil-out/selfheal/incidents.db --remediation vigil-out/selfheal/remediation.db"),
      " after ", h("code", {}, "vigil demo selfheal"), "."));
}

export function incidentsPage(main, r) {
  let stopped = false;
  let rows = [];
  let cursor = null;
  const status = STATUSES.some(([v]) => v === r.params.get("status")) ? r.params.get("status") : "";
  const tabs = h("div", { class: "tabs", role: "radiogroup", "aria-label": "Status" }, STATUSES.map(([v, label]) => {
    const id = `inc-status-${v || "all"}`;
    const input = h("input", { type: "radio", name: "status", id, value: v, checked: v === status });
    input.addEventListener("change", () => { location.hash = "#/incidents" + qs({ status: v }); });
    return h("label", { for: id, class: `tab ${v === status ? "on" : ""}`.trim() }, input, h("span", {}, label));
  }));
  const list = h("div", { class: "list", "aria-busy": "true" }, h("p", { class: "loading" }, "Loading incidents…"));
  const more = h("div", { class: "more" });
  main.append(h("h1", {}, "Incidents"), tabs, list, more);

  function render(attached) {
    list.setAttribute("aria-busy", "false");
    if (!attached) { clear(list).append(noStore()); return; }
    if (!rows.length) {
      clear(list).append(h("div", { class: "empty-state card" }, h("p", {}, status ? `No ${status} incidents.` : "No incidents yet."),
        h("p", { class: "muted" }, "An incident groups alerts by time, by distance in the service graph and by shared traces.")));
    } else {
      clear(list).append(h("div", { class: "card scroll" }, h("table", { class: "incidents" },
        h("caption", { class: "visually-hidden" }, "Incidents, newest first"),
        h("thead", {}, h("tr", {}, ["Incident", "State", "Opened", "Top cause", "Services", "Alerts"].map((t) =>
          h("th", { scope: "col" }, t)))),
        h("tbody", {}, rows.map((x) => h("tr", { "data-id": x.id },
          h("td", {}, h("a", { href: incidentHref(x.id) }, shown(x.id))),
          h("td", {}, statusBadge(x.status), " ", sevBadge(x.severity), x.waiting ? [" ", badge("needs approval", "flapping")] : null),
          h("td", { class: "time" }, when(x.opened_ms)),
          h("td", {}, x.top_service ? [h("code", {}, shown(x.top_service)), ` (${x.top_kind})`] : "–"),
          h("td", {}, x.services.map((sv) => h("code", { class: "chip" }, shown(sv)))),
          h("td", { class: "num" }, String(x.alerts))))))));
    }
    clear(more);
    if (cursor) more.append(h("button", { type: "button", class: "secondary", onclick: load }, "Load older incidents"));
  }

  async function load() {
    try {
      const data = await api("/incidents" + qs({ status, limit: PAGE, cursor }));
      if (stopped) return;
      rows = rows.concat(data.incidents);
      cursor = data.next_cursor;
      render(data.attached);
    } catch (err) {
      if (!stopped) clear(list).append(errorBox(err));
    }
  }

  load();
  return { stop() { stopped = true; } };
}

function evidence(ev) {
  const entries = Object.entries(ev || {});
  if (!entries.length) return h("p", { class: "muted" }, "No evidence recorded.");
  const val = (v) => (typeof v === "number" ? sig(v) : typeof v === "object" && v !== null
    ? h("code", {}, shown(JSON.stringify(v))) : shown(String(v)));
  return h("dl", { class: "facts" }, entries.map(([k, v]) => [h("dt", {}, shown(k)), h("dd", {}, val(v))]));
}

function timeline(inc) {
  return h("table", { class: "compact timeline" },
    h("thead", {}, h("tr", {}, ["At", "What", "Detail"].map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", {}, inc.timeline.map((t) => h("tr", {}, h("td", { class: "time" }, when(t.at_ms)),
      h("td", {}, t.what), h("td", {}, shown(t.detail))))));
}

function stepRow(st) {
  const what = st.action === "approve" ? (st.approved_by ? `approved by ${st.approved_by}` : st.reason || "approval")
    : st.result && st.result.would ? `would ${st.result.would}` : st.params ? JSON.stringify(st.params) : "";
  return h("tr", { "data-step": String(st.index) },
    h("td", {}, String(st.index)), h("td", {}, h("code", {}, st.action || "?")),
    h("td", {}, badge(st.status, st.status === "failed" ? "status-firing" : st.status === "waiting" ? "flapping"
      : st.status === "done" || st.status === "approved" ? "status-resolved" : "muted")),
    h("td", { class: "message" }, shown(what)), h("td", { class: "time" }, when(st.at_ms)));
}

function runCard(run, reload) {
  const status = h("p", { class: "flash", role: "status" });
  let gate = null;
  if (run.waiting_step !== null && run.waiting_step !== undefined) {
    const step = run.steps.find((x) => x.index === run.waiting_step) || {};
    const by = h("input", { type: "text", value: userName(), maxlength: "100", autocomplete: "name",
      placeholder: "who approves (remembered in this browser)" });
    const comment = h("input", { type: "text", maxlength: "2000", placeholder: "why (optional)" });
    const approve = async () => {
      rememberUser(by.value.trim());
      try {
        const res = await api(`/remediation/${encodeURIComponent(run.run_id)}/approve`, { method: "POST",
          body: { by: by.value.trim(), comment: comment.value } });
        reload(`Approved step ${res.step} of ${run.run_id}` + (res.signalled ? " (workflow signalled)." : "."));
      } catch (err) {
        clear(status).append(errorBox(err));
      }
    };
    gate = h("div", { class: "gate", role: "group", "aria-label": `Approval of ${plain(run.run_id)}` },
      h("p", {}, badge("waiting for approval", "flapping"), " step ", String(run.waiting_step),
        step.reason ? [": ", shown(step.reason)] : null),
      h("div", { class: "row" }, field("Your name", by), field("Comment", comment)),
      h("div", { class: "buttons" }, h("button", { type: "button", class: "good", onclick: approve }, "Approve")));
  } else if (run.resuming) {
    gate = h("p", {}, badge("approved", "status-resolved"), " the run goes on when its engine next looks at it.");
  }
  return h("section", { class: "card run", "data-run": run.run_id, "aria-label": `Playbook run ${plain(run.run_id)}` },
    h("h3", {}, h("code", {}, shown(run.run_id)), " ", badge(run.status, run.status === "failed" ? "status-firing"
      : run.status === "succeeded" ? "status-resolved" : "flapping"), run.dry_run ? [" ", badge("dry run", "muted")] : null),
    h("p", { class: "muted" }, `playbook ${run.playbook} on ${run.service} · executor ${run.executor} · started ${when(run.created_ms)}`),
    gate,
    run.steps.length ? h("div", { class: "scroll" }, h("table", { class: "compact steps" },
      h("thead", {}, h("tr", {}, ["Step", "Action", "Status", "What", "At"].map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, run.steps.map(stepRow)))) : h("p", { class: "muted" }, "No step carried out yet."),
    status);
}

export function incidentPage(main, r) {
  const id = r.arg;
  let stopped = false;
  const box = h("div", {}, h("p", { class: "loading" }, "Loading the incident…"));
  main.append(h("p", {}, h("a", { href: "#/incidents" }, "← Incidents")), box);

  async function load(flash) {
    let inc;
    try {
      inc = await api("/incidents/" + encodeURIComponent(id));
    } catch (err) {
      if (stopped) return;
      clear(box).append(err instanceof ApiError && err.status === 404 ? (err.field === "incidents" ? noStore()
        : h("div", { class: "empty-state card" }, h("p", {}, `No incident ${id} in this console's incident store.`),
          h("a", { class: "button-link", href: "#/incidents" }, "Show all incidents"))) : errorBox(err));
      return;
    }
    if (stopped) return;
    document.title = `${plain(inc.id)} · Vigil`;
    const causes = inc.causes.length ? h("ol", { class: "causes" }, inc.causes.map((c, i) => h("li", { "data-service": c.service },
      h("p", {}, h("strong", {}, h("code", {}, shown(c.service))), ` ${c.kind} · score ${sig(c.score)}`,
        i === 0 ? [" ", badge("top cause", "status-firing")] : null),
      evidence(c.evidence))))
      : h("p", { class: "muted" }, "No cause ranked yet (RCA runs a little after an incident opens).");
    const runs = !inc.remediation ? h("p", { class: "muted" }, "No remediation store attached: start the console with ",
      h("code", {}, "--remediation PATH"), " to see the playbook runs on this incident.")
      : inc.runs.length ? inc.runs.map((run) => runCard(run, load)) : h("p", { class: "muted" }, "No playbook ran on this incident.");
    const skipped = inc.skipped.length ? h("ul", { class: "people" }, inc.skipped.map((x) => h("li", {},
      h("code", {}, shown(x.playbook || "?")), " not started: ", shown(x.why || ""), " ",
      h("time", { class: "muted" }, when(x.at_ms))))) : null;
    clear(box).append(
      h("h1", {}, h("span", {}, shown(inc.id)), " ", statusBadge(inc.status), " ", sevBadge(inc.severity)),
      h("p", { class: "flash", role: "status" }, flash || ""),
      h("p", { class: "muted" }, `Opened ${when(inc.opened_ms)} · ${inc.services.length} service(s) alerted · ` +
        `${inc.alerts.length} alert(s)`),
      h("section", { class: "card", "aria-label": "Affected services" }, h("h2", {}, "Affected services"),
        inc.subgraph.nodes.length ? [h("div", { class: "scroll graph-box" }, drawGraph(inc.subgraph, {
          title: `Affected subgraph of ${inc.id}` })), graphLegend(),
        inc.live_graph ? null : h("p", { class: "muted" }, "Edges from the incident's record; with a live pipeline " +
          "they carry its traffic.")] : h("p", { class: "muted" }, "No services recorded.")),
      h("div", { class: "grid2" },
        h("section", { class: "card", "aria-label": "Ranked causes" }, h("h2", {}, "Ranked causes"), causes),
        h("section", { class: "card", "aria-label": "Actions" }, h("h2", {}, "Actions taken"), runs, skipped)),
      h("section", { class: "card" }, h("h2", {}, "Timeline"), h("div", { class: "scroll" }, timeline(inc))));
  }

  load();
  return { stop() { stopped = true; } };
}
