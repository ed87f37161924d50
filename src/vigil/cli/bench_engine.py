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

from vigil.cli.common import strict_json
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


def _zscore_pipeline(source: Any, alerts_path: str, max_rows: int = 16_384) -> Any:
    from vigil.dataflow.pipeline import Pipeline
    from vigil.detectors import SlidingZScore
    from vigil.io.sinks import JsonlSink

    # the reference's semantics: exact 60 s event-time window per key, |z| > 4 with >= 10 prior events
    det = SlidingZScore(field="amount", window=60_000, threshold=4.0, min_count=10, baseline_halflife=None,
                        protect=False)  # fmt: skip
    return (
        Pipeline("bench").source(source).watermark("2s", idle_timeout=None)
        .micro_batches(max_rows=max_rows, max_delay="50ms", queue_batches=4)
        .detect("z", det).alerts_to(JsonlSink(alerts_path))
    )  # fmt: skip


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MB.

    Read from ``/proc/self/status`` (VmHWM) where it exists: ``getrusage``'s ``ru_maxrss`` survives
    ``exec`` on Linux, so a child would report its parent's peak if the parent was larger.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def engine_worker(*, npz: Path, jsonl: Path, repeats: int = 3) -> dict[str, Any]:
    """(b) columnar in memory and (c) JSON-lines file → alerts file; prints one JSON line.

    Runs in a process of its own (``python -m vigil.cli.bench_engine``): its peak RSS is Vigil's alone.
    The workload comes from an ``.npz`` the parent wrote, so the generator's temporaries don't count.
    """
    import numpy as np

    from vigil.engine.runner import EmbeddedRunner
    from vigil.io.files import JsonlFileSource
    from vigil.io.replay import ReplaySource
    from vigil.io.schema import Schema

    with np.load(npz) as data:
        # columnar batches: the workload's integer user ids are the key column (looked up vectorized)
        user, ts, amount = data["key"].astype(np.int64), data["ts"], data["amount"]
    with tempfile.TemporaryDirectory() as tmp:
        # warm the compiled kernels once (numba caches them on disk; this only loads them)
        warm = ReplaySource(user[:1000], ts[:1000], {"amount": amount[:1000]})
        EmbeddedRunner(_zscore_pipeline(warm, os.path.join(tmp, "w.jsonl")), out_dir=tmp).run()

        def run_b() -> tuple[float, Any]:
            src = ReplaySource(user, ts, {"amount": amount})
            t0 = time.perf_counter()
            st = EmbeddedRunner(_zscore_pipeline(src, os.path.join(tmp, "b.jsonl"), 65_536), out_dir=tmp).run()
            return st.events_in / (time.perf_counter() - t0), st

        def run_c() -> tuple[float, Any]:
            schema = Schema("user", "ts", fields=("amount",))
            t0 = time.perf_counter()
            st = EmbeddedRunner(_zscore_pipeline(JsonlFileSource(str(jsonl), schema), os.path.join(tmp, "c.jsonl")),
                                out_dir=tmp).run()  # fmt: skip
            return st.events_in / (time.perf_counter() - t0), st

        runs_b = [run_b() for _ in range(repeats)]
        runs_c = [run_c() for _ in range(repeats)]
    eps_b = sorted(r[0] for r in runs_b)[len(runs_b) // 2]
    eps_c = sorted(r[0] for r in runs_c)[len(runs_c) // 2]
    st_b, st_c = runs_b[0][1], runs_c[0][1]
    rss_mb = peak_rss_mb()
    out = {
        "vigil_eps": round(eps_b, 1),
        "vigil_eps_runs": [round(r[0], 1) for r in runs_b],
        "vigil_alerts": st_b.alerts,
        "vigil_late": st_b.late_events,
        "vigil_jsonl_eps": round(eps_c, 1),
        "vigil_jsonl_eps_runs": [round(r[0], 1) for r in runs_c],
        "vigil_jsonl_alerts": st_c.alerts,
        "vigil_jsonl_dead_letters": st_c.dead_letters,
        "peak_rss_mb": round(rss_mb, 1),
    }
    print(strict_json(out), flush=True)
    return out


class _StepClock:
    """Sums each step's processing time (the runner's per-batch hook), for "where the time goes"."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def observe_step(self, step: str, rows: int, seconds: float) -> None:
        self.seconds[step] = self.seconds.get(step, 0.0) + seconds

    def observe_checkpoint(self, seconds: float, ok: bool) -> None:
        """Not measured here."""

    def tick(self) -> list[Any]:
        return []


def fraud_yaml_worker(*, pipeline: Path, events: int = 1_000_000) -> dict[str, Any]:
    """(d) The shipped fraud YAML end to end from a JSON-lines file: everything on but the console printout.

    The file is written first (the transaction generator, 20,000 card holders), then read back by the pipeline's
    own source through the worker with its alert manager (default policy, SQLite store) and every sink of the
    file except ``console``. Runs in a process of its own; prints one JSON line.
    """
    from vigil.io.files import JsonlFileSource
    from vigil.io.generators.transactions import TransactionSpec, generate_transactions, write_jsonl
    from vigil.io.schema import Schema
    from vigil.worker import Worker, settle_gc

    with tempfile.TemporaryDirectory() as tmp:
        tx = Path(tmp) / "transactions.jsonl"
        write_jsonl(generate_transactions(TransactionSpec(events=events, users=20_000, seed=7)), str(tx))
        text = pipeline.read_text(encoding="utf-8")
        lines = [ln for ln in text.splitlines() if "{kind: console}" not in ln]
        yaml_path = Path(tmp) / "fraud.yaml"
        yaml_path.write_text("\n".join(lines).replace("../transactions.jsonl", str(tx)).replace("../vigil-out", tmp))
        t0 = time.perf_counter()
        schema = Schema("user", "ts", fields=("amount",), extra=("txn_id", "merchant", "category", "country"),
                        optional=("label", "pattern"))  # fmt: skip
        reader = JsonlFileSource(str(tx), schema).open("0")
        while not reader.at_end:
            reader.read_batch(65_536, 5)
        decode_s = time.perf_counter() - t0
        worker = Worker.from_file(yaml_path, out_dir=Path(tmp) / "out", console_port=None)
        clock = _StepClock()
        worker.runner.metrics = clock
        settle_gc()  # as `vigil run` does
        t0 = time.perf_counter()
        st = worker.run()
        elapsed = time.perf_counter() - t0
    out = {
        "fraud_yaml_eps": round(st.events_in / elapsed, 1),
        "fraud_yaml_s": round(elapsed, 2),
        "fraud_yaml_events": st.events_in,
        "fraud_yaml_alerts": st.alerts,
        "fraud_yaml_windows": st.windows_emitted,
        "fraud_yaml_where_s": {"read_and_decode_alone": round(decode_s, 2),
                               **{f"step_{k}": round(v, 2) for k, v in clock.seconds.items()}},
        "fraud_yaml_peak_rss_mb": round(peak_rss_mb(), 1),
    }
    print(json.dumps(out), flush=True)
    return out


def run_engine_bench(
    *, n: int, keys: int, shared: Path | None, as_json: bool, out: Path, repeats: int = 3,
    fraud_pipeline: Path | None = Path("pipelines/fraud.yaml"),
) -> dict[str, Any]:
    """Run (a) here and (b), (c) in a child process, ``repeats`` times each (medians); print and save."""
    import numpy as np
    from rich.console import Console

    console = Console(stderr=True, highlight=False)
    perf = find_shared(shared, "bench", "perf")
    _import_shared(perf)
    from bench_pure_python import run_window  # type: ignore[import-not-found]
    from workload import as_tuples, generate, write_jsonl  # type: ignore[import-not-found]

    with tempfile.TemporaryDirectory() as tmp:
        jsonl = Path(tmp) / "events.jsonl"
        npz = Path(tmp) / "events.npz"
        with console.status(f"workload: {n:,} events, {keys:,} keys…"):
            ev = generate(n, keys)
            write_jsonl(ev, str(jsonl))
            np.savez(npz, key=ev["key"], ts=ev["ts"], amount=ev["amount"])
            rows = as_tuples(ev)
        ref_runs = []
        with console.status(f"(a) pure-Python exact 60 s window reference ({repeats} runs)…"):
            for _ in range(repeats):
                t0 = time.perf_counter()
                flags = run_window(rows)
                ref_runs.append(n / (time.perf_counter() - t0))
        del rows, ev
        ref_eps = sorted(ref_runs)[len(ref_runs) // 2]
        console.print(f"(a) reference: {ref_eps:,.0f} events/s, {len(flags):,} alerts")
        with console.status("(b) Vigil columnar, (c) Vigil JSON-lines file → alerts file (own process)…"):
            proc = subprocess.run(
                [sys.executable, "-m", "vigil.cli.bench_engine", "--npz", str(npz), "--jsonl", str(jsonl),
                 "--repeats", str(repeats)],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
        if proc.returncode != 0:
            raise VigilError(f"benchmark worker failed:\n{proc.stderr[-2000:]}")
        worker = json.loads(proc.stdout.strip().splitlines()[-1])
    fraud: dict[str, Any] = {}
    if fraud_pipeline is not None and fraud_pipeline.exists():
        with console.status(f"(d) the shipped {fraud_pipeline} end to end from a 1M-event file (own process)…"):
            proc = subprocess.run([sys.executable, "-m", "vigil.cli.bench_engine", "--fraud-yaml", str(fraud_pipeline)],
                                  capture_output=True, text=True, check=False)  # fmt: skip
        if proc.returncode != 0:
            raise VigilError(f"fraud YAML benchmark failed:\n{proc.stderr[-2000:]}")
        fraud = json.loads(proc.stdout.strip().splitlines()[-1])
    else:
        console.print(f"[yellow](d) skipped[/]: no pipeline file at {fraud_pipeline} (run from the repository)")
    result = {
        "events": n,
        "keys": keys,
        "repeats": repeats,
        "reference_eps": round(ref_eps, 1),
        "reference_eps_runs": [round(r, 1) for r in ref_runs],
        "vigil_eps": worker["vigil_eps"],
        "vigil_jsonl_eps": worker["vigil_jsonl_eps"],
        "ratio": round(worker["vigil_eps"] / ref_eps, 2),
        "jsonl_ratio": round(worker["vigil_jsonl_eps"] / ref_eps, 2),
        "peak_rss_mb": worker["peak_rss_mb"],
        "reference_alerts": len(flags),
        "vigil_alerts": worker["vigil_alerts"],
        "vigil_jsonl_alerts": worker["vigil_jsonl_alerts"],
        **fraud,
        "python": sys.version.split()[0],
        "cpu_count": os.cpu_count(),
    }
    console.print(
        f"(b) Vigil columnar: {result['vigil_eps']:,.0f} events/s ({result['ratio']}× reference), "
        f"{result['vigil_alerts']:,} alerts\n(c) Vigil JSON-lines → alerts file: {result['vigil_jsonl_eps']:,.0f} "
        f"events/s\npeak RSS of Vigil's process: {result['peak_rss_mb']} MB"
    )
    if fraud:
        console.print(f"(d) {fraud_pipeline} end to end: {fraud['fraud_yaml_eps']:,.0f} events/s "
                      f"({fraud['fraud_yaml_alerts']:,} alerts, {fraud['fraud_yaml_windows']:,} windows); "
                      f"where the time goes (s): {fraud['fraud_yaml_where_s']}")  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(strict_json(result, indent=1) + "\n")
    if as_json:
        print(strict_json(result), flush=True)
    return result


def _worker_main() -> None:  # pragma: no cover - run as a subprocess
    import argparse

    ap = argparse.ArgumentParser(description="Vigil's side of `vigil bench engine` (internal)")
    ap.add_argument("--npz", type=Path)
    ap.add_argument("--jsonl", type=Path)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--fraud-yaml", type=Path)
    a = ap.parse_args()
    if a.fraud_yaml is not None:
        fraud_yaml_worker(pipeline=a.fraud_yaml)
    else:
        engine_worker(npz=a.npz, jsonl=a.jsonl, repeats=a.repeats)


if __name__ == "__main__":  # pragma: no cover
    _worker_main()
