// #/alert/<fingerprint>: one alert, explained, with its window of data, its labels, history and actions.

import { barList, lineChart } from "./chart.js";
import {
  api, ApiError, badge, clear, dur, errorBox, field, groupTitle, h, plain, qs, rememberUser, shown, sig, stateBadges,
  userName, when,
} from "./dom.js";

const WINDOW_MS = 10 * 60 * 1000;

function facts(pairs) {
  return h("dl", { class: "facts" }, pairs.filter(([, v]) => v !== null && v !== undefined && v !== "")
    .map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

export function alertPage(main, r) {
  const fp = r.arg;
  let stopped = false;
  const box = h("div", {}, h("p", { class: "loading" }, "Loading the alert…"));
  main.append(h("p", {}, h("a", { href: "#/alerts" }, "← Alerts")), box);

  async function load(flash) {
    let a;
    try {
      a = await api("/alerts/" + encodeURIComponent(fp));
    } catch (err) {
      clear(box).append(err instanceof ApiError && err.status === 404 ? h("div", { class: "empty-state card" },
        h("p", {}, `No alert with fingerprint ${fp} in this console's alert store.`),
        h("a", { class: "button-link", href: "#/alerts?status=all" }, "Show all alerts")) : errorBox(err));
      return;
    }
    if (stopped) return;
    const chartBox = h("div", { class: "chart-box" }, h("p", { class: "muted" }, "Loading the window around it…"));
    const status = h("p", { class: "flash", role: "status" }, flash || "");
    const by = h("input", { type: "text", value: userName(), maxlength: "100", autocomplete: "name",
      placeholder: "who acts (remembered in this browser)" });
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
    document.title = `${plain(a.alertname || "alert")} on ${plain(a.key)} · Vigil`;
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
    const has = (v) => v !== null && v !== undefined;
    const expl = a.explanation.length ? barList(a.explanation.map((x) => ({
      label: shown(x.feature), value: x.score, strong: x.flag === true,
      text: `${x.score >= 0 ? "+" : ""}${sig(x.score)}` + (has(x.value) ? ` (value ${sig(x.value)}` +
        (has(x.expected) ? `, expected ${sig(x.expected)}` : "") + ")" : ""),
    })), "Top contributing features") : h("p", { class: "muted" }, "This detector gives no per-feature attribution.");
    const revs = h("table", { class: "compact" },
      h("thead", {}, h("tr", {}, ["Revision", "Status", "Reason", "At", "Note"].map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, a.revisions.map((v) => h("tr", {}, h("td", {}, String(v.revision)), h("td", {}, badge(v.status,
        `status-${v.status}`)), h("td", {}, v.reason), h("td", {}, when(v.at_ms)),
        h("td", {}, shown(v.note || "", { keepLines: true }))))));
    const people = (rows, render, none) => rows.length ? h("ul", { class: "people" }, rows.map(render))
      : h("p", { class: "muted" }, none);
    const labels = h("dl", { class: "facts labels" }, Object.entries(a.labels).sort().map(([k, v]) => [
      h("dt", {}, shown(k)), h("dd", {}, h("code", {}, shown(v)))]));
    clear(box).append(
      h("h1", { class: "alert-title", title: plain(a.key) }, h("span", {}, shown(a.alertname || "alert")),
        h("span", { class: "muted" }, " on "),
        shown(a.key, { cls: "key-title" })),
      h("p", {}, stateBadges(a), " ", badge(a.severity || "–", `sev ${a.severity || ""}`)),
      h("p", { class: "message lead" }, a.message ? shown(a.message, { keepLines: true }) : "(no message)"),
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
          ["Group", a.group ? h("span", {}, ...groupTitle(a.group)) : "–"],
          ["Silenced by", a.silenced_by.join(", ")], ["Inhibited by", a.inhibited_by.join(", ")],
        ]), h("h3", {}, "Labels"), labels)),
      h("div", { class: "grid2" },
        h("section", { class: "card" }, h("h2", {}, "Feedback"), people(a.feedback, (f) => h("li", {},
          badge(f.label.replace("_", " "), f.label === "false_positive" ? "fp" : "tp"), " ",
          shown(f.by || "–"), " ", h("time", { class: "muted" }, when(f.at_ms)),
          f.note ? h("p", { class: "note" }, shown(f.note, { keepLines: true })) : null),
          "Not labelled yet: was it a true or a false positive?")),
        h("section", { class: "card" }, h("h2", {}, "Acks"), people(a.acks, (k) => h("li", {},
          shown(k.by), " ", h("time", { class: "muted" }, when(k.at_ms)),
          k.cleared_ms ? badge("cleared", "muted") : null,
          k.comment ? h("p", { class: "note" }, shown(k.comment, { keepLines: true })) : null), "Nobody has acked it."))),
      h("section", { class: "card" }, h("h2", {}, "History"), a.revisions.length ? h("div", { class: "scroll" }, revs)
        : h("p", { class: "muted" }, "No recorded changes.")),
      h("details", { class: "card" }, h("summary", {}, "Raw alert"),
        h("pre", {}, JSON.stringify(a.alert, null, 2).split("\n").map(plain).join("\n"))));
    if (a.event_ts_ms === null || a.event_ts_ms === undefined) {
      clear(chartBox).append(h("p", { class: "muted" }, "The alert has no event time."));
      return;
    }
    if (!a.recorder) {
      clear(chartBox).append(h("p", { class: "muted" }, "No data to chart: this console serves the alert store " +
        "only. Run the pipeline with its console (", h("code", {}, "vigil run"), ") to see the stream around new " +
        "alerts."));
      return;
    }
    try {
      const ser = await api("/series/" + encodeURIComponent(a.key) + qs({ around: a.event_ts_ms, span: WINDOW_MS }));
      const names = Object.keys(ser.fields);
      const top = a.explanation.map((x) => x.feature).find((x) => names.includes(x));
      const name = top || names[0];
      const steps = Object.values(ser.steps);
      const flags = ser.ts_ms.map((_, i) => steps.some((st) => st.flag && st.flag[i]));
      if (!ser.ts_ms.length) {
        clear(chartBox).append(h("p", { class: "muted" }, `No recorded points within ${dur(WINDOW_MS / 2)} of the ` +
          "alert: the recorder keeps each key's latest points, and this key has streamed on since."));
        return;
      }
      clear(chartBox).append(
        h("p", { class: "muted" }, `${name || "value"} over ${dur(WINDOW_MS)} around ${when(a.event_ts_ms)}; ` +
          "the dashed line is the alert, red dots are anomalous points."),
        lineChart({ ts: ser.ts_ms, ys: name ? ser.fields[name] : [], flags, marker: a.event_ts_ms,
          title: plain(`${a.key} ${name || ""}`), width: chartBox.clientWidth, height: 220 }));
    } catch (err) {
      clear(chartBox).append(h("p", { class: "muted" }, err instanceof ApiError && err.status === 404
        ? `No recorded points around this alert: ${err.message}.` : err.message));
    }
  }

  load();
  return { stop() { stopped = true; } };
}
