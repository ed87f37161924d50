"""How well does the RCA name the root cause? Inject each fault type over many seeds and shop sizes, and count.

One incident = one simulator run (``minutes`` long, one fault of the given type after ``warmup_min``, the
legitimate oddities on: a traffic spike, a scheduled batch and a slow warm-up after a good deploy, each
anywhere in the last ``minutes - warmup_min`` minutes, so often overlapping the fault), at a start hour
drawn per seed (so traffic differs). Then:

1. the spans and metrics become RED and resource series (10 s bins, :func:`vigil.rca.series.red_frame`),
   with the deploy and restart events an operator would see (time, service, new version; never the cause);
2. the RCA runs at a time ``at`` on the data **before** ``at`` only, under two protocols:

   * ``inject`` — ``at`` = injection + ``inject_delay_s`` (3 min): the protocol of RCAEval and BARO, where
     the injection time is known, except that only three minutes of post-injection data are used;
   * ``alert`` — ``at`` = one minute (``rca_delay_s``) after the first alert of a plain detector
     (:func:`vigil.rca.detect.detect_incident`: sustained latency or error change on any service) at or
     after the injection; no alert before the fault ends counts as undetected (the RCA then runs 2 minutes
     in). The harness only tells the detector where to start looking: the first alert may come from a
     legitimate oddity rather than the fault, as it would on call, and then the RCA sees too little of it;
3. hit@1 / hit@3: the fault's root service first / in the first three; kind: the kind the RCA gives that
   service equals the fault's (latency, errors, saturation, deploy).

Nothing of the ground truth reaches :func:`vigil.rca.rank.rank_causes`. Tuning used seeds from 1000 on;
report on seeds below that. Latency is the wall time of ``rank_causes`` (and of series + ranking), and the CPU time of
``rank_causes`` (the fair figure on a shared machine), which the harness measures around the call: the RCA
itself reads no clock.

Run: ``python -m vigil.apps.services.rca_eval --seeds 25 --services 20,30,40 --json out.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from vigil.apps.services.sim import FAULT_TYPES, ServiceSimSpec, ServiceSimulator
from vigil.apps.services.sim.emit import MemorySink
from vigil.rca.baro import rank_baro
from vigil.rca.detect import detect_incident
from vigil.rca.frame import ChangeEvent, MetricFrame
from vigil.rca.rank import RcaParams, rank_causes
from vigil.rca.series import add_resource_metrics, red_frame

__all__ = ["Incident", "evaluate", "run_incident", "summarize"]

_DAY0 = 1_772_409_600_000  # 2026-03-02 00:00 UTC


@dataclass
class Incident:
    """One evaluated incident."""

    fault: str
    seed: int
    services: int
    root: str
    kind: str
    ranked: list[str]
    ranked_kinds: list[str]
    detected: bool
    rank_ms: float
    total_ms: float
    spans: int
    protocol: str = "inject"
    rank_cpu_ms: float = 0.0
    series_cpu_ms: float = 0.0

    @property
    def hit1(self) -> bool:
        """The root is ranked first."""
        return bool(self.ranked) and self.ranked[0] == self.root

    @property
    def hit3(self) -> bool:
        """The root is among the first three."""
        return self.root in self.ranked[:3]

    @property
    def kind_ok(self) -> bool:
        """The kind given to the root service is the fault's kind."""
        return self.root in self.ranked and self.ranked_kinds[self.ranked.index(self.root)] == self.kind


def simulate(fault: str, seed: int, services: int, *, minutes: float = 35.0, warmup_min: float = 20.0,
             rate: float = 50.0) -> tuple[ServiceSimulator, dict[str, np.ndarray], dict[str, np.ndarray]]:  # fmt: skip
    """Run one incident's scenario; returns the simulator (for its plan) and the spans and metrics."""
    hour = int(np.random.default_rng([seed, 0x40]).integers(9, 22))
    spec = ServiceSimSpec(services=services, minutes=minutes, seed=seed, peak_rate=rate, faults=(fault,),
                          warmup_min=warmup_min, start_ms=_DAY0 + hour * 3_600_000)  # fmt: skip
    sim = ServiceSimulator(spec)
    mem = MemorySink()
    for w in sim.run():
        mem.write(w)
    return sim, mem.spans(), mem.metrics()


def frame_of(sim: ServiceSimulator, spans: dict[str, np.ndarray], metrics: dict[str, np.ndarray],
             until_ms: int, step_ms: int = 10_000) -> MetricFrame:  # fmt: skip
    """RED + resource series of the data before ``until_ms``, with the observable deploy/restart events."""
    names = sim.names
    keep = spans["ts_ms"] < until_ms
    sp = {k: v[keep] for k, v in spans.items()}
    t0 = sim.spec.start_ms
    frame = red_frame(sp, names["service"], t0_ms=t0, t1_ms=until_ms, step_ms=step_ms)
    mk = metrics["ts_ms"] <= until_ms
    frame = add_resource_metrics(frame, {k: v[mk] for k, v in metrics.items()}, names["service"], names["metric"])
    frame.changes = [ChangeEvent(int(c["ts_ms"]), str(c["service"]), str(c["type"]), str(c.get("version", "")))
                     for c in sim.world.changes if c["ts_ms"] < until_ms]  # fmt: skip
    return frame


def run_incident(fault: str, seed: int, services: int, *, params: RcaParams | None = None,
                 inject_delay_s: float = 180.0, rca_delay_s: float = 60.0,
                 **sim_kw: Any) -> list[Incident]:  # fmt: skip
    """Simulate one incident and rank it under both protocols (module docstring): ``inject`` and ``alert``."""
    return run_variants(fault, seed, services, {"": params or RcaParams()}, inject_delay_s=inject_delay_s,
                        rca_delay_s=rca_delay_s, **sim_kw)[""]


def run_variants(fault: str, seed: int, services: int, variants: dict[str, RcaParams | str], *,
                 inject_delay_s: float = 180.0, rca_delay_s: float = 60.0,
                 **sim_kw: Any) -> dict[str, list[Incident]]:  # fmt: skip
    """One simulated incident ranked with each of several parameter sets (for ablations).

    A variant given as the string ``"baro"`` runs the BARO baseline (:func:`vigil.rca.baro.rank_baro`).
    """
    sim, spans, metrics = simulate(fault, seed, services, **sim_kw)
    f = sim.plan.faults[0]
    full = frame_of(sim, spans, metrics, sim.end_ms)
    alert = detect_incident(full, f.start_ms, until_ms=f.end_ms)
    times = {"inject": min(f.start_ms + int(inject_delay_s * 1000), f.end_ms),
             "alert": min((alert if alert is not None else f.start_ms + 60_000) + int(rca_delay_s * 1000), f.end_ms)}
    out: dict[str, list[Incident]] = {name: [] for name in variants}
    for protocol, at in times.items():
        t0, c0 = time.perf_counter(), time.process_time()
        frame = frame_of(sim, spans, metrics, at)
        t1, c_series = time.perf_counter(), time.process_time() - c0
        for name, params in variants.items():
            t1 = time.perf_counter() if name != next(iter(variants)) else t1
            c1 = time.process_time()
            res = rank_baro(frame, at) if params == "baro" else rank_causes(frame, at, params=params)  # type: ignore[arg-type]
            t2, c2 = time.perf_counter(), time.process_time()
            total = (t2 - t0) * 1000 if name == next(iter(variants)) else (t2 - t1) * 1000
            out[name].append(Incident(fault, seed, services, f.service, f.kind, res.top(len(res.causes)),
                                      [c.kind for c in res.causes], alert is not None, (t2 - t1) * 1000, total,
                                      len(spans["span_id"]), protocol, (c2 - c1) * 1000,
                                      c_series * 1000))  # fmt: skip
    return out


def evaluate(seeds: Sequence[int], sizes: Sequence[int], faults: Sequence[str] = FAULT_TYPES, *,
             params: RcaParams | None = None, progress: bool = True, **kw: Any) -> list[Incident]:  # fmt: skip
    """Every fault type x seed (shop size cycling through ``sizes``)."""
    out = []
    for i, seed in enumerate(seeds):
        n = sizes[i % len(sizes)]
        for fault in faults:
            pair = run_incident(fault, seed, n, params=params, **kw)
            out += pair
            if progress:
                marks = "".join("1" if inc.hit1 else "3" if inc.hit3 else "x" for inc in pair)
                inc = pair[0]
                got = inc.ranked_kinds[inc.ranked.index(inc.root)] if inc.root in inc.ranked else "-"
                print(f"[{marks}] {fault:18s} seed={seed:<5d} n={n} root={inc.root:18s} got={inc.ranked[:3]} "
                      f"kind={got}/{inc.kind} rank={inc.rank_ms:.0f}ms", file=sys.stderr, flush=True)  # fmt: skip
    return out


def summarize(incidents: Sequence[Incident]) -> dict[str, Any]:
    """Per protocol: top-1, top-3, kind accuracy (and detection) per fault type; latency percentiles."""
    out: dict[str, Any] = {}
    for protocol in sorted({i.protocol for i in incidents}):
        mine = [i for i in incidents if i.protocol == protocol]
        by: dict[str, list[Incident]] = defaultdict(list)
        for inc in mine:
            by[inc.fault].append(inc)
        rows = {f: {"n": len(v), "top1": float(np.mean([i.hit1 for i in v])),
                    "top3": float(np.mean([i.hit3 for i in v])), "kind": float(np.mean([i.kind_ok for i in v])),
                    "detected": float(np.mean([i.detected for i in v]))} for f, v in by.items()}  # fmt: skip
        out[protocol] = {"per_fault": rows, "overall": {"n": len(mine), "top1": float(np.mean([i.hit1 for i in mine])),
                                                        "top3": float(np.mean([i.hit3 for i in mine])),
                                                        "kind": float(np.mean([i.kind_ok for i in mine]))}}  # fmt: skip
    rank_ms = np.array([i.rank_ms for i in incidents])
    total_ms = np.array([i.total_ms for i in incidents])
    big = [i.rank_ms for i in incidents if i.services >= 40]
    out["latency_ms"] = {"rank_p50": float(np.percentile(rank_ms, 50)), "rank_p95": float(np.percentile(rank_ms, 95)),
                         "rank_p95_40_services": float(np.percentile(big, 95)) if big else None,
                         "series_and_rank_p95": float(np.percentile(total_ms, 95))}  # fmt: skip
    out["spans_per_incident"] = float(np.mean([i.spans for i in incidents]))
    return out


def _table(summary: dict[str, Any]) -> str:
    lines = []
    for protocol in ("inject", "alert"):
        if protocol not in summary:
            continue
        lines.append(f"protocol `{protocol}`")
        lines.append(f"{'fault':20s} {'n':>4s} {'top-1':>6s} {'top-3':>6s} {'kind':>6s} {'detected':>9s}")
        for f, r in summary[protocol]["per_fault"].items():
            lines.append(f"{f:20s} {r['n']:4d} {r['top1']:6.2f} {r['top3']:6.2f} {r['kind']:6.2f} {r['detected']:9.2f}")
        o = summary[protocol]["overall"]
        lines.append(f"{'all':20s} {o['n']:4d} {o['top1']:6.2f} {o['top3']:6.2f} {o['kind']:6.2f}")
    lat = summary["latency_ms"]
    lines.append(f"rank latency p50 {lat['rank_p50']:.0f} ms, p95 {lat['rank_p95']:.0f} ms (40 services: "
                 f"{lat['rank_p95_40_services'] or 0:.0f} ms); series + rank p95 {lat['series_and_rank_p95']:.0f} ms")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m vigil.apps.services.rca_eval``: the table, and optionally JSON."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=10, help="seeds per fault type")
    ap.add_argument("--first-seed", type=int, default=1)
    ap.add_argument("--services", default="20,30,40", help="shop sizes, cycled over seeds")
    ap.add_argument("--faults", default=",".join(FAULT_TYPES))
    ap.add_argument("--rate", type=float, default=50.0, help="frontend requests/s at the daily peak")
    ap.add_argument("--json", default=None, help="write the summary and every incident here")
    ap.add_argument("--ablations", action="store_true",
                    help="also rank each incident without PageRank, with PageRank only, and with BARO's step alone")
    args = ap.parse_args(argv)
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    sizes = [int(x) for x in args.services.split(",")]
    if not args.ablations:
        incs = evaluate(seeds, sizes, args.faults.split(","), rate=args.rate)
        summary = summarize(incs)
        print(_table(summary))
        extra: dict[str, Any] = {}
    else:
        from dataclasses import replace

        base = RcaParams()
        variants: dict[str, RcaParams | str] = {"default": base, "no_pagerank": replace(base, ppr_weight=0.0),
                                                "pagerank_only": replace(base, ppr_weight=1.0), "baro": "baro"}
        by: dict[str, list[Incident]] = {k: [] for k in variants}
        for i, seed in enumerate(seeds):
            for fault in args.faults.split(","):
                for k, v in run_variants(fault, seed, sizes[i % len(sizes)], variants, rate=args.rate).items():
                    by[k] += v
                print(f"{fault} seed={seed}: " + " ".join(f"{k}={''.join(str(int(x.hit1)) for x in by[k][-2:])}"
                                                          for k in variants), file=sys.stderr, flush=True)  # fmt: skip
        incs = by["default"]
        summary = summarize(incs)
        print(_table(summary))
        extra = {k: summarize(v) for k, v in by.items() if k != "default"}
        for k, sm in extra.items():
            o = {p: sm[p]["overall"] for p in ("inject", "alert")}
            print(f"{k:14s} " + "  ".join(f"{p}: top-1 {o[p]['top1']:.2f} top-3 {o[p]['top3']:.2f}" for p in o))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"summary": summary, "ablations": extra,
                       "incidents": [vars(i) | {"hit1": i.hit1, "hit3": i.hit3} for i in incs]}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
