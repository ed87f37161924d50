"""Ranked root causes of an incident: which service, what kind (latency, errors, saturation, deploy), why.

:func:`rank_causes` takes a :class:`~vigil.rca.frame.MetricFrame` (RED series per service and per call edge,
resource series per service), the time the incident was raised (``at_ms``: an alert's time; or None to
detect it), optionally the call graph (else the frame's edges) and change events (else the frame's), and
uses only data before ``at_ms``. The method, step by step (the README beside this file relates it to BARO,
MicroRank, RCD and Nezha):

1. **Robust change scores** (BARO). Baseline = the ``baseline_s`` before the anomaly window
   ``[at - lookback_s, at)``; every series gets a robust z per bin (median / IQR with noise floors,
   :mod:`~vigil.rca.scores`), its peak (second-largest z), its recent level and its onset.
2. **Per-service anomaly** by family: latency (p50, p90, p99 x 0.7; the mean when there are no quantiles),
   errors, saturation (CPU per request, so that more traffic is not saturation; CPU pressure; memory; GC
   time) and network.
3. **Explained by callees?** Failures propagate upstream, so a caller looks as broken as its callee.
   From the call-edge series (what the caller saw of each callee) the increase of a caller's mean latency
   is compared with the increase its calls contribute (edge latency x calls per request), and its extra
   failures with its calls' extra failures; the explained share is taken off the caller's own score.
   Without edge series, an anomalous callee explains a caller in proportion to their scores.
4. **Network**: a call edge much slower than its callee's own server view (same bins) blames the link;
   the callee is named, with the caller in the evidence.
5. **More traffic?** A latency or memory change on a service whose load rose with its callers' (a traffic
   spike, a batch job: load inherited from upstream, unlike retries) is mostly put down to load (latency
   only as far as its CPU shows queueing), and so is a CPU-per-request change when its load rose beyond the
   entry points' (another mix of requests).
   Memory that climbs steadily (Kendall's tau >= ``leak_trend`` over the last two minutes) and is not
   explained by load counts at full weight: a leak on its way to an out-of-memory kill.
6. **Still going on?** A fault persists until the alert; a warm-up after a good deploy or a passing spike
   fades. Scores are weighted by the recent level over the peak.
7. **Change events**: a deploy of a service with its own anomaly (z >= ``z_thr``, or half that if it
   lasts), within ``change_window_s`` before the window and when the anomaly began with it (onset from 1 min
   before to 2 min after the deploy), makes the kind ``deploy`` and raises its score; unless the change has
   been fading since its peak (Kendall's tau <= ``fade_tau``) towards its old level (Aitken's extrapolation
   below ``fade_settle_z``): a warm-up of a good release, weighted ``fade_weight``. An anomaly that began
   with a deploy is not put down to load that was there before (``deploy_over_load``).
8. **Random walk** (MicroRank / RCD style): personalized PageRank on the anomalous subgraph, walking
   from callers to the callees that look anomalous to them, personalized and self-looped by the own
   scores; the final score blends own score and PageRank (``ppr_weight``).

Examples:
    >>> import numpy as np
    >>> from vigil.rca.frame import MetricFrame
    >>> T = 180
    >>> ts = np.arange(T, dtype=np.int64) * 10_000
    >>> rng = np.random.default_rng(0)
    >>> lat = lambda base: base * np.exp(0.05 * rng.standard_normal(T))
    >>> db, api = lat(2.0), lat(10.0)
    >>> db[150:] += 50; api[150:] += 50  # the database slows down; the API waits for it
    >>> edge = db + 0.5
    >>> rate = np.full(T, 20.0)
    >>> vals = np.array([[rate, api], [rate, db], [rate, edge]]).reshape(3, 2, T)
    >>> f = MetricFrame(ts, ["api", "db", "api->db"], ["rate", "latency-mean"], vals)
    >>> r = rank_causes(f, at_ms=170 * 10_000)
    >>> r.top(2), r.causes[0].kind
    (['db', 'api'], 'latency')
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vigil.rca.frame import EDGE, ChangeEvent, MetricFrame, ServiceGraph
from vigil.rca.graph import personalized_pagerank
from vigil.rca.priors import RcaPriors, rerank
from vigil.rca.window import WindowScores, with_cpu_per_request

__all__ = ["Cause", "RcaParams", "RcaResult", "rank_causes"]

_LAT = ("latency-mean", "latency-p50", "latency-p90", "latency-p99")
_LAT_W = {"latency-mean": 1.0, "latency-p50": 1.0, "latency-p90": 1.0, "latency-p99": 0.7}
_QUANTILES = ("latency-p50", "latency-p90", "latency-p99")


def _lat_best(sc: WindowScores, entity: str) -> tuple[float, str]:
    """The latency family's peak: from the quantiles when the series has them, else from the mean.

    Quantiles built from spans are mix-adjusted, so a different mix of operations (a batch job's bulk calls)
    does not move them; the mean would (it is kept for the explanation step, where milliseconds add up).
    """
    i = sc.ent.get(entity)
    has_q = i is not None and any(m in sc.met and sc.present[i, sc.met[m]] for m in _QUANTILES)
    return sc.best(entity, _QUANTILES if has_q else _LAT, _LAT_W)
_SAT = ("cpu-per-request", "cpu-pressure", "mem", "gc")


@dataclass(frozen=True)
class RcaParams:
    """Knobs of :func:`rank_causes` (defaults tuned on simulator seeds disjoint from the evaluation's)."""

    lookback_s: float = 300.0
    baseline_s: float = 1200.0
    z_thr: float = 4.0
    recent: int = 6
    smooth: int = 3
    change_window_s: float = 900.0
    ppr_weight: float = 0.3
    damping: float = 0.85
    sat_weight: float = 0.6
    sat_kind_z: float = 8.0
    leak_trend: float = 0.6
    deploy_boost: float = 1.5
    fade_tau: float = -0.4
    fade_weight: float = 0.3
    fade_settle_z: float = 8.0
    deploy_over_load: bool = True


@dataclass
class Cause:
    """A candidate root cause: ``service``, ``kind`` (latency, errors, saturation, deploy), ``score`` (0..1)."""

    service: str
    kind: str
    score: float
    evidence: dict[str, Any] = field(default_factory=dict)


@dataclass
class RcaResult:
    """Causes best first, and the windows used."""

    causes: list[Cause]
    at_ms: int
    window_ms: tuple[int, int]
    baseline_ms: tuple[int, int]

    def top(self, k: int = 3) -> list[str]:
        """The ``k`` best-ranked services."""
        return [c.service for c in self.causes[:k]]

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON-ready)."""
        return {"at_ms": self.at_ms, "window_ms": list(self.window_ms), "baseline_ms": list(self.baseline_ms),
                "causes": [{"rank": i + 1, "service": c.service, "kind": c.kind, "score": round(c.score, 4),
                            "evidence": c.evidence} for i, c in enumerate(self.causes)]}  # fmt: skip


def _explained(sc: WindowScores, s: str, callees: list[str], has_edges: bool, own: dict[str, float], lat: float,
               err: float, thr: float) -> tuple[float, float]:  # fmt: skip
    """Shares of ``s``'s latency and error increase that its calls account for (step 3)."""
    if not callees:
        return 0.0, 0.0
    if has_edges:
        lat_m = "latency-mean" if "latency-mean" in sc.met else "latency-p50"
        d_lat = sc.get(sc.delta, s, lat_m)
        rate_s = sc.rate[sc.ent[s]] if s in sc.ent else 0.0
        d_err = sc.get(sc.delta, s, "errors") * rate_s
        c_lat = c_err = 0.0
        for c in callees:
            e = f"{s}{EDGE}{c}"
            if e not in sc.ent:
                continue
            rate_e = sc.rate[sc.ent[e]]
            calls = rate_e / rate_s if rate_s > 0 else 1.0
            c_lat += max(sc.get(sc.delta, e, lat_m), 0.0) * calls
            c_err += max(sc.get(sc.delta, e, "errors"), 0.0) * rate_e
        x_lat = min(1.0, c_lat / d_lat) if d_lat > 0 else 0.0
        x_err = min(1.0, c_err / d_err) if d_err > 0 else 0.0
        return x_lat, x_err
    # no edge series: an anomalous callee explains in proportion to its own anomaly
    worst = max((own.get(c, 0.0) for c in callees), default=0.0)
    x = min(1.0, worst / max(lat, err, 1e-9)) if worst >= thr else 0.0
    return x, x


def _ratio(sc: WindowScores, e: str) -> float:
    """Recent request rate over the baseline median (1 when unknown; 10 for a service idle until now)."""
    if e not in sc.ent:
        return 1.0
    base = sc.rate[sc.ent[e]]
    if base > 0.05:
        return 1.0 + sc.get(sc.delta, e, "rate") / base
    return 10.0 if sc.recent_rate[sc.ent[e]] > 0.05 else 1.0


def _load_explained(sc: WindowScores, s: str, callers: list[str], entry_ratio: float) -> tuple[float, float]:
    """How much of ``s``'s change more traffic from upstream explains: (load share, request-mix share).

    The load must be inherited: ``s``'s request rate is up *and* so is its busiest caller's (or ``s`` is an
    entry point); retries against a failing service raise only that service's rate, not its callers'. The
    mix share counts only the part of that rise beyond the entry points' (a spike raises all alike, a batch
    job only its own path, with requests that cost more).
    """
    r = _ratio(sc, s)
    if callers:
        r = min(r, max(_ratio(sc, c) for c in callers))
    load = min(1.0, max(0.0, (r - 1.15) / 0.5))
    mix = min(1.0, max(0.0, (r - entry_ratio - 0.15) / 0.5))
    return load, mix


def rank_causes(frame: MetricFrame, at_ms: int | None = None, *, graph: ServiceGraph | None = None,
                changes: Sequence[ChangeEvent] | None = None,
                params: RcaParams | None = None, priors: RcaPriors | None = None) -> RcaResult:  # fmt: skip
    """Rank the services of ``frame`` as root causes of the incident raised at ``at_ms`` (module docstring).

    ``priors`` (learned from post-mortems, :mod:`vigil.rca.priors`) add a small bonus per (service, kind) to the
    0..1 scores, so they reorder near-ties only; ``None``: the evidence alone.
    """
    p = params or RcaParams()
    if at_ms is None:
        from vigil.rca.detect import detect_incident

        found = detect_incident(frame, int(frame.ts_ms[0]) + int(p.baseline_s * 1000))
        if found is None:
            raise ValueError("no incident found in the data; give its time (at_ms)")
        at_ms = found
    a0 = at_ms - int(p.lookback_s * 1000)
    frame = with_cpu_per_request(frame, (frame.ts_ms >= a0 - int(p.baseline_s * 1000)) & (frame.ts_ms < a0))
    sc = WindowScores(frame, at_ms, lookback_s=p.lookback_s, baseline_s=p.baseline_s, z_thr=p.z_thr,
                      recent=p.recent, smooth=p.smooth)
    g = graph if graph is not None and graph.edges else frame.graph()
    has_edges = bool(frame.edge_pairs)
    services = sorted(set(frame.services) | set(g.nodes))
    changes = list(frame.changes if changes is None else changes)
    thr = p.z_thr

    entries = [s for s in services if not g.callers(s) and s in sc.ent and sc.rate[sc.ent[s]] > 0]
    entry_ratio = max((_ratio(sc, s) for s in entries), default=1.0)
    fam: dict[str, dict[str, Any]] = {}
    for s in services:
        lat, lat_m = _lat_best(sc, s)
        err = max(sc.get(sc.peak, s, "errors"), 0.0)
        sat, sat_m = sc.best(s, _SAT)
        fam[s] = {"lat": lat, "lat_m": lat_m, "err": err, "sat": sat, "sat_m": sat_m}
    total = {s: max(f["lat"], f["err"], f["sat"]) for s, f in fam.items()}

    # network: an edge much slower than its callee's own server view
    net: dict[str, tuple[float, str]] = {}
    lat_m = "latency-mean" if "latency-mean" in sc.met else "latency-p50"
    for a, b in frame.edge_pairs:
        if b in frame.virtual or b not in sc.ent:
            continue
        e = f"{a}{EDGE}{b}"
        d_edge = sc.get(sc.delta, e, lat_m)
        if d_edge <= 0:
            continue
        frac = min(1.0, max(0.0, d_edge - max(sc.get(sc.delta, b, lat_m), 0.0)) / d_edge)
        z_edge, _ = _lat_best(sc, e)
        if z_edge * frac > net.get(b, (0.0, ""))[0]:
            net[b] = (z_edge * frac, a)

    own: dict[str, float] = {}
    info: dict[str, dict[str, Any]] = {}
    for s in services:
        f = fam[s]
        x_lat, x_err = _explained(sc, s, g.callees(s), has_edges, total, f["lat"], f["err"], thr)
        x_load, x_mix = _load_explained(sc, s, g.callers(s), entry_ratio)
        # more load slows a service only through its CPU: without CPU data, trust the load; with it, only
        # as far as the CPU shows queueing
        busy = max(sc.get(sc.peak, s, "cpu-pressure", np.nan), sc.get(sc.peak, s, "cpu-per-request", np.nan))
        x_load_lat = x_load if np.isnan(busy) else x_load * min(1.0, max(0.0, busy / thr))
        o_lat, o_err = f["lat"] * (1 - x_lat) * (1 - 0.7 * x_load_lat), f["err"] * (1 - x_err)
        # more requests need more memory and CPU; a different mix of them (a batch job's) more CPU each;
        # a service idle until now (a job that just started) is all new load
        new = _ratio(sc, s) >= 10.0
        f["sat"], f["sat_m"] = max((sc.get(sc.peak, s, "cpu-per-request") * (1 - 0.7 * x_mix) * (not new),
                                    "cpu-per-request"),
                                   (sc.get(sc.peak, s, "cpu-pressure") * (1 - 0.7 * x_load) * (not new),
                                    "cpu-pressure"),
                                   (sc.get(sc.peak, s, "mem") * (1 - 0.4 * x_load), "mem"),
                                   (sc.get(sc.peak, s, "gc"), "gc"))  # fmt: skip
        o_net, net_from = net.get(s, (0.0, ""))
        perf = max(o_lat, o_err, o_net)
        which = ("lat", f["lat_m"]) if perf == o_lat else ("err", "errors") if perf == o_err else ("net", "")
        # is it still going on? judged on the series that carry the score (a symptom or an exhausted resource)
        if which[0] == "net":
            entity = f"{net_from}{EDGE}{s}"
            carriers = [(entity, _lat_best(sc, entity)[1])]
        else:
            carriers = [(s, which[1])]
        if f["sat"] >= thr or p.sat_weight * f["sat"] > perf:
            carriers.append((s, f["sat_m"]))
        persist = 0.0
        for entity, metric in carriers:
            pk, lv = sc.get(sc.peak, entity, metric), sc.get(sc.level, entity, metric)
            persist = max(persist, min(1.0, max(0.0, lv / pk)) if pk > 0 else 0.0)
        # memory climbing steadily, beyond what load explains, is a leak on its way to an OOM: full weight
        leak = f["sat_m"] == "mem" and f["sat"] >= thr and sc.get(sc.trend, s, "mem") >= p.leak_trend
        w_sat = 1.0 if leak else p.sat_weight
        score = (max(perf, w_sat * f["sat"]) + 0.25 * min(f["sat"], perf)) * (0.2 + 0.8 * persist)
        on = [int(sc.onset[sc.ent[s], sc.met[m]]) for m in (f["lat_m"], "errors", f["sat_m"])
              if s in sc.ent and m in sc.met and sc.onset[sc.ent[s], sc.met[m]] >= 0]  # fmt: skip
        onset_ms = int(sc.ts_win[min(on)]) if on else None
        # a deploy explains the anomaly when the anomaly began with it (within the change window)
        deploy = [c for c in changes if c.service == s and c.kind == "deploy"
                  and sc.a0 - p.change_window_s * 1000 <= c.ts_ms < at_ms
                  and (onset_ms is None or c.ts_ms - 60_000 <= onset_ms <= c.ts_ms + 120_000)]  # fmt: skip
        most_fail = f["err"] >= thr and sc.get(sc.delta, s, "errors") >= 0.5  # most requests fail: an outage
        kind = "errors" if which[0] == "err" or most_fail else "latency"
        if (f["sat"] >= p.sat_kind_z or leak) and not (kind == "errors" and f["err"] >= f["lat"]):
            kind = "saturation"  # a resource clearly ran out on the service itself: that is how it is failing
        if deploy and p.deploy_over_load:
            # the anomaly began with a deploy, not with the load that was there before it: no load discount
            perf_nl = max(f["lat"] * (1 - x_lat), o_err, o_net)
            if perf_nl > perf:
                perf = perf_nl
                score = (max(perf, w_sat * f["sat"]) + 0.25 * min(f["sat"], perf)) * (0.2 + 0.8 * persist)
        fading, settle = 0.0, np.inf
        if deploy and (perf >= thr or (perf >= thr / 2 and persist >= 0.5)):  # weaker, lasting evidence + a change
            kind = "deploy"
            # a change that fades since the deploy is a warm-up (a good release settling), not a bad release
            fading, settle = sc.trend_since(*carriers[0], deploy[-1].ts_ms)
            if fading <= p.fade_tau and settle < p.fade_settle_z:
                score *= p.fade_weight
            else:
                score *= p.deploy_boost
        own[s] = score
        info[s] = {"z": {k: round(v, 1) for k, v in (("latency", f["lat"]), ("errors", f["err"]),
                                                       ("saturation", f["sat"])) if v > 0},
                   "explained_by_callees": {"latency": round(x_lat, 2), "errors": round(x_err, 2)},
                   "explained_by_load": round(x_load_lat, 2), "request_mix_change": round(x_mix, 2),
                   "persistence": round(persist, 2), "kind": kind, "memory_climbing": bool(leak),
                   "onset_ms": onset_ms}  # fmt: skip
        if f["lat_m"]:
            info[s]["latency_metric"] = f["lat_m"]
        if f["sat"] > 0 and f["sat_m"]:
            info[s]["saturation_metric"] = f["sat_m"]
        if o_net > 0 and which[0] == "net":
            info[s]["network_from"] = net_from
        if deploy:
            info[s]["deploy"] = {"ts_ms": deploy[-1].ts_ms, "detail": deploy[-1].detail,
                                 "trend_since": round(fading, 2),
                                 "settles_at_z": round(settle, 1) if np.isfinite(settle) else None,
                                 "fading": bool(fading <= p.fade_tau and settle < p.fade_settle_z)}  # fmt: skip

    final, walk = _blend(own, total, g, sc, p)
    order = sorted(services, key=lambda s: (-final[s], s))
    causes = []
    for s in order:
        ev = dict(info[s])
        ev["own_score"] = round(own[s], 2)
        ev["pagerank"] = round(walk.get(s, 0.0), 2)
        causes.append(Cause(s, str(ev.pop("kind")), float(final[s]), ev))
    if priors is not None:
        causes = rerank(causes, priors)
    return RcaResult(causes, at_ms, (sc.a0, at_ms), (sc.b0, sc.a0))


def _blend(own: dict[str, float], total: dict[str, float], g: ServiceGraph, sc: WindowScores,
           p: RcaParams) -> tuple[dict[str, float], dict[str, float]]:  # fmt: skip
    """Own scores blended with personalized PageRank on the anomalous subgraph (step 8), scaled to 0..1.

    Returns the blend and the walk's own share (0..1, per service of the anomalous subgraph).
    """
    top_own = max(own.values(), default=0.0) or 1.0
    final = {s: (1 - p.ppr_weight) * v / top_own for s, v in own.items()}
    nodes = [s for s in own if total[s] >= p.z_thr or own[s] >= p.z_thr]
    if len(nodes) < 2 or p.ppr_weight <= 0:
        return final, {}
    idx = {s: i for i, s in enumerate(nodes)}
    W = np.zeros((len(nodes), len(nodes)))
    for a, b in g.edges:
        if a in idx and b in idx:
            e = f"{a}{EDGE}{b}"
            z_edge = max(_lat_best(sc, e)[0], sc.get(sc.peak, e, "errors")) if e in sc.ent else total[b]
            W[idx[a], idx[b]] = max(z_edge, 0.0)
    o = np.array([own[s] for s in nodes])
    pr = personalized_pagerank(W, self_weight=o, personal=o, damping=p.damping)
    pr = pr / pr.max() if pr.max() > 0 else pr
    for s, v in zip(nodes, pr.tolist(), strict=True):
        final[s] += p.ppr_weight * v
    return final, dict(zip(nodes, pr.tolist(), strict=True))

