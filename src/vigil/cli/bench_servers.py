"""``vigil bench servers``: throughput of the multi-metric server pipeline at fleet scale.

Default workload: 10,000 hosts x 6 metrics x 1 sample/s for 10 minutes of event time (36M samples) through
:class:`~vigil.apps.servers.ServerPipeline`: the join (10 s windows), the per-metric detectors, the global
Isolation Forest (trained offline first on a separate small normal slice, not timed; it votes) and the k-of-n
aggregator.

The samples are never materialized at once: a minimal vectorized generator (:class:`FastFleet`; normal noise
around per-host levels, no diurnal cycle, a few multi-metric incidents after the detectors' warm-up, a little
disorder within the watermark bound) yields event-time chunks (30 s by default: hosts x 6 x 30 = 1.8M
samples), each fed to ``ServerPipeline.process`` in micro-batches; ``flush`` closes the last windows.
:func:`~vigil.io.generators.fleet.simulate_fleet` is not used: at this size it takes ~16 s and ~5 GB (it
builds the whole long form, with string columns).

Only ``process``/``flush`` calls are timed (not generation). The run happens in a process of its own
(``python -m vigil.cli.bench_servers``), so ``peak_rss_mb`` (VmHWM) is that process's alone: pipeline state,
the model, one chunk and its micro-batches.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from vigil.cli.bench_engine import peak_rss_mb
from vigil.cli.common import strict_json
from vigil.errors import VigilError

_START_MS = 1_704_067_200_000
_N_METRICS = 6  # vigil.io.generators.fleet.METRICS


class FastFleet:
    """Cheap long-form samples, chunk by chunk of event time, sorted by arrival (see the module docstring).

    Each host samples every metric every ``step_s`` at its own phase; values are ``level + sd * N(0, 1)``.
    Incidents shift 2-3 metrics of a host by 8-15 sd for 60-120 s. 2 % of samples carry an event time up to
    3 s before their arrival (within the pipeline's 5 s watermark bound, so none is late).
    """

    def __init__(self, hosts: int, *, step_s: int = 1, seed: int = 0, incidents: int = 0,
                 incident_window_s: tuple[float, float] = (0.0, 0.0)) -> None:  # fmt: skip
        rng = np.random.default_rng(seed)
        self.hosts, self.step_ms, self.rng = int(hosts), int(step_s * 1000), rng
        self.level = rng.uniform(20, 80, (hosts, _N_METRICS))
        self.sd = self.level * rng.uniform(0.02, 0.08, (hosts, _N_METRICS))
        phase = rng.integers(0, self.step_ms, hosts)
        self.order = np.argsort(phase, kind="stable").astype(np.int32)  # hosts in sampling order within a step
        self.phase = phase[self.order]
        lo, hi = incident_window_s
        self.incidents = []  # (host, start_ms, end_ms, metric indices, shift in sd)
        for _ in range(incidents):
            h = int(rng.integers(hosts))
            a = _START_MS + int(rng.uniform(lo, hi) * 1000)
            mets = rng.choice(_N_METRICS, int(rng.integers(2, 4)), replace=False)
            self.incidents.append((h, a, a + int(rng.uniform(60, 120) * 1000), mets, rng.uniform(8, 15)))
        self._tpl: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def _template(self, steps: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Slots, metric ids and ts offsets of ``steps`` sampling steps, layout ``[step, host (by phase), metric]``."""
        if steps not in self._tpl:
            H, M = self.hosts, _N_METRICS
            slots = np.broadcast_to(self.order[None, :, None], (steps, H, M)).ravel().copy()
            metric = np.broadcast_to(np.arange(M, dtype=np.int64)[None, None, :], (steps, H, M)).ravel().copy()
            off = (np.arange(steps, dtype=np.int64) * self.step_ms)[:, None, None] + self.phase[None, :, None]
            self._tpl[steps] = (slots, metric, np.broadcast_to(off, (steps, H, M)).ravel().copy())
        return self._tpl[steps]

    def chunks(self, total_s: float, chunk_s: float) -> Iterator[dict[str, np.ndarray]]:
        """Columns ``host_id``, ``metric_id``, ``ts_ms``, ``value`` of consecutive ``chunk_s`` of event time."""
        total_steps = max(1, int(total_s * 1000 // self.step_ms))
        per = max(1, int(chunk_s * 1000 // self.step_ms))
        H, M = self.hosts, _N_METRICS
        pos = np.empty(H, np.int64)
        pos[self.order] = np.arange(H)  # host -> position in the sampling order
        for s0 in range(0, total_steps, per):
            steps = min(per, total_steps - s0)
            slots, metric, off = self._template(steps)
            t0 = _START_MS + s0 * self.step_ms
            v = self.rng.standard_normal((steps, H, M))
            v *= self.sd[self.order][None]
            v += self.level[self.order][None]
            for h, a, b, mets, shift in self.incidents:
                ts_h = t0 + np.arange(steps) * self.step_ms + self.phase[pos[h]]
                on = (ts_h >= a) & (ts_h < b)
                if on.any():
                    v[np.ix_(on, [pos[h]], mets)] += shift * self.sd[h, mets]
            ts = off + t0
            n = ts.shape[0]
            k = int(n * 0.02)
            idx = self.rng.integers(0, n, k)
            ts[idx] -= self.rng.integers(1, 3001, k)
            yield {"host_id": slots, "metric_id": metric, "ts_ms": ts, "value": v.ravel()}


class _TimedModel:
    """Stands in for the pipeline's model: times each ``process_many`` (one call per batch of closed windows)."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.ms: list[float] = []
        self.rows: list[int] = []

    def process_many(self, slots: Any, ts_ms: Any, X: dict[str, Any]) -> Any:
        t0 = time.perf_counter()
        v = self.model.process_many(slots, ts_ms, X)
        self.ms.append((time.perf_counter() - t0) * 1000)
        self.rows.append(len(slots))
        return v


def servers_worker(*, hosts: int, minutes: float, step_s: int = 1, chunk_s: float = 30.0,
                   batch_rows: int = 262_144, seed: int = 7) -> dict[str, Any]:  # fmt: skip
    """Train offline (untimed), then stream the chunks through the pipeline; print one JSON line and return it."""
    from vigil.apps.servers import ServerConfig, ServerPipeline, train_global_model

    cfg = ServerConfig(window_s=10.0, model_votes=True, k=2)
    # offline: a separate small normal slice (other hosts, other seed), long enough for the detectors to be ready
    t0 = time.perf_counter()
    train_hosts, train_s = min(hosts, 300), (cfg.min_count + 30) * cfg.window_s
    tr = FastFleet(train_hosts, step_s=step_s, seed=seed + 1000)
    cols = {k: np.concatenate([c[k] for c in tr.chunks(train_s, chunk_s)]) for k in ("host_id", "metric_id", "ts_ms",
                                                                                      "value")}  # fmt: skip
    artifact = train_global_model(cols, cfg, until_ms=_START_MS + int(train_s * 1000) + 1, n_estimators=100,
                                  seed=seed)  # fmt: skip
    del cols, tr
    train_s_elapsed = time.perf_counter() - t0

    total_s = minutes * 60.0
    warm_s = (cfg.min_count + 2) * cfg.window_s  # incidents after the detectors are ready
    n_inc = max(3, hosts // 500)
    gen = FastFleet(hosts, step_s=step_s, seed=seed, incidents=n_inc,
                    incident_window_s=(min(warm_s, total_s * 0.5), max(total_s - 150.0, total_s * 0.6)))  # fmt: skip
    pipe = ServerPipeline(cfg, artifact)
    timed = _TimedModel(pipe.model)
    pipe.model = timed  # type: ignore[assignment]
    rss_before = peak_rss_mb()
    samples = windows = alerts = late = 0
    run_s = gen_s = 0.0
    chunks = 0
    t_gen = time.perf_counter()
    for c in gen.chunks(total_s, chunk_s):
        t1 = time.perf_counter()
        gen_s += t1 - t_gen
        sl, mt, ts, val = c["host_id"], c["metric_id"], c["ts_ms"], c["value"]
        for a in range(0, len(ts), batch_rows):
            b = a + batch_rows
            v, al, lt = pipe.process(sl[a:b], mt[a:b], ts[a:b], val[a:b])
            windows += len(v)
            alerts += len(al)
            late += len(lt)
        samples += len(ts)
        chunks += 1
        del c, sl, mt, ts, val
        t_gen = time.perf_counter()
        run_s += t_gen - t1
    t1 = time.perf_counter()
    v, al = pipe.flush()
    run_s += time.perf_counter() - t1
    windows += len(v)
    alerts += len(al)
    ms = np.asarray(timed.ms) if timed.ms else np.full(1, np.nan)
    out = {
        "hosts": hosts, "metrics": _N_METRICS, "minutes": minutes, "step_s": step_s, "chunk_s": chunk_s,
        "batch_rows": batch_rows, "chunks": chunks, "samples": samples, "windows": windows,
        "run_s": round(run_s, 3), "samples_per_s": round(samples / run_s, 1) if run_s > 0 else None,
        "windows_per_s": round(windows / run_s, 1) if run_s > 0 else None,
        "model_batches": len(timed.ms), "model_ms_mean": round(float(ms.mean()), 3),
        "model_ms_p95": round(float(np.percentile(ms, 95)), 3),
        "model_rows_per_batch": round(float(np.mean(timed.rows)), 1) if timed.rows else 0.0,
        "model_ms_total": round(float(np.nansum(ms)), 1),
        "alerts": alerts, "incidents": n_inc, "late": late,
        "train_rows": int(artifact["train"]["n_rows"]), "train_s": round(train_s_elapsed, 2),
        "generate_s": round(gen_s, 2), "rss_before_run_mb": round(rss_before, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }  # fmt: skip
    print(strict_json(out), flush=True)
    return out


def run_servers_bench(*, hosts: int = 10_000, minutes: float = 10.0, step_s: int = 1, as_json: bool = False,
                      out: Path | None = None, chunk_s: float = 30.0, batch_rows: int = 262_144,
                      seed: int = 7) -> dict[str, Any]:  # fmt: skip
    """Run the worker in a process of its own; print a table to stderr (and the JSON as the last stdout line)."""
    from rich.console import Console
    from rich.table import Table

    console = Console(stderr=True, highlight=False)
    n = hosts * _N_METRICS * int(minutes * 60 // step_s)
    cmd = [sys.executable, "-m", "vigil.cli.bench_servers", "--hosts", str(hosts), "--minutes", str(minutes),
           "--step-s", str(step_s), "--chunk-s", str(chunk_s), "--batch-rows", str(batch_rows),
           "--seed", str(seed)]  # fmt: skip
    with console.status(f"{hosts:,} hosts x {_N_METRICS} metrics x {minutes:g} min at {step_s}s ({n:,} samples)…"):
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)  # fmt: skip
    if proc.returncode != 0:
        raise VigilError(f"servers benchmark worker failed:\n{proc.stderr[-2000:]}")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    res.update({"python": sys.version.split()[0], "cpu_count": os.cpu_count()})
    t = Table(title="vigil bench servers (join → detectors → global model → k-of-n)", show_header=False,
              title_justify="left")  # fmt: skip
    t.add_row("workload", f"{hosts:,} hosts x {_N_METRICS} metrics x {minutes:g} min at {step_s}s = "
                          f"{res['samples']:,} samples in {res['chunks']} chunks of {chunk_s:g}s")  # fmt: skip
    t.add_row("samples/s", f"[b]{res['samples_per_s']:,.0f}[/] ({res['run_s']:.1f}s timed)")
    t.add_row("windows/s", f"{res['windows_per_s']:,.0f} ({res['windows']:,} host-windows)")
    t.add_row("model per batch", f"mean {res['model_ms_mean']:.1f} ms · p95 {res['model_ms_p95']:.1f} ms · "
              f"{res['model_rows_per_batch']:,.0f} rows · {res['model_batches']} batches")  # fmt: skip
    t.add_row("alerts", f"{res['alerts']:,} ({res['incidents']} injected incidents) · late {res['late']:,}")
    t.add_row("peak RSS", f"{res['peak_rss_mb']:,.0f} MB (run process; {res['rss_before_run_mb']:,.0f} MB before "
                          "the run)")  # fmt: skip
    t.add_row("untimed", f"train {res['train_s']:.1f}s on {res['train_rows']:,} windows · generate "
                         f"{res['generate_s']:.1f}s")  # fmt: skip
    console.print(t)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(strict_json(res, indent=1) + "\n")
    if as_json:
        print(strict_json(res), flush=True)
    return res


def _worker_main() -> None:  # pragma: no cover - run as a subprocess
    import argparse

    ap = argparse.ArgumentParser(description="The run of `vigil bench servers` (internal)")
    ap.add_argument("--hosts", type=int, default=10_000)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--step-s", type=int, default=1)
    ap.add_argument("--chunk-s", type=float, default=30.0)
    ap.add_argument("--batch-rows", type=int, default=262_144)
    ap.add_argument("--seed", type=int, default=7)
    a = ap.parse_args()
    servers_worker(hosts=a.hosts, minutes=a.minutes, step_s=a.step_s, chunk_s=a.chunk_s, batch_rows=a.batch_rows,
                   seed=a.seed)  # fmt: skip


if __name__ == "__main__":  # pragma: no cover
    _worker_main()
