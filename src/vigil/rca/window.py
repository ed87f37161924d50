"""Scoring one incident's window: every (entity, metric) series against its baseline, as arrays.

:class:`WindowScores` splits a :class:`~vigil.rca.frame.MetricFrame` into a baseline (``baseline_s`` before
the anomaly window) and the anomaly window (``lookback_s`` before the incident time, exclusive), and keeps,
per entity and metric: the peak robust z (3rd-largest single bin, or 2nd-largest of the ``smooth``-bin
rolling mean), the recent level, the trend of the last ``2 x recent`` bins (Kendall's tau against time),
the onset, and the recent change in the metric's own unit (``delta``).
Series mostly absent from the baseline (a job that just started) are not scored. :func:`with_cpu_per_request`
derives CPU per request, the rate floored at half its baseline median.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from vigil.rca.frame import MetricFrame
from vigil.rca.scores import TWO_SIDED, baseline, level, onset, peak

__all__ = ["WindowScores", "rolling_mean", "with_cpu_per_request"]


def _kendall_tail(z: np.ndarray, n: int) -> np.ndarray:
    """Kendall's tau of each row's last ``n`` values against time: 1 for a steady rise (NaN pairs ignored)."""
    tail = z[:, -n:]
    d = np.sign(tail[:, None, :] - tail[:, :, None])  # [rows, i, j]: sign(x_j - x_i)
    upper = np.triu(np.ones((tail.shape[1], tail.shape[1]), bool), 1)
    d = np.where(upper[None] & ~np.isnan(d), d, 0.0)
    pairs = (upper[None] & ~np.isnan(tail[:, None, :] - tail[:, :, None])).sum(axis=(1, 2))
    with np.errstate(all="ignore"):
        return np.where(pairs > 0, d.sum(axis=(1, 2)) / np.maximum(pairs, 1), 0.0)


def with_cpu_per_request(frame: MetricFrame, base: np.ndarray) -> MetricFrame:
    """Add ``cpu-per-request``: CPU over the request rate, the rate floored at half its baseline median.

    A spike does not raise it (each request costs what it did); a hog, contention or GC does. The floor
    keeps a service whose callers fail upstream (its rate collapses, its idle CPU stays) from looking hot.
    """
    if "cpu" not in frame.metrics or "rate" not in frame.metrics or "cpu-per-request" in frame.metrics:
        return frame
    cpu, rate = frame.values[:, frame.metrics.index("cpu")], frame.values[:, frame.metrics.index("rate")]
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            floor = 0.5 * np.nanmedian(rate[:, base], axis=1)
        cpr = cpu / np.fmax(rate, floor[:, None])
    cpr[~(np.nan_to_num(floor) > 0.05)] = np.nan  # idle in the baseline: no cost per request to compare with
    values = np.concatenate([frame.values, cpr[:, None, :]], axis=1)
    return MetricFrame(frame.ts_ms, frame.entities, [*frame.metrics, "cpu-per-request"], values, frame.changes,
                       frame.virtual)  # fmt: skip


def rolling_mean(x: np.ndarray, w: int) -> np.ndarray:
    """Trailing mean over ``w`` bins along the last axis, NaN-aware (a bin with no values stays NaN)."""
    if w <= 1:
        return x
    v = np.nan_to_num(x)
    c = (~np.isnan(x)).astype(np.float64)
    cs = np.cumsum(v, axis=-1)
    cc = np.cumsum(c, axis=-1)
    cs[..., w:] = cs[..., w:] - cs[..., :-w].copy()
    cc[..., w:] = cc[..., w:] - cc[..., :-w].copy()
    with np.errstate(all="ignore"):
        out = cs / cc
    out[np.isnan(x)] = np.nan
    return out


class WindowScores:
    """Peaks, levels, onsets and recent deltas of every (entity, metric) of a frame."""

    def __init__(self, frame: MetricFrame, at_ms: int, *, lookback_s: float = 300.0, baseline_s: float = 1200.0,
                 z_thr: float = 4.0, recent: int = 6, smooth: int = 3) -> None:  # fmt: skip
        step = frame.step_ms or 10_000
        self.step_s = step / 1000.0
        ts = frame.ts_ms
        self.a0 = at_ms - int(lookback_s * 1000)
        self.b0 = self.a0 - int(baseline_s * 1000)
        base = (ts >= self.b0) & (ts < self.a0)
        win = (ts >= self.a0) & (ts < at_ms)
        if base.sum() < 3 or win.sum() < 2:
            raise ValueError(f"too little data around at_ms={at_ms}: {int(base.sum())} baseline bins, "
                             f"{int(win.sum())} anomaly bins (step {step} ms)")  # fmt: skip
        self.ts_win = ts[win]
        E, M, _ = frame.values.shape
        X = frame.values
        ri = frame.metrics.index("rate") if "rate" in frame.metrics else None
        with np.errstate(all="ignore"):
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                rate_med = np.nanmedian(X[:, ri][:, base], axis=1) if ri is not None else np.full(E, np.nan)
                self.rate = np.nan_to_num(rate_med)
                names, counts = list(frame.metrics) * E, np.repeat(rate_med * self.step_s, M)
                two = np.tile(np.array([m in TWO_SIDED for m in frame.metrics]), E)
                zs = []
                for w in (1, smooth):  # single bins, and rolling means (evidence that persists adds up)
                    Xw = rolling_mean(X, w).reshape(E * M, -1)
                    med, scale = baseline(Xw[:, base], names, counts * w, self.step_s)
                    Z = (Xw[:, win] - med[:, None]) / scale[:, None]
                    Z[two] = np.abs(Z[two])
                    zs.append(Z)
                    if w == 1:
                        med1 = med
                # a series that was mostly absent in the baseline (a job that just started) is not scored
                seen = (~np.isnan(X[:, :, base])).sum(axis=2).reshape(E * M)
                thin = seen < max(6, 0.3 * int(base.sum()))
                for Z in zs:
                    Z[thin] = np.nan
                self.z = zs[0].reshape(E, M, -1)
                self.peak = np.maximum(peak(zs[0], 3), peak(zs[1], 2)).reshape(E, M)  # 3 bins, or 30 s twice
                self.level = level(zs[1], recent).reshape(E, M)
                self.trend = _kendall_tail(zs[1], 2 * recent).reshape(E, M)
                self.onset = onset(zs[0], z_thr).reshape(E, M)
                med = med1
                latest = np.nanmedian(X[:, :, win][:, :, -recent:], axis=2)
                self.recent_rate = np.nan_to_num(latest[:, ri]) if ri is not None else np.zeros(E)
                self.delta = np.nan_to_num(latest - med.reshape(E, M))
        self.present = ~np.isnan(X[:, :, win]).all(axis=2)  # [E, M]: the series has data in the window
        self.ent = {e: i for i, e in enumerate(frame.entities)}
        self.met = {m: j for j, m in enumerate(frame.metrics)}

    def trend_since(self, entity: str, metric: str, from_ms: int, min_bins: int = 5) -> tuple[float, float]:
        """How the series' z moves after its highest bin since ``from_ms``: (Kendall's tau, where it settles).

        Where it settles is Aitken's extrapolation of the means of the tail's three thirds (the asymptote of
        an exponential decay); ``inf`` when the decline is not slowing down towards a level. A warm-up after a
        good deploy falls (tau near -1) towards its old level (z near 0); a bad release that also warms up
        falls towards a level of its own. ``(0, inf)`` when the tail is shorter than ``min_bins``.
        """
        i, j = self.ent.get(entity), self.met.get(metric)
        if i is None or j is None:
            return 0.0, np.inf
        z = self.z[i, j][self.ts_win >= from_ms]
        if len(z) < min_bins + 1 or np.isnan(z).all():
            return 0.0, np.inf
        tail = z[int(np.nanargmax(z)) + 1 :]
        if len(tail) < min_bins:
            return 0.0, np.inf
        tau = float(_kendall_tail(tail[None, :], len(tail))[0])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            m0, m1, m2 = (float(np.nanmean(part)) for part in np.array_split(tail, 3))
        d1, d2 = m1 - m0, m2 - m1
        if not (d1 < 0 and d2 <= 0):
            return tau, np.inf if d2 > 0 or d1 >= 0 else m2
        settle = m2 - d2 * d2 / (d2 - d1) if d2 > d1 else -np.inf  # still falling as fast: no level in sight
        return tau, settle

    def get(self, table: np.ndarray, entity: str, metric: str, default: float = 0.0) -> float:
        """``table[entity, metric]`` (e.g. ``self.peak``), or ``default`` when absent or not finite."""
        i, j = self.ent.get(entity), self.met.get(metric)
        if i is None or j is None:
            return default
        v = float(table[i, j])
        return v if np.isfinite(v) else default

    def best(self, entity: str, metrics: Sequence[str], weights: dict[str, float] | None = None) -> tuple[float, str]:
        """The largest weighted peak among ``metrics`` of ``entity``, and which metric it is."""
        out, which = 0.0, ""
        for m in metrics:
            v = self.get(self.peak, entity, m) * (weights or {}).get(m, 1.0)
            if v > out:
                out, which = v, m
        return out, which
