"""``vigil bench alerts``: the alert path when everything alerts, and the console over a million stored alerts.

Four figures, each measured in a process of its own (so that peak RSS is that run's alone):

- ``alerts_per_s``: raw alerts through the alert manager (ingest, grouping, muting, resolution, the store's
  rows, the notification log and a state save per "checkpoint"; no notifier I/O), on a mixed workload: each
  of 20,000 card holders trips two detectors five times each within a minute, then goes quiet and resolves.
  ``storm_alerts_per_s`` is the same on the storm's shape (one raw alert per logical alert, each notified).
- ``storm_eps_ratio`` and ``storm_rss_ratio``: the storm of issue 11 through the real pipeline (a YAML file run
  as ``vigil run`` runs it, the alert manager on, metrics on, no console): 100,000 card holders each paying 6
  times within 12 ms, a velocity rule (more than 5 in 60 s) with key TTL 1 m: one alert per card holder. The
  comparison is the same events with ``max_count: 6``, so nothing alerts. Events/s and peak RSS, alerts ÷ quiet.
- ``console_p95_ms``: p95 latency of the console API's calls over HTTP (the alert list, a status filter, deep
  pages, searches, severity and key filters, an alert's detail, the health bar), against a store holding
  1,000,000 alerts written straight into the store's tables as the manager lays them out, the server in a
  process of its own (:mod:`vigil.console.bench`; ``python -m vigil.console.bench`` measures it alone).

Timings are wall clock on whatever machine runs it; ``cpu_s`` figures are given beside them, since a loaded
machine slows every wall-clock figure: ``alerts_per_cpu_s`` (raw alerts per CPU second of the manager's process)
and ``storm_cpu_ratio`` (the quiet run's CPU seconds ÷ the storm's) are the same figures on CPU time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from vigil.cli.bench_engine import peak_rss_mb
from vigil.errors import VigilError

T0 = 1_700_000_000_000


# -- 1. the manager alone -------------------------------------------------------------------------------------


def _workload(keys: int, per_detector: int) -> list[Any]:
    from vigil.dataflow.outputs import make_alert

    out = []
    for i in range(keys):
        base = T0 + i * 50  # card holders one after another: their minutes overlap, their groups don't
        for det, sev in (("velocity", "critical"), ("amount_z", "warning")):
            for j in range(per_detector):
                ts = base + j * 10_000
                out.append(make_alert("bench", det, f"c{i:07d}", f"t{i}-{det}-{j}", score=6.0 + j, threshold=5.0,
                                      event_ts_ms=ts, detect_ts_ms=ts, severity=sev,
                                      message=f"{det}: {6 + j} vs 5", stats={"count": 6 + j, "calibrated": 1.0},
                                      event_ids=[f"t{i}-{j}"]))  # fmt: skip
    out.sort(key=lambda a: a.event_ts_ms)
    return out


def manager_worker(keys: int, per_detector: int, batch: int = 4096) -> dict[str, Any]:
    """Raw alerts through the pipeline's alert sink (its thread, its store), in micro-batches; one JSON line.

    The alerts go in as the engine's sink thread sends them (``write_batch`` with the watermark behind), with a
    checkpoint every second; the time runs from the first batch to the end of ``close``.
    """
    import gc

    from vigil.alerting.runtime import ManagedAlerts
    from vigil.eventtime.watermarks import MAX_WATERMARK

    alerts = _workload(keys, per_detector)
    gc.collect()
    gc.freeze()  # the workload's own objects are not the manager's to walk
    with tempfile.TemporaryDirectory() as tmp:
        # grouping on the stream's own time (the demo's alerting.clock): groups wait, notify and resolve as live
        m = ManagedAlerts({"clock": "event"}, pipeline="bench", store_path=os.path.join(tmp, "alerts.db"))
        m.restore_checkpoint(None)
        t0, c0, seq = time.perf_counter(), time.process_time(), 0
        next_checkpoint = t0 + 1.0
        for s in range(0, len(alerts), batch):
            chunk = alerts[s : s + batch]
            m.write_batch(chunk)
            m.on_watermark(chunk[-1].event_ts_ms - 2_000)
            if time.perf_counter() >= next_checkpoint:  # a checkpoint a second, as the engine's default
                seq += 1
                m.checkpoint(seq, max(seq - 2, 1))
                next_checkpoint = time.perf_counter() + 1.0
        m.on_watermark(MAX_WATERMARK)
        m.checkpoint(seq + 1, seq)
        m.close()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        size = sum(os.path.getsize(os.path.join(tmp, f)) for f in os.listdir(tmp))
    c = m.counters
    out = {"raw_alerts": len(alerts), "logical_alerts": c["logical_alerts"], "notifications": c["notifications_out"],
           "alerts_per_s": round(len(alerts) / wall, 1), "cpu_s": round(cpu, 2), "wall_s": round(wall, 2),
           "alerts_per_cpu_s": round(len(alerts) / cpu, 1), "store_mb": round(size / 1e6, 1),
           "peak_rss_mb": round(peak_rss_mb(), 1)}  # fmt: skip
    print(json.dumps(out), flush=True)
    return out


# -- 2. the storm through the real pipeline -------------------------------------------------------------------


def write_storm(path: Path, holders: int) -> int:
    """100,000 card holders (by default) each paying 6 times within 12 ms, in event-time order; returns events."""
    import numpy as np

    i = np.repeat(np.arange(holders), 6)
    j = np.tile(np.arange(6), holders)
    ts = T0 + i * 10 + j * 2  # a new card holder every 10 ms, each paying every 2 ms
    order = np.argsort(ts, kind="stable")
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(f'{{"user":"c{i[k]:07d}","ts":{ts[k]},"amount":{10 + j[k]}.5,"txn_id":"t{i[k]}-{j[k]}"}}\n'
                     for k in order.tolist())  # fmt: skip
    return len(ts)


def storm_yaml(path: Path, events: Path, max_count: int) -> Path:
    """The storm pipeline: a velocity rule with key TTL 1 m; the default alert manager records in the store."""
    path.write_text(f"""name: storm
source: {{kind: jsonl, path: {events}, schema: {{key: user, time: ts, fields: [amount], extra: [txn_id]}}}}
keys: {{ttl: 1m}}
event_ids: txn_id
steps:
  - {{name: velocity, detector: velocity, severity: critical, params: {{window: 60s, max_count: {max_count}}}}}
""")
    return path


def storm_worker(yaml_path: Path, out_dir: Path) -> dict[str, Any]:
    """Run a pipeline file as ``vigil run`` does (metrics on, no console); one JSON line (own process)."""
    from prometheus_client import CollectorRegistry

    from vigil.worker import Worker, settle_gc

    c0 = time.process_time()
    w = Worker.from_file(yaml_path, out_dir=out_dir, metrics_registry=CollectorRegistry(), console_port=None)
    settle_gc()  # as `vigil run` does
    st = w.run()
    store = w.alerts.store_path
    out = {"events": st.events_in, "alerts": st.alerts, "elapsed_s": round(st.elapsed_s, 3),
           "events_per_s": round(st.events_per_s, 1), "cpu_s": round(time.process_time() - c0, 2),
           "peak_rss_mb": round(peak_rss_mb(), 1), "manager": w.alerts.counters,
           "store_mb": round(sum(p.stat().st_size for p in store.parent.glob(store.name + "*")) / 1e6, 1)}  # fmt: skip
    print(json.dumps(out), flush=True)
    return out


# -- 3. the console over a million alerts: vigil.console.bench (fill_store, measure_console) ---------------


# -- the command ----------------------------------------------------------------------------------------------


def _child(*args: str, timeout: float = 3600) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-m", "vigil.cli.bench_alerts", *args], capture_output=True, text=True,
                          timeout=timeout, check=False)  # fmt: skip
    if proc.returncode != 0:
        raise VigilError(f"benchmark worker {args[0]} failed:\n{proc.stderr[-2000:]}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def run_alerts_bench(*, holders: int, console_alerts: int, console_store: Path | None, as_json: bool,
                     out: Path, manager_keys: int = 20_000) -> dict[str, Any]:  # fmt: skip
    """Run the four measurements (each in its own process); print and save the figures."""
    from rich.console import Console

    from vigil.console.bench import fill_store, measure_console

    console = Console(stderr=True, highlight=False)
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        with console.status("alert manager: mixed workload, then the storm's shape…"):
            mixed = _child("manager", "--keys", str(manager_keys), "--per-detector", "5")
            shaped = _child("manager", "--keys", str(min(holders, 100_000)), "--per-detector", "1")
        console.print(f"alert manager: {mixed['alerts_per_s']:,.0f} raw alerts/s mixed ({mixed['raw_alerts']:,} raw, "
                      f"{mixed['logical_alerts']:,} logical), {shaped['alerts_per_s']:,.0f}/s one per logical alert")
        events = write_storm(tmp / "storm.jsonl", holders)
        runs = {}
        for name, max_count in (("quiet", 6), ("storm", 5)):
            with console.status(f"{name}: {events:,} events through the pipeline…"):
                y = storm_yaml(tmp / f"{name}.yaml", tmp / "storm.jsonl", max_count)
                runs[name] = _child("storm", "--yaml", str(y), "--out", str(tmp / f"out-{name}"))
            r = runs[name]
            console.print(f"{name}: {r['events_per_s']:,.0f} events/s, {r['alerts']:,} alerts, peak RSS "
                          f"{r['peak_rss_mb']:,.0f} MB, store {r['store_mb']:,.0f} MB")
        store = console_store or tmp / "console.db"
        if not store.exists():
            with console.status(f"console: writing a store of {console_alerts:,} alerts…"):
                fill_store(store, console_alerts)
        with console.status("console: API calls over HTTP…"):
            lat = measure_console(store)
    quiet, storm = runs["quiet"], runs["storm"]
    result = {
        "alerts_per_s": mixed["alerts_per_s"],
        "storm_eps_ratio": round(storm["events_per_s"] / quiet["events_per_s"], 3),
        "storm_rss_ratio": round(storm["peak_rss_mb"] / quiet["peak_rss_mb"], 3),
        **lat,
        # the same on CPU time (what a loaded machine distorts least): raw alerts per CPU second of the manager,
        # and the quiet run's CPU seconds over the storm's
        "alerts_per_cpu_s": mixed["alerts_per_cpu_s"],
        "storm_cpu_ratio": round(quiet["cpu_s"] / storm["cpu_s"], 3),
        "storm_alerts_per_s": shaped["alerts_per_s"],
        "manager_mixed": mixed, "manager_storm_shape": shaped,
        "storm": storm, "quiet": quiet, "storm_events": events,
        "python": sys.version.split()[0], "cpu_count": os.cpu_count(), "load_avg": list(os.getloadavg()),
    }  # fmt: skip
    console.print(f"storm: {result['storm_eps_ratio']}× the quiet stream's events/s, {result['storm_rss_ratio']}× its "
                  f"peak RSS; console p95 {result['console_p95_ms']} ms over {console_alerts:,} alerts")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    if as_json:
        print(json.dumps(result), flush=True)
    return result


def _worker_main() -> None:  # pragma: no cover - run as a subprocess
    import argparse

    ap = argparse.ArgumentParser(description="the parts of `vigil bench alerts` (internal)")
    sub = ap.add_subparsers(dest="part", required=True)
    m = sub.add_parser("manager")
    m.add_argument("--keys", type=int, required=True)
    m.add_argument("--per-detector", type=int, required=True)
    s = sub.add_parser("storm")
    s.add_argument("--yaml", type=Path, required=True)
    s.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    if a.part == "manager":
        manager_worker(a.keys, a.per_detector)
    else:
        storm_worker(a.yaml, a.out)


if __name__ == "__main__":  # pragma: no cover
    _worker_main()
