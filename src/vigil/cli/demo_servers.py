"""``vigil demo servers``: multi-metric anomaly detection on a simulated server fleet, scored against labels.

Steps: simulate a fleet (:mod:`vigil.io.generators.fleet`), train the global Isolation Forest offline on the
first day's normal windows (:func:`~vigil.apps.servers.train_global_model`), run the pipeline over the whole
stream (:func:`~vigil.apps.servers.run_server_pipeline`) and score it.

Scoring (:func:`score_servers`), with an alert's time being its window's end plus the watermark delay (the
event time at which the window closes and the alert can be raised):

* **incident-level recall** — an incident is detected when a *fired* alert of its host has a window that
  overlaps ``[incident start, incident end + grace_s]``; recall per incident type = detected / incidents.
* **alert-level precision** — a fired alert is a true positive when its window overlaps
  ``[start, end + grace_s]`` of an incident of its host; precision = true positives / fired alerts.
* **time to detect** — for detected incidents, first such alert's time minus the incident start (p50, p95).
* **false alerts per host-day** — fired alerts that are not true positives / (hosts x days), for
  single-metric alerting (k = 1: any metric flags, no persistence) and for k-of-n, on the same per-metric
  verdicts.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from vigil.apps.servers import KOfN, ServerConfig, ServerRun, run_server_pipeline, train_global_model
from vigil.cli.common import strict_json
from vigil.io.generators.fleet import INCIDENT_TYPES, FleetSpec, incident_table, simulate_fleet

_DAY_MS = 86_400_000


def _episodes(run: ServerRun, cfg: ServerConfig, k: int) -> np.ndarray:
    """Fired rows of a k-of-n vote with ``k`` over the run's per-metric flags (a fresh aggregator)."""
    w = run.windows
    agg = KOfN(
        k,
        cfg.n_voters,
        rearm_windows=cfg.rearm_windows,
        window_ms=cfg.window_ms,
        persist_windows=1 if k == 1 else cfg.persist_windows,
    )
    return agg.process(w.joined.slot, w.joined.start_ms, w.votes(cfg.model_votes))[1]


def score_servers(run: ServerRun, cols: dict[str, Any], cfg: ServerConfig, *, hosts: int, days: float,
                  grace_s: float = 120.0) -> dict[str, Any]:  # fmt: skip
    """Recall by incident type, precision, time to detect and false alerts per host-day (module docstring)."""
    inc = incident_table(cols)
    w = run.windows.joined
    delay_ms = int(cfg.max_delay_s * 1000)
    grace_ms = int(grace_s * 1000)
    out: dict[str, Any] = {}
    for name, k in (("single_metric", 1), ("k_of_n", cfg.k)):
        fire = run.windows.fire if k == cfg.k else _episodes(run, cfg, k)
        idx = np.flatnonzero(fire)
        slot, ws, we = w.slot[idx].astype(np.int64), w.start_ms[idx], w.end_ms[idx]
        tp = np.zeros(len(idx), bool)
        first = np.full(len(inc["incident_id"]), -1, np.int64)
        for i in range(len(inc["incident_id"])):
            hit = (slot == inc["host_id"][i]) & (we > inc["start_ms"][i]) & (ws <= inc["end_ms"][i] + grace_ms)
            tp |= hit
            if hit.any():
                first[i] = int((we[hit] + delay_ms).min())
        n_alerts = len(idx)
        out[name] = {
            "alerts": n_alerts,
            "precision": round(float(tp.mean()), 4) if n_alerts else None,
            "false_alerts": int((~tp).sum()),
            "false_alerts_per_host_day": round(float((~tp).sum()) / (hosts * days), 4),
            "detected": first >= 0,
            "ttd_s": (first[first >= 0] - inc["start_ms"][first >= 0]) / 1000.0,
        }
    kn = out["k_of_n"]
    recall = {}
    for t in INCIDENT_TYPES:
        m = inc["type"] == t
        recall[t] = round(float(kn["detected"][m].mean()), 4) if m.any() else None
    ttd = kn["ttd_s"]
    single_fa, kn_fa = out["single_metric"]["false_alerts_per_host_day"], kn["false_alerts_per_host_day"]
    return {
        "recall_by_type": recall,
        "recall": round(float(kn["detected"].mean()), 4) if len(kn["detected"]) else None,
        "precision": kn["precision"],
        "time_to_detect_s": {
            "p50": round(float(np.percentile(ttd, 50)), 1) if len(ttd) else None,
            "p95": round(float(np.percentile(ttd, 95)), 1) if len(ttd) else None,
        },
        "false_alerts_per_host_day": {"single_metric": single_fa, "k_of_n": kn_fa},
        "false_alert_reduction": round(single_fa / kn_fa, 1) if kn_fa > 0 else None,
        "alerts": {"single_metric": out["single_metric"]["alerts"], "k_of_n": kn["alerts"]},
        "precision_single_metric": out["single_metric"]["precision"],
        "incidents": int(len(inc["incident_id"])),
    }


def _shown(value: Any, unit: str = "") -> str:
    """A result for the summary table: ``-`` when there is none (no alert, no incident), never ``None``."""
    return "-" if value is None else f"{value}{unit}"


def _reduction(factor: float | None, fa: dict[str, float]) -> str:
    """How many times fewer false alerts k-of-n gives, in words that hold when it leaves none (or had none)."""
    if factor is not None:
        return f"{factor}x fewer"
    return "none left" if fa["single_metric"] > 0 else "none either way"


def run_servers_demo(*, hosts: int = 100, days: float = 2.0, step_s: int = 10, seed: int = 7,
                     window_s: float = 60.0, k: int = 2, model: bool = True, as_json: bool = False,
                     show_alerts: int = 5, config: ServerConfig | None = None) -> dict[str, Any]:  # fmt: skip
    """Simulate, train offline, run, score; print a summary (and the JSON result as the last line when asked)."""
    from rich.console import Console
    from rich.table import Table

    console = Console(stderr=as_json, highlight=False)
    cfg = config or ServerConfig(window_s=window_s, k=k)
    t0 = time.perf_counter()
    spec = FleetSpec(hosts=hosts, days=days, step_s=step_s, seed=seed)
    with console.status(f"simulating {hosts} hosts x {len(cfg.metrics)} metrics for {days:g} days (seed {seed})…"):
        cols = simulate_fleet(spec)
    t_sim = time.perf_counter() - t0
    console.print(f"[bold]Vigil demo[/] · server fleet · {len(cols['value']):,} samples, {hosts} hosts, "
                  f"{days:g} days at {step_s}s · simulated in {t_sim:.1f}s")  # fmt: skip
    artifact = None
    t_train = 0.0
    if model:
        t1 = time.perf_counter()
        train_until = spec.start_ms + int(min(1.0, days / 2) * _DAY_MS)
        with console.status("training the global Isolation Forest on the first day's normal windows…"):
            artifact = train_global_model(cols, cfg, until_ms=train_until, n_estimators=50, seed=seed)
        t_train = time.perf_counter() - t1
        console.print(f"global model trained offline on {artifact['train']['n_rows']:,} normal windows "
                      f"in {t_train:.1f}s")  # fmt: skip
    with console.status("running join → per-metric detectors → k-of-n…"):
        run = run_server_pipeline(cols, cfg, artifact)
    res = score_servers(run, cols, cfg, hosts=hosts, days=days)
    res.update({
        "samples": run.samples, "windows": len(run.windows), "late_samples": int(len(run.late)),
        "imputed_cells": int(run.windows.joined.imputed.sum()), "samples_per_s": round(run.samples_per_s, 1),
        "pipeline_s": round(run.elapsed_s, 2), "simulate_s": round(t_sim, 2), "train_s": round(t_train, 2),
        "config": {"window_s": cfg.window_s, "k": cfg.k, "n": cfg.n_voters, "detector": cfg.detector,
                   "threshold": cfg.threshold, "model": bool(model)},
        "seed": seed, "hosts": hosts, "days": days,
    })  # fmt: skip
    t = Table(title="Summary", show_header=False, title_justify="left")
    t.add_row("samples", f"{run.samples:,} → {len(run.windows):,} host-windows in {run.elapsed_s:.1f}s "
                         f"({run.samples_per_s:,.0f} samples/s) · late {len(run.late):,} · "
                         f"imputed cells {res['imputed_cells']:,}")  # fmt: skip
    t.add_row("incidents", f"{res['incidents']} · recall {_shown(res['recall'])}")
    t.add_row(f"precision ({cfg.k}-of-{cfg.n_voters})", f"[b]{_shown(res['precision'])}[/] "
              f"(single-metric: {_shown(res['precision_single_metric'])})")  # fmt: skip
    ttd = res["time_to_detect_s"]
    t.add_row("time to detect", f"p50 {_shown(ttd['p50'], ' s')} · p95 {_shown(ttd['p95'], ' s')}")
    fa = res["false_alerts_per_host_day"]
    t.add_row("false alerts / host-day", f"single-metric {fa['single_metric']} · {cfg.k}-of-{cfg.n_voters} "
              f"{fa['k_of_n']} ({_reduction(res['false_alert_reduction'], fa)})")  # fmt: skip
    console.print(t)
    rt = Table(title="Recall by incident type", title_justify="left")
    rt.add_column("incident")
    rt.add_column("recall", justify="right")
    for name, r in res["recall_by_type"].items():
        rt.add_row(name, "-" if r is None else f"{r:.3f}")
    console.print(rt)
    for a in run.alerts[:show_alerts]:
        console.print(f"  [red]alert[/] {a.message}")
    if as_json:
        keep = ("recall_by_type", "precision", "time_to_detect_s", "false_alerts_per_host_day")
        print(strict_json({**{k: res[k] for k in keep}, **{k: v for k, v in res.items() if k not in keep}}),
              flush=True)  # fmt: skip
    return res


if __name__ == "__main__":  # pragma: no cover - manual runs: python -m vigil.cli.demo_servers
    import sys

    run_servers_demo(as_json="--json" in sys.argv)
