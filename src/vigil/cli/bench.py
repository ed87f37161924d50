"""``vigil bench engine``: Vigil's engine against the pure-Python reference, on the shared workload."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from vigil.errors import VigilError

HELP_SHARED = (
    "the shared benchmark folder (workload.py, bench_pure_python.py) was not found; pass --shared PATH "
    "(in this project's workspace it is ../shared/bench/perf)"
)


def find_shared(shared: Path | None, *parts: str) -> Path:
    """The shared folder: the given path, else ``../shared/<parts>`` from the cwd or from the repository."""
    candidates = [shared] if shared else [
        Path.cwd().parent / "shared" / Path(*parts),
        Path(__file__).resolve().parents[3].parent / "shared" / Path(*parts),
    ]  # fmt: skip
    for c in candidates:
        if c is not None and c.is_dir():
            return c.resolve()
    raise VigilError(HELP_SHARED)


def _import_shared(path: Path) -> None:
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))


def _zscore_pipeline(source: Any, alerts_path: str) -> Any:
    from vigil.detectors import SlidingZScore
    from vigil.engine.pipeline import Pipeline
    from vigil.io.sinks import JsonlSink

    # the reference's semantics: exact 60 s event-time window per key, |z| > 4 with >= 10 prior events
    det = SlidingZScore(field="amount", window=60_000, threshold=4.0, min_count=10, baseline_halflife=None,
                        protect=False)  # fmt: skip
    return (
        Pipeline("bench").source(source).watermark("2s", idle_timeout=None)
        .micro_batches(max_rows=65_536, max_delay="50ms", queue_batches=4)
        .detect("z", det).alerts_to(JsonlSink(alerts_path))
    )  # fmt: skip


def engine_worker(*, workload: Path, jsonl: Path, n: int, keys: int) -> dict[str, Any]:
    """(b) columnar in memory and (c) JSON-lines file → alerts file; prints one JSON line."""
    _import_shared(workload)
    import numpy as np
    from workload import generate  # type: ignore[import-not-found]

    from vigil.engine.runner import EmbeddedRunner
    from vigil.io.files import JsonlFileSource
    from vigil.io.replay import ReplaySource
    from vigil.io.schema import Schema

    ev = generate(n, keys)
    # columnar batches: the workload's integer user ids are the key column (looked up vectorized)
    user = ev["key"].astype(np.int64)
    ts, amount = ev["ts"], ev["amount"]
    del ev
    with tempfile.TemporaryDirectory() as tmp:
        # warm the compiled kernels once (numba caches them on disk; this only loads them)
        warm = ReplaySource(user[:1000], ts[:1000], {"amount": amount[:1000]})
        EmbeddedRunner(_zscore_pipeline(warm, os.path.join(tmp, "w.jsonl")), out_dir=tmp).run()

        src = ReplaySource(user, ts, {"amount": amount})
        t0 = time.perf_counter()
        st_b = EmbeddedRunner(_zscore_pipeline(src, os.path.join(tmp, "b.jsonl")), out_dir=tmp).run()
        dt_b = time.perf_counter() - t0

        schema = Schema("user", "ts", fields=("amount",))
        t0 = time.perf_counter()
        st_c = EmbeddedRunner(_zscore_pipeline(JsonlFileSource(str(jsonl), schema), os.path.join(tmp, "c.jsonl")),
                              out_dir=tmp).run()  # fmt: skip
        dt_c = time.perf_counter() - t0
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out = {
        "vigil_eps": round(st_b.events_in / dt_b, 1),
        "vigil_alerts": st_b.alerts,
        "vigil_late": st_b.late_events,
        "vigil_jsonl_eps": round(st_c.events_in / dt_c, 1),
        "vigil_jsonl_alerts": st_c.alerts,
        "vigil_jsonl_dead_letters": st_c.dead_letters,
        "peak_rss_mb": round(rss_mb, 1),
    }
    print(json.dumps(out), flush=True)
    return out


def run_engine_bench(*, n: int, keys: int, shared: Path | None, as_json: bool, out: Path) -> dict[str, Any]:
    """Run (a) here and (b), (c) in a child process; print and save the figures."""
    from rich.console import Console

    console = Console(stderr=True, highlight=False)
    perf = find_shared(shared, "bench", "perf")
    _import_shared(perf)
    from bench_pure_python import run_window  # type: ignore[import-not-found]
    from workload import as_tuples, generate, write_jsonl  # type: ignore[import-not-found]

    with tempfile.TemporaryDirectory() as tmp:
        jsonl = Path(tmp) / "events.jsonl"
        with console.status(f"workload: {n:,} events, {keys:,} keys…"):
            ev = generate(n, keys)
            write_jsonl(ev, str(jsonl))
            rows = as_tuples(ev)
        with console.status("(a) pure-Python exact 60 s window reference…"):
            t0 = time.perf_counter()
            flags = run_window(rows)
            dt_a = time.perf_counter() - t0
        del rows, ev
        ref_eps = n / dt_a
        console.print(f"(a) reference: {ref_eps:,.0f} events/s, {len(flags):,} alerts")
        with console.status("(b) Vigil columnar, (c) Vigil JSON-lines file → alerts file (own process)…"):
            proc = subprocess.run(
                [sys.executable, "-m", "vigil.cli.main", "bench", "engine-worker", "--workload", str(perf),
                 "--jsonl", str(jsonl), "--n", str(n), "--keys", str(keys)],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
        if proc.returncode != 0:
            raise VigilError(f"benchmark worker failed:\n{proc.stderr[-2000:]}")
        worker = json.loads(proc.stdout.strip().splitlines()[-1])
    result = {
        "events": n,
        "keys": keys,
        "reference_eps": round(ref_eps, 1),
        "vigil_eps": worker["vigil_eps"],
        "vigil_jsonl_eps": worker["vigil_jsonl_eps"],
        "ratio": round(worker["vigil_eps"] / ref_eps, 2),
        "jsonl_ratio": round(worker["vigil_jsonl_eps"] / ref_eps, 2),
        "peak_rss_mb": worker["peak_rss_mb"],
        "reference_alerts": len(flags),
        "vigil_alerts": worker["vigil_alerts"],
        "vigil_jsonl_alerts": worker["vigil_jsonl_alerts"],
        "python": sys.version.split()[0],
        "cpu_count": os.cpu_count(),
    }
    console.print(
        f"(b) Vigil columnar: {result['vigil_eps']:,.0f} events/s ({result['ratio']}× reference), "
        f"{result['vigil_alerts']:,} alerts\n(c) Vigil JSON-lines → alerts file: {result['vigil_jsonl_eps']:,.0f} "
        f"events/s\npeak RSS of Vigil's process: {result['peak_rss_mb']} MB"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    if as_json:
        print(json.dumps(result), flush=True)
    return result
