"""Benchmark: the services simulator's generation speed, per output path (not a test).

Simulates ``--minutes`` of a ``--services`` shop at ``--rate`` frontend requests/s (peak) with every fault
type and the legitimate oddities, and reports spans/s of: the columnar path (spans as numpy columns), the
OTLP protobuf encoder (``ExportTraceServiceRequest`` bytes, 8192 spans each), OTLP/JSON, and the RCA series
built from the spans. Wall time and process CPU time are both printed (the CPU time is what a shared
machine does not distort).

    .venv/bin/python bench/bench_services_sim.py [--minutes 60] [--services 30] [--rate 50] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from vigil.apps.services.sim import ServiceSimSpec, ServiceSimulator
from vigil.apps.services.sim.emit import MemorySink
from vigil.apps.services.sim.otlp import trace_requests, traces_json
from vigil.rca.series import red_frame


def _timed(fn):  # type: ignore[no-untyped-def]
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w0, time.process_time() - c0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=60.0)
    p.add_argument("--services", type=int, default=30)
    p.add_argument("--rate", type=float, default=50.0)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--json-spans", type=int, default=500_000, help="spans to encode as OTLP/JSON (it is slower)")
    p.add_argument("--json", default=None)
    a = p.parse_args()

    sim = ServiceSimulator(ServiceSimSpec(services=a.services, minutes=a.minutes, seed=a.seed, peak_rate=a.rate))
    mem = MemorySink()

    def simulate() -> None:
        for w in sim.run():
            mem.write(w)

    _, wall, cpu = _timed(simulate)
    spans = mem.spans()
    n = len(spans["span_id"])
    res: dict[str, object] = {"spans": n, "minutes": a.minutes, "services": a.services, "rate": a.rate,
                              "columns": {"wall_s": wall, "cpu_s": cpu, "spans_per_s_cpu": n / cpu}}  # fmt: skip
    kinds = [d.kind for d in sim.topology.defs]
    reqs, wall, cpu = _timed(lambda: list(trace_requests(spans, sim.names, kinds)))
    res["otlp_proto"] = {"wall_s": wall, "cpu_s": cpu, "spans_per_s_cpu": n / cpu,
                         "bytes_per_span": sum(map(len, reqs)) / n, "requests": len(reqs)}  # fmt: skip
    del reqs
    m = min(n, a.json_spans)
    _, wall, cpu = _timed(lambda: [traces_json(spans, np.arange(i, min(m, i + 8192)), sim.names, kinds, {})
                                   for i in range(0, m, 8192)])  # fmt: skip
    res["otlp_json"] = {"spans": m, "wall_s": wall, "cpu_s": cpu, "spans_per_s_cpu": m / cpu}
    _, wall, cpu = _timed(lambda: red_frame(spans, sim.names["service"], t0_ms=sim.spec.start_ms, t1_ms=sim.end_ms))
    res["red_series"] = {"wall_s": wall, "cpu_s": cpu, "spans_per_s_cpu": n / cpu}
    for k in ("columns", "otlp_proto", "otlp_json", "red_series"):
        r = res[k]
        assert isinstance(r, dict)
        print(f"{k:12s} {r['spans_per_s_cpu']:>12,.0f} spans/s (CPU {r['cpu_s']:.2f} s, wall {r['wall_s']:.2f} s)")
    print(f"{n:,} spans for {a.minutes:g} simulated minutes of {a.services} services "
          f"({n / (a.minutes * 60):,.0f} spans/s of simulated time)")
    if a.json:
        with open(a.json, "w", encoding="utf-8") as f:
            json.dump(res, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
