// #/alerts (the list, with filters and grouping) and #/alert/<fingerprint> (one alert, explained, with actions).

import { barList, lineChart } from "./chart.js";
import {
  api, ApiError, badge, clear, dur, errorBox, field, h, qs, rememberUser, sig, stateBadges, userName, when,
} from "./dom.js";

const LIST_REFRESH_MS = 5000;
const WINDOW_MS = 10 * 60 * 1000;

function alertHref(fp) { return "#/alert/" + encodeURIComponent(fp); }

function select(name, options, value) {
  return h("select", { name }, options.map(([v, t]) => h("option", { value: v, selected: v === value }, t)));
}

function alertRow(a) {
  return h("tr", { class: `sev-${a.severity}` },
    h("td", {}, stateBadges(a)),
    h("td", {}, badge(a.severity || "–", `sev ${a.severity || ""}`)),
    h("td", {}, h("a", { href: alertHref(a.fingerprint) }, a.alertname || a.fingerprint)),
    h("td", { class: "key-cell" }, a.key),
    h("td", { class: "message" }, a.message),
    h("td", {}, h("time", {}, when(a.starts_at_ms))),
    h("td", { class: "num" }, String(a.observations)));
}

function alertTable(rows) {
  return h("table", { class: "alerts" },
    h("thead", {}, h("tr", {}, ["State", "Severity", "Alert", "Key", "Message", "Started", "Seen"].map(
      (t) => h("th", { scope: "col" }, t)))),
    h("tbody", {}, rows.map(alertRow)));
}

export function alertsPage(main, r) {
  const p = r.params;
  let stopped = false;
  let timer = null;
  let debounce = null;
  const status = select("status", [["", "any"], ["firing", "firing"], ["resolved", "resolved"],
    ["retracted", "retracted"]], p.get("status") || "");
  const severity = select("severity", [["", "any"], ["critical", "critical"], ["warning", "warning"],
    ["info", "info"]], p.get("severity") || "");
  const text = h("input", { type: "search", name: "q", value: p.get("q") || "", placeholder: "key, alert or message",
    autocomplete: "off" });
  const grouped = h("input", { type: "checkbox", name: "group", checked: p.get("grouped") === "1" });
  const out = h("div", { "aria-live": "polite" });
  const form = h("form", { class: "filters card", role: "search", "aria-label": "Filter alerts" },
    field("Status", status), field("Severity", severity), field("Key or text", text),
    h("div", { class: "field check" }, grouped, h("label", { for: "grouped" }, "Group by group key")));
  grouped.id = "grouped";
  form.addEventListener("submit", (e) => e.preventDefault());
  const params = () => ({ status: status.value, severity: severity.value, q: text.value.trim(),
    grouped: grouped.checked ? "1" : "" });
  const onChange = () => {
    clearTimeout(debounce);
    debounce = setTimeout(() => {
      history.replaceState(null, "", "#/alerts" + qs(params()));
      load();
    }, 250);
  };
  for (const el of [status, severity, grouped]) el.addEventListener("change", onChange);
  text.addEventListener("input", onChange);
  main.append(h("h1", {}, "Alerts"), form, out);

  async function load() {
    clearTimeout(timer);
    const f = params();
    let data;
    try {
      data = await api("/alerts" + qs({ status: f.status, severity: f.severity, q: f.q, limit: 1000 }));
    } catch (err) {
      clear(out).append(errorBox(err));
      data = null;
    }
    if (stopped) return;
    if (data) {
      const summary = h("p", { class: "muted" }, `${data.total} alert${data.total === 1 ? "" : "s"}` +
        (data.total > data.alerts.length ? `, the ${data.alerts.length} most recently changed shown` : ""));
      if (!data.alerts.length) clear(out).append(summary, h("p", { class: "empty" }, "No alert matches."));
      else if (!f.grouped) clear(out).append(summary, h("div", { class: "card scroll" }, alertTable(data.alerts)));
      else {
        const groups = new Map();
        for (const a of data.alerts) {
          if (!groups.has(a.group)) groups.set(a.group, []);
          groups.get(a.group).push(a);
        }
        const sections = [...groups.entries()].map(([g, rows]) => {
          const firing = rows.filter((a) => a.status === "firing").length;
          return h("section", { class: "card group" },
            h("h2", {}, h("code", {}, g || "(no group)"), " ",
              h("span", { class: "muted" }, `${rows.length} alert${rows.length === 1 ? "" : "s"}, ${firing} firing`)),
            h("div", { class: "scroll" }, alertTable(rows)));
        });
        clear(out).append(summary, ...sections);
      }
    }
    timer = setTimeout(load, LIST_REFRESH_MS);
  }

  load();
  return { stop() { stopped = true; clearTimeout(timer); clearTimeout(debounce); } };
}

function facts(pairs) {
  return h("dl", { class: "facts" }, pairs.filter(([, v]) => v !== null && v !== undefined && v !== "")
    .map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

export function alertPage(main, r) {
  const fp = r.arg;
  let stopped = false;
  const box = h("div");
  main.append(h("p", {}, h("a", { href: "#/alerts" }, "← All alerts")), box);

  async function load(flash) {
    let a;
    try {
      a = await api("/alerts/" + encodeURIComponent(fp));
    } catch (err) {
      clear(box).append(err instanceof ApiError && err.status === 404 ? h("p", { class: "empty" },
        "No such alert.") : errorBox(err));
      return;
    }
    if (stopped) return;
    const chartBox = h("div", { class: "chart-box" }, h("p", { class: "muted" }, "Loading the window around it…"));
    const status = h("p", { class: "flash", role: "status" }, flash || "");
    const by = h("input", { type: "text", value: userName(), maxlength: "100", autocomplete: "name" });
    const note = h("textarea", { rows: "2", maxlength: "2000", placeholder: "why (optional)" });
    const act = async (what, body, done) => {
      rememberUser(by.value.trim());
      try {
        await api(`/alerts/${encodeURIComponent(a.fingerprint)}/${what}`, { method: "POST", body });
        load(done);
      } catch (err) {
        clear(status).append(errorBox(err));
      }
    };
    const matchers = [`alertname=${a.alertname || ""}`, `key=${a.key || ""}`];
    const actions = h("section", { class: "card actions", "aria-label": "Actions" },
      h("h2", {}, "Act on it"), field("Your name", by), field("Comment or note", note),
      h("div", { class: "buttons" },
        h("button", { type: "button", onclick: () => act("ack", { by: by.value.trim(), comment: note.value },
          "Acknowledged.") }, "Ack"),
        h("button", { type: "button", class: "good", onclick: () => act("feedback", { label: "true_positive",
          note: note.value, by: by.value.trim() }, "Labelled true positive.") }, "True positive"),
        h("button", { type: "button", class: "bad", onclick: () => act("feedback", { label: "false_positive",
          note: note.value, by: by.value.trim() }, "Labelled false positive.") }, "False positive"),
        h("a", { class: "button-link", href: "#/silences" + qs({ m: matchers.join("\n") }) }, "Silence…")),
      status);
    const shown = (v) => v !== null && v !== undefined;
    const expl = a.explanation.length ? barList(a.explanation.map((x) => ({
      label: x.feature, value: x.score, strong: x.flag === true,
      text: `${x.score >= 0 ? "+" : ""}${sig(x.score)}` + (shown(x.value) ? ` (value ${sig(x.value)}` +
        (shown(x.expected) ? `, expected ${sig(x.expected)}` : "") + ")" : ""),
    })), "Top contributing features") : h("p", { class: "muted" }, "This detector gives no per-feature attribution.");
    const revs = h("table", { class: "compact" },
      h("thead", {}, h("tr", {}, ["Revision", "Status", "Reason", "At", "Note"].map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, a.revisions.map((v) => h("tr", {}, h("td", {}, String(v.revision)), h("td", {}, badge(v.status,
        `status-${v.status}`)), h("td", {}, v.reason), h("td", {}, when(v.at_ms)), h("td", {}, v.note || "")))));
    const people = (rows, render) => rows.length ? h("ul", { class: "people" }, rows.map(render))
      : h("p", { class: "muted" }, "none");
    clear(box).append(
      h("h1", {}, h("span", {}, a.alertname || "alert"), h("span", { class: "muted" }, " on "),
        h("span", { class: "key-title" }, a.key)),
      h("p", {}, stateBadges(a), " ", badge(a.severity || "–", `sev ${a.severity || ""}`)),
      h("p", { class: "message lead" }, a.message || "(no message)"),
      h("div", { class: "grid2" },
        h("section", { class: "card", "aria-label": "Window around the alert" }, h("h2", {}, "Around the alert"),
          chartBox),
        h("section", { class: "card", "aria-label": "Explanation" }, h("h2", {}, "Why: top contributing features"),
          expl)),
      h("div", { class: "grid2" }, actions,
        h("section", { class: "card" }, h("h2", {}, "Details"), facts([
          ["Fingerprint", h("code", {}, a.fingerprint)],
          ["Score", `${sig(a.score)} (threshold ${sig(a.threshold)})`],
          ["Event time", when(a.event_ts_ms)], ["Started", when(a.starts_at_ms)], ["Ended", when(a.ends_at_ms)],
          ["Observations", String(a.observations)], ["Revision", String(a.revision)],
          ["Group", h("code", {}, a.group || "–")],
          ["Silenced by", a.silenced_by.join(", ")], ["Inhibited by", a.inhibited_by.join(", ")],
        ]))),
      h("div", { class: "grid2" },
        h("section", { class: "card" }, h("h2", {}, "Labels"), people(a.feedback, (f) => h("li", {},
          badge(f.label.replace("_", " "), f.label === "false_positive" ? "fp" : "tp"), " ",
          h("span", {}, f.by || "–"), " ", h("time", { class: "muted" }, when(f.at_ms)),
          f.note ? h("p", { class: "note" }, f.note) : null))),
        h("section", { class: "card" }, h("h2", {}, "Acks"), people(a.acks, (k) => h("li", {},
          h("span", {}, k.by), " ", h("time", { class: "muted" }, when(k.at_ms)),
          k.cleared_ms ? badge("cleared", "muted") : null, k.comment ? h("p", { class: "note" }, k.comment) : null)))),
      h("section", { class: "card" }, h("h2", {}, "History"), h("div", { class: "scroll" }, revs)),
      h("details", { class: "card" }, h("summary", {}, "Raw alert"),
        h("pre", {}, JSON.stringify(a.alert, null, 2))));
    if (a.event_ts_ms === null || a.event_ts_ms === undefined) {
      clear(chartBox).append(h("p", { class: "muted" }, "The alert has no event time."));
      return;
    }
    try {
      const ser = await api("/series/" + encodeURIComponent(a.key) + qs({ around: a.event_ts_ms, span: WINDOW_MS }));
      const name = Object.keys(ser.fields)[0];
      const steps = Object.values(ser.steps);
      const flags = ser.ts_ms.map((_, i) => steps.some((st) => st.flag && st.flag[i]));
      clear(chartBox).append(
        h("p", { class: "muted" }, `${name || "value"} over ${dur(WINDOW_MS)} around ${when(a.event_ts_ms)}; ` +
          "the dashed line is the alert, red dots are anomalous points."),
        lineChart({ ts: ser.ts_ms, ys: name ? ser.fields[name] : [], flags, marker: a.event_ts_ms,
          title: `${a.key} ${name || ""}`, width: chartBox.clientWidth, height: 220 }));
    } catch (err) {
      clear(chartBox).append(h("p", { class: "muted" }, err instanceof ApiError && err.status === 404
        ? "No recorded points around this alert (the console has no live recorder, or the key was forgotten)."
        : err.message));
    }
  }

  load();
  return { stop() { stopped = true; } };
}
