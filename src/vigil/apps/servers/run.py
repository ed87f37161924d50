"""Batch runs of the server pipeline over columns (demo, bench) and offline training of its global model."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from vigil.apps.servers.pipeline import ServerConfig, ServerPipeline, WindowVerdicts
from vigil.io.generators.fleet import METRICS
from vigil.types import Alert


@dataclass
class ServerRun:
    """What :func:`run_server_pipeline` returns."""

    windows: WindowVerdicts
    alerts: list[Alert]
    late: np.ndarray  # row indices (into the input columns) of late samples
    host_names: np.ndarray
    samples: int
    elapsed_s: float

    @property
    def samples_per_s(self) -> float:
        """Throughput of join + detectors + model + aggregator."""
        return self.samples / self.elapsed_s if self.elapsed_s > 0 else float("nan")


def _codes(cols: dict[str, Any], metrics: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Host slots, host names and metric indices (from ``host_id``/``metric_id`` when present)."""
    if "host_id" in cols:
        slots = np.asarray(cols["host_id"], np.int32)
        names = None
        if "host" in cols and len(slots):
            names = np.empty(int(slots.max()) + 1, object)
            first = np.unique(slots, return_index=True)[1]
            names[slots[first]] = np.asarray(cols["host"])[first]
    else:
        names, inv = np.unique(np.asarray(cols["host"]).astype(str), return_inverse=True)
        slots = inv.astype(np.int32)
    if "metric_id" in cols and tuple(metrics) == METRICS:
        metric = np.asarray(cols["metric_id"], np.int64)
    else:
        lookup = {m: i for i, m in enumerate(metrics)}
        uniq, inv = np.unique(np.asarray(cols["metric"]).astype(str), return_inverse=True)
        metric = np.array([lookup.get(u, -1) for u in uniq.tolist()], np.int64)[inv]
    return slots, np.asarray(names if names is not None else [], object), metric


def run_server_pipeline(cols: dict[str, Any], config: ServerConfig | None = None, model: dict[str, Any] | None = None,
                        *, batch_rows: int = 65_536, until_ms: int | None = None) -> ServerRun:  # fmt: skip
    """Run the whole pipeline over long-form columns sorted by arrival, in micro-batches of ``batch_rows``.

    Columns: ``host`` or ``host_id``, ``metric`` or ``metric_id``, ``ts_ms``, ``value``; rows of unknown metrics
    are ignored.

    ``until_ms``: only rows with ``ts_ms < until_ms`` (for training on a prefix). The time measured
    (``elapsed_s``) covers join, detectors, model and aggregator, not the host/metric coding.
    """
    cfg = config or ServerConfig()
    slots, names, metric = _codes(cols, cfg.metrics)
    ts = np.asarray(cols["ts_ms"], np.int64)
    values = np.asarray(cols["value"], np.float64)
    keep = metric >= 0
    if until_ms is not None:
        keep &= ts < until_ms
    rows = np.flatnonzero(keep) if not keep.all() else None
    if rows is not None:
        slots, metric, ts, values = slots[rows], metric[rows], ts[rows], values[rows]
    pipe = ServerPipeline(cfg, model, names if len(names) else None)
    parts, alerts, late = [], [], []
    t0 = time.perf_counter()
    for a in range(0, len(ts), batch_rows):
        b = a + batch_rows
        v, al, lt = pipe.process(slots[a:b], metric[a:b], ts[a:b], values[a:b])
        parts.append(v)
        alerts.extend(al)
        late.append(lt + a)
    v, al = pipe.flush()
    parts.append(v)
    alerts.extend(al)
    elapsed = time.perf_counter() - t0
    late_idx = np.concatenate(late) if late else np.empty(0, np.int64)
    if rows is not None:
        late_idx = rows[late_idx]
    return ServerRun(WindowVerdicts.concat(parts, len(cfg.metrics)), alerts, late_idx, names, len(ts), elapsed)


def train_global_model(cols: dict[str, Any], config: ServerConfig | None = None, *, until_ms: int,
                       n_estimators: int = 100, seed: int = 42) -> dict[str, Any]:  # fmt: skip
    """Offline step: fit the global Isolation Forest on the z-vectors of normal windows before ``until_ms``.

    Runs the join and per-metric detectors (no model) over the prefix, keeps windows whose detectors were
    all ready and (when the columns carry ``label``) with no labelled sample of their host in the window,
    and fits on their clipped signed z-scores (features ``z_<metric>``).
    """
    from vigil.detectors.iforest import fit_isolation_forest

    cfg = config or ServerConfig()
    cfg_plain = ServerConfig(**{**cfg.__dict__, "model_votes": False, "k": 1})
    run = run_server_pipeline(cols, cfg_plain, until_ms=until_ms)
    w = run.windows
    keep = w.ready.all(axis=1)
    if "label" in cols and len(w):
        slots, _, _ = _codes(cols, cfg.metrics)
        ts = np.asarray(cols["ts_ms"], np.int64)
        bad = (np.asarray(cols["label"]) > 0) & (ts < until_ms)
        size = np.int64(cfg.window_ms)
        bad_keys = np.unique(slots[bad].astype(np.int64) * (1 << 40) + ts[bad] // size)
        keys = w.joined.slot.astype(np.int64) * (1 << 40) + w.joined.start_ms // size
        keep &= ~np.isin(keys, bad_keys)
    X = np.clip(w.z[keep], -cfg.z_clip, cfg.z_clip)
    return fit_isolation_forest(X, [f"z_{m}" for m in cfg.metrics], n_estimators=n_estimators, seed=seed)
