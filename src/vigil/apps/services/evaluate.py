"""``vigil demo services``: the simulated shop → the services detector → scored against the ground truth.

Per seed, one simulator run (``services`` services, every fault type once after ``warmup_min`` minutes, one at a
time, plus the legitimate oddities: traffic spikes, scheduled batches, slow warm-ups after good deploys, which
must *not* alert) is fed window by window, in process, through :class:`~.detector.ServicesDetector` (span
columns of the otlp contract, the window's end as the watermark).

Scoring, per ablation level (L1, L1+L2, L1+L2+L3), from the alert episodes (:mod:`.detector`):

* a fault's **affected set**: its root service and every service that calls it, directly or not (they see its
  latency and errors); for a network delay, the calling service, its callers and the callee. An alert on a
  service, or on an edge touching one, of the affected set, from the fault's start to ``grace_s`` after its
  end, is a *true* alert and detects the fault; ``delay_s`` = its bin's end − the fault's start (event time);
* every other alert is a **false alert** (those on the legitimate oddities included): ``false_alerts_per_service_day``
  = false alerts / (services × days after the warm-up); ``precision`` = true alerts / all alerts;
* ``recall_by_fault``: detected / injected per fault type; ``root_recall``: the same, counting only alerts on the
  root service itself (or the delayed edge): how often the alert already names the culprit.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any

import numpy as np

from vigil.apps.services.detector import ABLATIONS, Alert, ServicesDetector
from vigil.apps.services.orchestrator import ServicesConfig
from vigil.apps.services.red import EDGE, spans_of_window
from vigil.apps.services.sim import FAULT_TYPES, ServiceSimSpec, ServiceSimulator

__all__ = ["affected_sets", "demo_config", "run_seed", "score", "sim_spec", "summarize"]

_DAY0 = 1_772_409_600_000  # 2026-03-02 00:00 UTC


def demo_config(gnn_model: str | None = None) -> ServicesConfig:
    """The shop's declared tiers: the checkout path critical, the rest standard (see ``pipelines/services.yaml``)."""
    cfg = ServicesConfig(gnn_model=gnn_model)
    for s in ("frontend", "checkout", "payment", "cart"):
        cfg.services[s] = {"tier": "critical"}
    cfg.services["frontend"]["sla_p99_ms"] = 5000.0
    cfg.services["batch-scheduler"] = {"tier": "best_effort"}  # cron jobs: their load comes and goes by design
    return cfg


def sim_spec(seed: int, services: int = 30, warmup_min: float = 20.0, per_fault_min: float = 15.0,
             faults: tuple[str, ...] = FAULT_TYPES) -> ServiceSimSpec:  # fmt: skip
    """The simulator run of one seed: a random start hour, every fault after ``warmup_min``."""
    hour = int(np.random.default_rng([seed, 0x40]).integers(8, 20))
    minutes = warmup_min + per_fault_min * max(1, len(faults))
    return ServiceSimSpec(services=services, minutes=minutes, seed=seed, faults=faults, warmup_min=warmup_min,
                          start_ms=_DAY0 + hour * 3_600_000)  # fmt: skip


def run_seed(
    spec: ServiceSimSpec, cfg: ServicesConfig, *, keep_features: bool = False,
    on_bins: Callable[[list[Any]], None] | None = None,
) -> tuple[ServiceSimulator, list[Alert], Any]:  # fmt: skip
    """Simulate and detect; returns the simulator (its ground truth), the alerts and the detector."""
    sim = ServiceSimulator(spec)
    det = ServicesDetector(cfg, keep_features=keep_features)
    alerts: list[Alert] = []
    for w in sim.run():
        det.add(spans_of_window(w, sim.names))
        bins = det.advance(w.t1_ms)
        for bv in bins:
            alerts += bv.alerts
        if on_bins is not None:
            on_bins(bins)
    return sim, alerts, det


def affected_sets(gt: dict[str, Any]) -> list[tuple[set[str], set[str]]]:
    """Per fault: (affected services, root services) — see the module docstring."""
    callers: dict[str, set[str]] = defaultdict(set)
    for a, b in gt["edges"]:
        callers[b].add(a)

    def up(s: str) -> set[str]:
        seen, todo = {s}, [s]
        while todo:
            for c in callers[todo.pop()]:
                if c not in seen:
                    seen.add(c)
                    todo.append(c)
        return seen

    out = []
    for f in gt["faults"]:
        if f["type"] == "network_delay" and f["edge"]:
            c, e = f["edge"]
            out.append((up(c) | {e}, {c, e}))
        else:
            out.append((up(f["service"]), {f["service"]}))
    return out


def _touches(entity: str, names: set[str]) -> bool:
    return bool(set(entity.split(EDGE, 1)) & names)


def score(
    gt: dict[str, Any], alerts: list[Alert], *, grace_s: float = 120.0, ready_ms: int | None = None
) -> dict[str, Any]:
    """Per ablation level: per fault (type, detected, delay, root detected) and the false alerts."""
    sets = affected_sets(gt)
    faults = gt["faults"]
    out: dict[str, Any] = {}
    for level in ABLATIONS:
        al = [a for a in alerts if a.level == level and (ready_ms is None or a.ts_ms >= ready_ms)]
        true = np.zeros(len(al), bool)
        per = []
        for f, (aff, roots) in zip(faults, sets, strict=True):
            end = (f["cleared_ms"] or f["end_ms"]) + grace_s * 1000
            hits = [i for i, a in enumerate(al) if f["start_ms"] <= a.ts_ms <= end and _touches(a.entity, aff)]
            root_hits = [i for i in hits if _touches(al[i].entity, roots)]
            true[hits] = True
            first = min((al[i].ts_ms for i in hits), default=None)
            per.append({"type": f["type"], "service": f["service"], "detected": first is not None,
                        "delay_s": None if first is None else (first - f["start_ms"]) / 1000.0,
                        "root_detected": bool(root_hits),
                        "layers": sorted({al[i].layer for i in hits})})  # fmt: skip
        false = [a for a, t in zip(al, true, strict=True) if not t]
        out[level] = {"faults": per, "alerts": len(al), "true_alerts": int(true.sum()), "false_alerts": len(false),
                      "false_examples": [(a.entity, a.layer, a.ts_ms) for a in false[:20]]}  # fmt: skip
    return out


def summarize(runs: list[dict[str, Any]], service_days: float) -> dict[str, Any]:
    """The demo's figures over every seed (JSON keys of issue 14), the full strategy at the top level."""
    res: dict[str, Any] = {}
    for level in ABLATIONS:
        faults = [f for r in runs for f in r[level]["faults"]]
        alerts = sum(r[level]["alerts"] for r in runs)
        true = sum(r[level]["true_alerts"] for r in runs)
        false = sum(r[level]["false_alerts"] for r in runs)
        by = defaultdict(list)
        for f in faults:
            by[f["type"]].append(f)
        delays = [f["delay_s"] for f in faults if f["detected"]]
        res[level] = {
            "recall_by_fault": {t: round(float(np.mean([f["detected"] for f in fs])), 3) for t, fs in by.items()},
            "root_recall_by_fault": {t: round(float(np.mean([f["root_detected"] for f in fs])), 3)
                                     for t, fs in by.items()},
            "recall": round(float(np.mean([f["detected"] for f in faults])), 3) if faults else None,
            "precision": round(true / alerts, 3) if alerts else None,
            "delay_s": {"p50": round(float(np.percentile(delays, 50)), 1) if delays else None,
                        "p95": round(float(np.percentile(delays, 95)), 1) if delays else None},
            "false_alerts_per_service_day": round(false / service_days, 3),
            "alerts": alerts, "false_alerts": false, "faults": len(faults),
        }  # fmt: skip
    top = dict(res["L1+L2+L3"])
    top["ablation"] = {k: {kk: v[kk] for kk in ("recall", "recall_by_fault", "precision", "delay_s",
                                                 "false_alerts_per_service_day", "alerts", "false_alerts")}
                       for k, v in res.items()}  # fmt: skip
    return top
