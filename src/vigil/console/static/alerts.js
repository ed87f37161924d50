// #/alerts?status=&severity=&q=&grouped=: the alerts, newest change first, a page at a time from the server.
//
// The first page refreshes every 5 s. Older pages load as the end of the list scrolls into view (or with the
// button); while older pages are shown the refresh pauses, so rows don't move under the reader. A search looks
// through a bounded number of alerts per call and says how far back it got; it goes on by itself for a while,
// then asks.

import {
  api, badge, clear, errorBox, field, groupTitle, h, num, plain, qs, shown, stateBadges, when,
} from "./dom.js";

const REFRESH_MS = 5000;
const PAGE = 50;
const AUTO_CALLS = 50; // a search goes on by itself for this many calls (500,000 alerts), then asks
const STATUSES = [["firing", "Firing"], ["resolved", "Resolved"], ["retracted", "Retracted"], ["all", "All"]];

export function alertHref(fp) { return "#/alert/" + encodeURIComponent(fp); }

function select(name, options, value) {
  return h("select", { name }, options.map(([v, t]) => h("option", { value: v, selected: v === value }, t)));
}

function alertRow(a) {
  return h("tr", { class: `sev-${a.severity}`, "data-fp": a.fingerprint },
    h("td", {}, stateBadges(a), " ", badge(a.severity || "–", `sev ${a.severity || ""}`)),
    h("td", { class: "name-cell" }, h("a", { href: alertHref(a.fingerprint), title: plain(a.alertname) },
      shown(a.alertname || a.fingerprint))),
    h("td", { class: "key-cell", title: plain(a.key) }, h("div", { class: "clamp" }, shown(a.key))),
    h("td", { class: "message", title: plain(a.message) }, h("div", { class: "clamp" }, shown(a.message))),
    h("td", { class: "time" }, h("time", {}, when(a.starts_at_ms))),
    h("td", { class: "time" }, h("time", {}, when(a.updated_ms))),
    h("td", { class: "num" }, num(a.observations)));
}

function alertTable(rows, caption) {
  return h("table", { class: "alerts" },
    h("caption", { class: "visually-hidden" }, caption),
    h("thead", {}, h("tr", {}, [["State", "status, then severity"], ["Alert"], ["Key"], ["Message"],
      ["Started", "event time of the first observation"], ["Changed", "when the alert last changed (newest first)"],
      ["Seen", "observations: how many times the detector flagged it"]].map(
      ([t, tip]) => h("th", { scope: "col", title: tip || null, class: t === "Seen" ? "num" : null }, t)))),
    h("tbody", {}, rows.map(alertRow)));
}

function grouped(rows) {
  const groups = new Map();
  for (const a of rows) {
    if (!groups.has(a.group)) groups.set(a.group, []);
    groups.get(a.group).push(a);
  }
  return [...groups.entries()].map(([g, list]) => {
    const firing = list.filter((a) => a.status === "firing").length;
    return h("section", { class: "card group" },
      h("h2", {}, ...groupTitle(g), h("span", { class: "muted count" },
        ` · ${list.length} alert${list.length === 1 ? "" : "s"}, ${firing} firing`)),
      h("div", { class: "scroll" }, alertTable(list, `Alerts of group ${plain(g)}`)));
  });
}

export function alertsPage(main, r) {
  const p = r.params;
  const f = {
    status: STATUSES.some(([s]) => s === p.get("status")) ? p.get("status") : "firing",
    severity: p.get("severity") || "", q: p.get("q") || "", grouped: p.get("grouped") === "1",
  };
  let rows = [];
  let cursor = null;
  let complete = true;
  let searchedTo = null;
  let examined = 0;
  let total = null;
  let counts = null;
  let pages = 0;
  let calls = 0; // calls of this search since it last found a full page or the reader asked for more
  let made = 0; // calls behind what is shown: the refresh repeats only a list that took one call
  let loading = false;
  let failed = null;
  let stopped = false;
  let gen = 0;
  let timer = null;
  let debounce = null;

  const tabs = h("div", { class: "tabs", role: "radiogroup", "aria-label": "Status" });
  const severity = select("severity", [["", "any"], ["critical", "critical"], ["warning", "warning"],
    ["info", "info"]], f.severity);
  const text = h("input", { type: "search", name: "q", value: f.q, maxlength: "200", autocomplete: "off",
    placeholder: "e.g. card-0042 or amount" });
  const groupBox = h("input", { type: "checkbox", id: "grouped", checked: f.grouped });
  const form = h("form", { class: "filters card", role: "search", "aria-label": "Filter alerts" },
    field("Search key, alert name or message", text), field("Severity", severity),
    h("div", { class: "field check" }, groupBox, h("label", { for: "grouped" }, "Group by group key")));
  const summary = h("p", { class: "summary", role: "status", "aria-live": "polite" });
  const list = h("div", { class: "list", "aria-busy": "true" });
  const more = h("div", { class: "more" });
  main.append(h("h1", {}, "Alerts"), tabs, form, summary, list, more);
  form.addEventListener("submit", (e) => { e.preventDefault(); apply(); });

  const params = () => ({ status: f.status === "firing" ? "" : f.status, severity: f.severity, q: f.q,
    grouped: f.grouped ? "1" : "" });
  function apply() {
    history.replaceState(null, "", "#/alerts" + qs(params()));
    reload();
  }
  const later = () => { clearTimeout(debounce); debounce = setTimeout(() => { f.q = text.value.trim(); apply(); }, 300); };
  text.addEventListener("input", later);
  severity.addEventListener("change", () => { f.severity = severity.value; apply(); });
  groupBox.addEventListener("change", () => { f.grouped = groupBox.checked; render(); history.replaceState(null, "",
    "#/alerts" + qs(params())); });

  const searching = () => Boolean(f.q || f.severity);

  function renderTabs() {
    const all = counts ? counts.firing + counts.resolved + counts.retracted : null;
    clear(tabs).append(...STATUSES.map(([s, label]) => {
      const id = `status-${s}`;
      const n = counts ? (s === "all" ? all : counts[s]) : null;
      const input = h("input", { type: "radio", name: "status", id, value: s, checked: s === f.status });
      input.addEventListener("change", () => { f.status = s; apply(); });
      return h("label", { for: id, class: `tab ${s === f.status ? "on" : ""}`.trim() }, input,
        h("span", {}, label), h("span", { class: "count" }, n === null ? "…" : num(n)));
    }));
  }

  function describe() {
    if (!pages) return loading ? (searching() ? "Searching…" : "") : "";
    const word = f.status === "all" ? "" : `${f.status} `;
    if (!searching()) {
      if (!total) return ""; // the empty state says it
      const shownCount = rows.length < total ? `; the ${num(rows.length)} that changed last are shown` : "";
      return `${num(total)} ${word}alert${total === 1 ? "" : "s"}, newest change first${shownCount}.`;
    }
    const what = [f.q ? `“${f.q}”` : null, f.severity ? `severity ${f.severity}` : null].filter(Boolean).join(", ");
    const found = `${num(rows.length)} ${word}alert${rows.length === 1 ? "" : "s"} matching ${what}`;
    if (complete && cursor === null) {
      return rows.length ? `${found}: all of them.` : `Looked through all ${num(examined)} ${word}alerts.`;
    }
    if (!complete) return `${found} so far; looked through ${num(examined)} alerts, back to changes of ` +
      `${when(searchedTo)}.`;
    return `${found} so far, newest change first.`;
  }

  function emptyState() {
    if (searching()) {
      return h("div", { class: "empty-state card" }, h("p", {}, `No ${f.status === "all" ? "" : f.status + " "}` +
        "alert matches. The search looks at the key, the alert name and the message (letters in any case)."),
        h("button", { type: "button", class: "secondary", onclick: () => { text.value = ""; f.q = "";
          severity.value = ""; f.severity = ""; apply(); } }, "Clear the search"));
    }
    const all = counts ? counts.firing + counts.resolved + counts.retracted : 0;
    if (!all) {
      return h("div", { class: "empty-state card" }, h("p", {}, "No alerts yet."),
        h("p", { class: "muted" }, "Alerts appear here as soon as a detector flags an event and the alert policy " +
          "raises it. Live streams (when a pipeline runs with this console) are under Live."));
    }
    return h("div", { class: "empty-state card" },
      h("p", {}, `No ${f.status} alerts.`),
      h("p", { class: "muted" }, `${num(all)} alert${all === 1 ? "" : "s"} in the store: ` +
        `${num(counts.firing)} firing, ${num(counts.resolved)} resolved, ${num(counts.retracted)} retracted.`),
      h("a", { class: "button-link", href: "#/alerts?status=all" }, "Show all alerts"));
  }

  function render() {
    renderTabs();
    summary.textContent = describe() + (f.grouped && cursor !== null && rows.length ? " Grouped: the groups of " +
      "the alerts loaded so far." : "");
    list.setAttribute("aria-busy", loading && !pages ? "true" : "false");
    if (!pages && loading) {
      clear(list).append(h("p", { class: "loading" }, searching() ? "Searching the alerts…" : "Loading alerts…"));
    }
    else if (!pages && failed) clear(list).append(errorBox(failed), retryButton());
    else if (!rows.length && (complete || cursor === null)) clear(list).append(emptyState());
    else if (f.grouped) clear(list).append(...grouped(rows));
    else clear(list).append(h("div", { class: "card scroll" }, alertTable(rows, "Alerts, newest change first")));
    renderMore();
  }

  function retryButton() {
    return h("button", { type: "button", class: "secondary", onclick: () => reload() }, "Try again");
  }

  function renderMore() {
    clear(more);
    if (!pages) return;
    if (failed) { more.append(errorBox(failed), retryButton()); return; }
    if (cursor === null) {
      if (rows.length > PAGE) more.append(h("p", { class: "muted end" }, "End of the list."));
      return;
    }
    if (loading) { more.append(h("p", { class: "loading" }, searching() ? "Searching older alerts…" : "Loading…")); return; }
    const asks = !complete && calls >= AUTO_CALLS;
    more.append(h("button", { type: "button", class: "secondary", onclick: () => { calls = 0; loadMore(); } },
      asks ? "Keep searching older alerts" : searching() ? "Search older alerts" : "Load older alerts"));
    if (made > 1) {
      more.append(h("span", { class: "muted paused" }, searching() ? " Refresh paused while the search goes on. "
        : " Refresh paused while older alerts are shown. "),
        h("button", { type: "button", class: "link", onclick: () => { window.scrollTo(0, 0); reload(); } },
          "Back to the newest"));
    }
  }

  async function fetchPage(after) {
    const mine = gen;
    loading = true;
    failed = null;
    render();
    let data = null;
    try {
      data = await api("/alerts" + qs({ status: f.status === "all" ? "" : f.status, severity: f.severity, q: f.q,
        limit: PAGE, cursor: after }));
    } catch (err) {
      if (mine === gen && !stopped) failed = err;
    }
    if (stopped || mine !== gen) return;
    loading = false;
    if (data) {
      const seen = new Set(rows.map((a) => a.fingerprint));
      rows = after ? rows.concat(data.alerts.filter((a) => !seen.has(a.fingerprint))) : data.alerts;
      cursor = data.next_cursor;
      complete = data.complete;
      searchedTo = data.searched_to_ms;
      examined = (after ? examined : 0) + data.examined;
      total = data.total;
      counts = data.counts;
      pages = after ? pages + 1 : 1;
      made = after ? made + 1 : 1;
      calls = data.alerts.length >= PAGE ? 0 : calls + 1;
    }
    render();
    schedule();
    if (data && cursor !== null && visible && (complete ? false : calls < AUTO_CALLS)) loadMore();
  }

  function reload() {
    gen += 1;
    rows = [];
    cursor = null;
    pages = 0;
    calls = 0;
    fetchPage(null);
  }

  function loadMore() {
    if (!loading && cursor !== null) fetchPage(cursor);
  }

  function schedule() {
    clearTimeout(timer);
    if (stopped) return;
    timer = setTimeout(() => {
      if (made <= 1 && !loading) fetchPage(null); else schedule();
    }, REFRESH_MS);
  }

  let visible = false; // the end of the list is on screen: load older alerts as the reader gets there
  const watcher = new IntersectionObserver((entries) => {
    visible = entries.some((e) => e.isIntersecting);
    if (visible && pages && cursor !== null && (complete || calls < AUTO_CALLS)) loadMore();
  }, { rootMargin: "200px" });
  watcher.observe(more);

  reload();
  return { stop() { stopped = true; clearTimeout(timer); clearTimeout(debounce); watcher.disconnect(); } };
}
