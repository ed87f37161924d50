"""The RCA's input: metric time series per service and per call edge, a service graph, change events.

A :class:`MetricFrame` holds ``values[entity, metric, t]`` on a regular time grid (``ts_ms``, bin starts).
Entities are services (``"cart"``) and call edges (``"frontend->cart"``: what the caller saw of its calls).
Metric names are canonical (:data:`CANONICAL`); others are kept and scored as generic series.

Readers:

* :func:`read_wide_csv` — one ``time`` column (epoch seconds or ms, or ISO 8601) and one column per
  ``<entity>_<metric>``, e.g. ``carts_cpu``, ``frontend_latency-p99``, ``frontend->cart_errors`` (the
  RCAEval layout; entity names must not contain ``_``). Aliases map to canonical names: ``latency-50`` and
  ``lat50`` -> ``latency-p50``, ``latency-90`` -> ``latency-p90``, ``latency-99`` -> ``latency-p99``,
  ``latency`` -> ``latency-mean``, ``workload``/``requests``/``qps`` -> ``rate``, ``error``/``error-rate``
  -> ``errors``, ``memory`` -> ``mem``, ``cpu_pressure``/``psi`` -> ``cpu-pressure``. A
  ``<service>_version`` column becomes change events.
* :func:`read_csv_folder` — one CSV per service (``<service>.csv``: ``time`` plus ``<metric>`` columns).
* :func:`read_edges` — an edge list (``caller,callee`` per line, an optional header).

Examples:
    >>> import io
    >>> text = "time,cart_cpu,cart_latency-50,frontend->cart_errors|0,0.2,3,0|10,0.3,4,0|".replace("|", chr(10))
    >>> f = read_wide_csv(io.StringIO(text))
    >>> f.entities, f.metrics, f.step_ms
    (['cart', 'frontend->cart'], ['cpu', 'latency-p50', 'errors'], 10000)
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO

import numpy as np

__all__ = ["CANONICAL", "ChangeEvent", "MetricFrame", "ServiceGraph", "read_csv_folder", "read_edges", "read_wide_csv"]

CANONICAL = ("rate", "errors", "latency-mean", "latency-p50", "latency-p90", "latency-p99", "cpu", "mem", "gc",
             "cpu-pressure")
_ALIASES = {"latency-50": "latency-p50", "lat50": "latency-p50", "lat_50": "latency-p50", "latency-90": "latency-p90",
            "lat90": "latency-p90", "lat_90": "latency-p90", "latency-99": "latency-p99", "lat99": "latency-p99",
            "lat_99": "latency-p99", "latency": "latency-mean", "workload": "rate", "requests": "rate", "qps": "rate",
            "error": "errors", "error-rate": "errors", "error_rate": "errors", "memory": "mem",
            "cpu_pressure": "cpu-pressure", "psi": "cpu-pressure", "cpu-psi": "cpu-pressure"}  # fmt: skip
EDGE = "->"


def canonical(metric: str) -> str:
    """The canonical name of a metric (aliases above; unknown names unchanged)."""
    m = metric.strip().lower()
    return _ALIASES.get(m, m)


@dataclass(frozen=True)
class ChangeEvent:
    """Something changed on purpose: a ``deploy`` (new version) or a ``restart`` of ``service``."""

    ts_ms: int
    service: str
    kind: str = "deploy"
    detail: str = ""


@dataclass
class ServiceGraph:
    """Who calls whom: ``edges`` are ``(caller, callee)`` service names."""

    edges: list[tuple[str, str]] = field(default_factory=list)

    def callees(self, service: str) -> list[str]:
        """Services ``service`` calls."""
        return [b for a, b in self.edges if a == service]

    def callers(self, service: str) -> list[str]:
        """Services that call ``service``."""
        return [a for a, b in self.edges if b == service]

    @property
    def nodes(self) -> list[str]:
        """Every service named by an edge, sorted."""
        return sorted({n for e in self.edges for n in e})


@dataclass
class MetricFrame:
    """Series ``values[entity, metric, t]`` (NaN where missing) on the grid ``ts_ms`` (bin starts)."""

    ts_ms: np.ndarray
    entities: list[str]
    metrics: list[str]
    values: np.ndarray
    changes: list[ChangeEvent] = field(default_factory=list)
    virtual: set[str] = field(default_factory=set)  # services seen only through their callers' client spans

    @classmethod
    def from_series(cls, ts_ms: Sequence[int] | np.ndarray,
                    series: Mapping[tuple[str, str], Sequence[float] | np.ndarray],
                    changes: Sequence[ChangeEvent] = ()) -> MetricFrame:  # fmt: skip
        """A frame from ``{(entity, metric): values}`` on one grid (metric names canonicalized, NaN = missing).

        Entities are services (``"cart"``) or call edges (``"frontend->cart"``), e.g. the RED series an
        incident engine keeps: ``{("cart", "latency-p90"): [...], ("cart", "errors"): [...], ...}``.
        """
        ts = np.asarray(ts_ms, np.int64)
        cols = {(e, canonical(m)): np.asarray(v, np.float64) for (e, m), v in series.items()}
        bad = [k for k, v in cols.items() if v.shape != ts.shape]
        if bad:
            raise ValueError(f"series {bad[0]} has {len(cols[bad[0]])} values for {len(ts)} times")
        frame = _build(ts, cols, {})
        frame.changes = sorted(changes, key=lambda c: c.ts_ms)
        return frame

    @property
    def step_ms(self) -> int:
        """The grid's step (the median gap)."""
        return int(np.median(np.diff(self.ts_ms))) if len(self.ts_ms) > 1 else 0

    @property
    def services(self) -> list[str]:
        """Entities that are services (not edges)."""
        return [e for e in self.entities if EDGE not in e]

    @property
    def edge_pairs(self) -> list[tuple[str, str]]:
        """Entities that are call edges, as ``(caller, callee)``."""
        return [tuple(e.split(EDGE, 1)) for e in self.entities if EDGE in e]  # type: ignore[misc]

    def series(self, entity: str, metric: str) -> np.ndarray | None:
        """One series, or None when absent (or all NaN)."""
        if entity not in self.entities or metric not in self.metrics:
            return None
        s = self.values[self.entities.index(entity), self.metrics.index(metric)]
        return None if np.isnan(s).all() else s

    def graph(self) -> ServiceGraph:
        """The call graph implied by the edge entities."""
        return ServiceGraph(sorted(set(self.edge_pairs)))

    def window(self, t0_ms: int, t1_ms: int) -> MetricFrame:
        """The bins with ``t0_ms <= ts < t1_ms``."""
        m = (self.ts_ms >= t0_ms) & (self.ts_ms < t1_ms)
        return MetricFrame(self.ts_ms[m], self.entities, self.metrics, self.values[:, :, m], self.changes,
                           self.virtual)  # fmt: skip


def _parse_time(cells: list[str]) -> np.ndarray:
    try:
        t = np.array([float(c) for c in cells])
    except ValueError:
        t = np.array([datetime.fromisoformat(c.replace("Z", "+00:00")).timestamp() for c in cells])
    if len(t) and np.nanmax(np.abs(t)) < 1e11:  # epoch seconds
        t = t * 1000.0
    return np.round(t).astype(np.int64)


def _build(times: np.ndarray, cols: dict[tuple[str, str], np.ndarray], versions: dict[str, list[str]]) -> MetricFrame:
    grid = np.unique(times)
    pos = np.searchsorted(grid, times)
    entities = list(dict.fromkeys(e for e, _ in cols))
    metrics = list(dict.fromkeys(m for _, m in cols))
    values = np.full((len(entities), len(metrics), len(grid)), np.nan)
    for (e, m), v in cols.items():
        values[entities.index(e), metrics.index(m), pos] = v
    changes = []
    for svc, vs in versions.items():
        for i in range(1, len(vs)):
            if vs[i] and vs[i - 1] and vs[i] != vs[i - 1]:
                changes.append(ChangeEvent(int(times[i]), svc, "deploy", f"{vs[i - 1]} -> {vs[i]}"))
    return MetricFrame(grid, entities, metrics, values, sorted(changes, key=lambda c: c.ts_ms))


def _num(cells: list[str]) -> np.ndarray:
    out = np.full(len(cells), np.nan)
    for i, c in enumerate(cells):
        try:
            out[i] = float(c)
        except ValueError:
            pass
    return out


def read_wide_csv(src: str | IO[str]) -> MetricFrame:
    """A wide CSV (``time``, ``<entity>_<metric>`` columns) as a :class:`MetricFrame` (module docstring)."""
    f = open(src, newline="", encoding="utf-8") if isinstance(src, str) else src
    try:
        rows = list(csv.reader(f))
    finally:
        if isinstance(src, str):
            f.close()
    if not rows or "time" not in [h.strip().lower() for h in rows[0]]:
        raise ValueError("the CSV needs a header with a `time` column")
    header = [h.strip() for h in rows[0]]
    body = [r for r in rows[1:] if r]
    cols_raw = list(zip(*body, strict=False)) if body else [()] * len(header)
    ti = [h.lower() for h in header].index("time")
    times = _parse_time(list(cols_raw[ti]))
    cols: dict[tuple[str, str], np.ndarray] = {}
    versions: dict[str, list[str]] = {}
    for j, h in enumerate(header):
        if j == ti or h.lower().startswith("time") or "_" not in h:
            continue
        ent, _, met = h.partition("_")
        if canonical(met) == "version":
            versions[ent] = list(cols_raw[j])
            continue
        cols[(ent, canonical(met))] = _num(list(cols_raw[j]))
    return _build(times, cols, versions)


def read_csv_folder(folder: str) -> MetricFrame:
    """Per-service CSVs (``<service>.csv`` with ``time`` and metric columns) as one frame."""
    parts = []
    for name in sorted(os.listdir(folder)):
        if not name.endswith(".csv"):
            continue
        svc = name[:-4]
        with open(os.path.join(folder, name), newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
        if not rows:
            continue
        header = ["time" if h.strip().lower() == "time" else f"{svc}_{h.strip()}" for h in rows[0]]
        buf = io.StringIO()
        csv.writer(buf).writerows([header, *rows[1:]])
        parts.append(read_wide_csv(io.StringIO(buf.getvalue())))
    if not parts:
        raise ValueError(f"no .csv files in {folder}")
    return merge(parts)


def merge(frames: Iterable[MetricFrame]) -> MetricFrame:
    """Frames over the union of their grids and entities (NaN where one has no value)."""
    frames = list(frames)
    grid = np.unique(np.concatenate([f.ts_ms for f in frames]))
    entities = list(dict.fromkeys(e for f in frames for e in f.entities))
    metrics = list(dict.fromkeys(m for f in frames for m in f.metrics))
    values = np.full((len(entities), len(metrics), len(grid)), np.nan)
    for f in frames:
        pos = np.searchsorted(grid, f.ts_ms)
        for i, e in enumerate(f.entities):
            for j, m in enumerate(f.metrics):
                values[entities.index(e), metrics.index(m), pos] = f.values[i, j]
    changes = sorted({c for f in frames for c in f.changes}, key=lambda c: c.ts_ms)
    return MetricFrame(grid, entities, metrics, values, changes, set().union(*(f.virtual for f in frames)))


def read_edges(src: str | IO[str]) -> ServiceGraph:
    """An edge list: ``caller,callee`` per line (a ``source,target``-style header is skipped)."""
    f = open(src, newline="", encoding="utf-8") if isinstance(src, str) else src
    try:
        rows = [r for r in csv.reader(f) if len(r) >= 2 and r[0].strip()]
    finally:
        if isinstance(src, str):
            f.close()
    if rows and rows[0][0].strip().lower() in ("source", "caller", "src", "from", "parent"):
        rows = rows[1:]
    return ServiceGraph(sorted({(r[0].strip(), r[1].strip()) for r in rows}))
