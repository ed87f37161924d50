// Hand-drawn SVG charts: a time-series line with anomaly dots, and a horizontal bar list.

import { clock, h, s, sig, when } from "./dom.js";

const M = { left: 64, right: 16, top: 14, bottom: 30 };

function niceTicks(lo, hi, n) {
  if (!(hi > lo)) return [lo];
  const step0 = (hi - lo) / n;
  const mag = Math.pow(10, Math.floor(Math.log10(step0)));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((x) => x >= step0) || step0;
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Number(v.toPrecision(12)));
  return out;
}

/**
 * A line chart of one series.
 * @param {object} o  {ts: [ms], ys: [number|null], flags: [bool], title, width, height, marker: ms|null,
 *                    dotClass: "anomaly", pointTitle: (i) => string}
 *                    width: the container's width in px, so that labels keep their size (default 860).
 */
export function lineChart(o) {
  const W = Math.max(320, Math.round(o.width || 860));
  const H = o.height || 260;
  const ts = o.ts || [];
  const ys = o.ys || [];
  const pts = [];
  for (let i = 0; i < ts.length; i++) if (ys[i] !== null && ys[i] !== undefined && isFinite(ys[i])) pts.push(i);
  const flagged = pts.filter((i) => o.flags && o.flags[i]);
  const label = `${o.title || "series"}: ${pts.length} points` + (flagged.length ? `, ${flagged.length} anomalous` : "");
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img", "aria-label": label });
  svg.append(s("title", {}, label));
  if (!pts.length) {
    svg.append(s("text", { x: W / 2, y: H / 2, class: "empty", "text-anchor": "middle" }, "no points"));
    return svg;
  }
  let t0 = Math.min(...pts.map((i) => ts[i]));
  let t1 = Math.max(...pts.map((i) => ts[i]));
  if (o.marker !== null && o.marker !== undefined) { t0 = Math.min(t0, o.marker); t1 = Math.max(t1, o.marker); }
  if (t1 === t0) { t0 -= 1000; t1 += 1000; }
  let lo = Math.min(...pts.map((i) => ys[i]));
  let hi = Math.max(...pts.map((i) => ys[i]));
  if (hi === lo) { lo -= 1; hi += 1; }
  const padY = (hi - lo) * 0.06;
  lo -= padY; hi += padY;
  const x = (t) => M.left + ((t - t0) / (t1 - t0)) * (W - M.left - M.right);
  const y = (v) => M.top + (1 - (v - lo) / (hi - lo)) * (H - M.top - M.bottom);

  const grid = s("g", { class: "grid" });
  for (const v of niceTicks(lo, hi, 4)) {
    grid.append(s("line", { x1: M.left, x2: W - M.right, y1: y(v), y2: y(v) }));
    grid.append(s("text", { x: M.left - 8, y: y(v) + 4, "text-anchor": "end" }, sig(v)));
  }
  const span = t1 - t0;
  for (let k = 0; k <= 4; k++) {
    const t = t0 + (span * k) / 4;
    const anchor = k === 0 ? "start" : k === 4 ? "end" : "middle";
    grid.append(s("text", { x: x(t), y: H - 8, "text-anchor": anchor }, span > 86400e3 ? when(t) : clock(t)));
  }
  svg.append(grid);

  if (o.marker !== null && o.marker !== undefined) {
    svg.append(s("line", { class: "marker", x1: x(o.marker), x2: x(o.marker), y1: M.top, y2: H - M.bottom },
      s("title", {}, `alert at ${when(o.marker)}`)));
  }
  let d = "";
  let prev = -2;
  for (const i of pts) {
    d += `${i === prev + 1 && d ? "L" : "M"}${x(ts[i]).toFixed(1)},${y(ys[i]).toFixed(1)}`;
    prev = i;
  }
  svg.append(s("path", { d, class: "line" }));
  const dots = s("g", { class: "dots" });
  for (const i of flagged) {
    const tip = o.pointTitle ? o.pointTitle(i) : `${when(ts[i])}: ${sig(ys[i])}`;
    dots.append(s("circle", { cx: x(ts[i]), cy: y(ys[i]), r: 4.5, class: o.dotClass || "anomaly",
      "data-ts": ts[i] }, s("title", {}, tip)));
  }
  svg.append(dots);
  return svg;
}

/**
 * Horizontal bars, largest first: items [{label, value, text, strong}], scaled to the largest |value|.
 */
export function barList(items, caption) {
  const max = Math.max(1e-12, ...items.map((it) => Math.abs(it.value)));
  const list = h("ol", { class: "bars", "aria-label": caption });
  for (const it of items) {
    const fill = h("span", { class: `fill ${it.value < 0 ? "neg" : "pos"}${it.strong ? " strong" : ""}` });
    fill.style.width = `${Math.max(1, (100 * Math.abs(it.value)) / max).toFixed(1)}%`;
    list.append(h("li", {},
      h("span", { class: "bar-label" }, it.label),
      h("span", { class: "bar-track", "aria-hidden": "true" }, fill),
      h("span", { class: "bar-value" }, it.text)));
  }
  return list;
}
