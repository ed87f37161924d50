// #/live[/key]: the monitored streams, refreshed every 2 s: pick a key, see its values with anomalies in red.

import { lineChart } from "./chart.js";
import { api, ApiError, badge, clear, errorBox, field, h, plain, qs, shown, sig, when } from "./dom.js";

const REFRESH_MS = 2000;

function keyHref(key, fieldName) {
  return "#/live/" + encodeURIComponent(key) + (fieldName ? qs({ field: fieldName }) : "");
}

export function livePage(main, r) {
  let key = r.arg || null;
  let fieldName = r.params.get("field");
  let stopped = false;
  let timer = null;
  let filterText = "";
  const filter = h("input", { type: "search", placeholder: "part of a key", autocomplete: "off", maxlength: "200" });
  const keyList = h("ul", { class: "keylist" });
  const chartBox = h("div", { class: "chart-box", "aria-live": "off" });
  const fleetBox = h("div", { class: "chart-box" });
  const flagsBox = h("div");
  filter.addEventListener("input", () => { filterText = filter.value; refreshKeys(); });
  const layout = [
    h("div", { class: "live" },
      h("aside", { class: "card keys", "aria-label": "Keys" }, field("Find a key", filter), keyList),
      h("section", { class: "card", "aria-label": "Chart of the selected key" }, chartBox)),
    h("section", { class: "card", "aria-label": "Whole stream" },
      h("h2", {}, "All keys: events per second"), fleetBox, h("h3", {}, "Latest anomalies"), flagsBox)];
  const body = h("div", {}, h("p", { class: "loading" }, "Loading the live streams…"));
  main.append(h("h1", {}, "Live streams"), body);
  let laidOut = false;

  async function refreshKeys() {
    let data;
    try {
      data = await api("/keys" + qs({ q: filterText, limit: 200 }));
    } catch (err) {
      if (laidOut) clear(keyList).append(h("li", {}, errorBox(err)));
      else clear(body).append(errorBox(err), h("p", { class: "muted" }, "Trying again every few seconds."));
      return null;
    }
    if (stopped) return null;
    if (!data.recorder) {
      clear(body).append(h("div", { class: "empty-state card" },
        h("h2", {}, "No live pipeline"),
        h("p", {}, "Live charts need a running pipeline: this console serves an alert store only. Start the " +
          "pipeline with ", h("code", {}, "vigil run <pipeline.yaml>"), ": it serves this console next to it, " +
          "with the charts."),
        h("a", { class: "button-link", href: "#/alerts" }, "See the alerts")));
      return data;
    }
    if (!laidOut) {
      laidOut = true;
      clear(body).append(...layout);
    }
    const items = data.keys.map((k) => h("li", {},
      h("a", { href: keyHref(k.key), "aria-current": k.key === key ? "true" : null, title: plain(k.key) +
          (k.flags ? `: ${k.flags} anomalous point${k.flags === 1 ? "" : "s"} among the last ${k.points}` : "") },
        shown(k.key, { cls: "key-name" }),
        k.flags ? badge(String(k.flags), "status-firing") : null)));
    clear(keyList).append(...(items.length ? items : [h("li", { class: "muted" }, filterText
      ? "No recorded key contains that." : "No keys yet: waiting for the first events.")]));
    return data;
  }

  async function refreshChart() {
    if (!key) {
      clear(chartBox).append(h("p", { class: "muted" }, "Pick a key to plot its values."));
      return;
    }
    let ser;
    try {
      ser = await api("/series/" + encodeURIComponent(key));
    } catch (err) {
      clear(chartBox).append(h("h2", {}, shown(key, { cls: "key-title" })),
        err instanceof ApiError && err.status === 404 ? h("p", { class: "muted" }, err.message) : errorBox(err));
      return;
    }
    if (stopped) return;
    const names = Object.keys(ser.fields);
    if (!fieldName || !names.includes(fieldName)) fieldName = names[0] || null;
    const steps = Object.entries(ser.steps);
    const flags = ser.ts_ms.map((_, i) => steps.some(([, st]) => st.flag && st.flag[i]));
    const tip = (i) => [`${when(ser.ts_ms[i])}  ${fieldName} = ${sig(ser.fields[fieldName][i])}`,
      ...steps.map(([n, st]) => `${n}: score ${sig(st.score[i])}${st.flag[i] ? " (anomalous)" : ""}`)].join("\n");
    const picker = names.length > 1 ? field("Field", h("select", {
      onchange: (e) => { location.hash = keyHref(key, e.target.value); },
    }, names.map((n) => h("option", { value: n, selected: n === fieldName }, n)))) : null;
    const last = ser.ts_ms.length - 1;
    const latest = last < 0 ? null : h("table", { class: "compact" },
      h("caption", {}, `Latest point, ${when(ser.ts_ms[last])}`),
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "step"), h("th", { scope: "col" }, "score"),
        h("th", { scope: "col" }, "calibrated"), h("th", { scope: "col" }, "anomalous"))),
      h("tbody", {}, steps.map(([n, st]) => h("tr", {}, h("td", {}, n), h("td", {}, sig(st.score[last])),
        h("td", {}, sig(st.calibrated[last])), h("td", {}, st.flag[last] ? "yes" : "no")))));
    const nflags = flags.filter(Boolean).length;
    clear(chartBox).append(
      h("div", { class: "chart-head" }, h("h2", {}, shown(key, { cls: "key-title" })), picker),
      h("p", { class: "muted" }, `${ser.ts_ms.length} recent points of ${fieldName || "–"}; ` +
        (nflags ? `${nflags} anomalous (red)` : "no anomaly among them")),
      lineChart({ ts: ser.ts_ms, ys: fieldName ? ser.fields[fieldName] : [], flags, title: plain(`${key} ${fieldName}`),
        pointTitle: tip, width: chartBox.clientWidth }),
      latest);
  }

  async function refreshFleet() {
    let f;
    try { f = await api("/fleet"); } catch (err) { clear(fleetBox).append(errorBox(err)); return; }
    if (stopped) return;
    clear(fleetBox).append(lineChart({ ts: f.ts_ms, ys: f.events, flags: f.flags.map((x) => x > 0), height: 160,
      width: fleetBox.clientWidth, title: "events per second of event time, seconds with anomalies in red", dotClass: "flagged-second",
      pointTitle: (i) => `${when(f.ts_ms[i])}: ${f.events[i]} events, ${f.flags[i]} anomalous` }));
    const rows = f.recent_flags.slice(0, 15).map((x) => h("li", {},
      h("time", {}, when(x.ts_ms)), " ", h("a", { href: keyHref(x.key) }, shown(x.key)), " ",
      h("span", { class: "muted" }, Object.entries(x.scores).map(([n, v]) => `${n} ${sig(v)}`).join(", "))));
    clear(flagsBox).append(rows.length ? h("ul", { class: "flags" }, rows)
      : h("p", { class: "muted" }, "No anomalous point yet."));
  }

  async function tick() {
    const data = await refreshKeys();
    if (data && !data.recorder) return; // nothing live to follow
    if (!data && !laidOut) {
      if (!stopped) timer = setTimeout(tick, REFRESH_MS);
      return;
    }
    if (!key && data && data.keys && data.keys.length) {
      const flagged = data.keys.find((k) => k.flags > 0);
      key = (flagged || data.keys[0]).key;
      refreshKeys();
    }
    await Promise.all([refreshChart(), refreshFleet()]);
    if (!stopped) timer = setTimeout(tick, REFRESH_MS);
  }

  tick();
  return { stop() { stopped = true; clearTimeout(timer); } };
}
