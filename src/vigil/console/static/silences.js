// #/silences[?m=matchers]: list silences, create one (matchers, duration, comment), expire one.

import { api, badge, clear, errorBox, field, h, plain, qs, rememberUser, shown, userName, when } from "./dom.js";

export function silencesPage(main, r) {
  let stopped = false;
  let showExpired = false;
  const matchers = h("textarea", { rows: "3", required: true, placeholder: "key=u1\nseverity=~warn.*",
    value: r.params.get("m") || "" });
  const duration = h("input", { type: "text", value: "2h", required: true, maxlength: "32" });
  const comment = h("input", { type: "text", maxlength: "2000", placeholder: "why" });
  const by = h("input", { type: "text", value: userName(), maxlength: "100", autocomplete: "name",
    placeholder: "your name" });
  const status = h("p", { class: "flash", role: "status" });
  const hidden = h("p", { class: "warn-note", hidden: true }); // matchers with characters one can't see
  const check = () => {
    const v = matchers.value;
    hidden.hidden = plain(v.replace(/\n/g, " ")) === v.replace(/\n/g, " ");
    clear(hidden).append("These matchers contain characters that are invisible or reorder text, shown here " +
      "as escapes (a silence matches them exactly): ", ...v.split("\n").filter(Boolean).map((m) =>
      h("code", { class: "chip" }, shown(m))));
  };
  matchers.addEventListener("input", check);
  const form = h("form", { class: "card silence-form", "aria-label": "New silence" },
    h("h2", {}, "New silence"),
    field("Matchers, one per line", matchers,
      "label=value, label!=value, label=~regex or label!~regex; labels: alertname, key, severity, pipeline"),
    hidden,
    h("div", { class: "row" }, field("Duration", duration, "e.g. 30m, 2h, 1d"), field("Comment", comment),
      field("Created by", by)),
    h("div", { class: "buttons" }, h("button", { type: "submit" }, "Create silence")), status);
  const expiredToggle = h("input", { type: "checkbox", id: "show-expired" });
  const list = h("div", { "aria-live": "polite" }, h("p", { class: "loading" }, "Loading silences…"));
  main.append(h("h1", {}, "Silences"), form,
    h("section", { class: "card" }, h("div", { class: "chart-head" }, h("h2", {}, "Silences"),
      h("div", { class: "field check" }, expiredToggle, h("label", { for: "show-expired" }, "Show expired"))), list));
  expiredToggle.addEventListener("change", () => { showExpired = expiredToggle.checked; load(); });
  check();

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    rememberUser(by.value.trim());
    const ms = matchers.value.split("\n").map((x) => x.trim()).filter(Boolean);
    try {
      const res = await api("/silences", { method: "POST", body: { matchers: ms, duration: duration.value.trim(),
        comment: comment.value, created_by: by.value.trim() } });
      clear(status).append(`Silence ${res.id} created.`);
      matchers.value = "";
      comment.value = "";
      history.replaceState(null, "", "#/silences");
      load();
    } catch (err) {
      clear(status).append(errorBox(err));
    }
  });

  async function expire(id) {
    try {
      await api("/silences/" + encodeURIComponent(id), { method: "DELETE" });
      clear(status).append(`Silence ${id} expired.`);
    } catch (err) {
      clear(status).append(errorBox(err));
    }
    load();
  }

  async function load() {
    let data;
    try { data = await api("/silences" + qs({ all: showExpired ? "true" : "" })); } catch (err) {
      clear(list).append(errorBox(err));
      return;
    }
    if (stopped) return;
    if (!data.silences.length) {
      clear(list).append(h("p", { class: "empty" }, showExpired ? "No silences, active or expired."
        : "No silences. A silence mutes the notifications of the alerts its matchers match, for a while."));
      return;
    }
    const state = (x) => x.expired_ms !== null ? badge("expired", "muted")
      : x.active ? badge("active", "silenced") : x.starts_ms > data.now_ms ? badge("pending", "muted")
        : badge("ended", "muted");
    clear(list).append(h("div", { class: "scroll" }, h("table", { class: "compact silences" },
      h("thead", {}, h("tr", {}, ["State", "Matchers", "From", "Until", "By", "Comment", ""].map(
        (t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, data.silences.map((x) => h("tr", { "data-id": x.id },
        h("td", {}, state(x)),
        h("td", {}, x.matchers.map((m) => h("code", { class: "chip" }, shown(m)))),
        h("td", {}, when(x.starts_ms)), h("td", {}, when(x.expired_ms !== null ? x.expired_ms : x.ends_ms)),
        h("td", {}, shown(x.created_by)), h("td", {}, shown(x.comment, { keepLines: true })),
        h("td", {}, x.expired_ms === null ? h("button", { type: "button", class: "small",
          "aria-label": `Expire silence ${x.id}`, onclick: () => expire(x.id) }, "Expire") : null)))))));
  }

  load();
  return { stop() { stopped = true; } };
}
