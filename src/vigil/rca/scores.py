"""Robust change scores: every series against its own recent past (BARO's scaler, with noise floors).

For each series, the **baseline** window gives a median and a scale (IQR / 1.349, the normal-consistent
IQR, as BARO's ``RobustScaler``), floored by what noise alone would produce so that a series that was flat
(an error share of exactly 0, a constant memory) does not turn a tiny wiggle into z = 1000:

========================  ==================================================================
metric                    scale floor
========================  ==================================================================
errors (share)            ``sqrt(p0 (1 - p0) / n)``, ``p0 = max(median, 1 / 2n)``, n requests a bin
rate (requests/s)         ``max(5 % of median, sqrt(count per bin) / bin seconds)`` (Poisson)
latency-* (ms)            ``max(5 % of median, 0.05 ms)``
cpu                       2 % of the scale (0.02 for a 0..1 share, 2 for percent)
cpu-pressure (share)      ``max(10 % of median, 0.005)``
mem, gc, others           ``max(2 % of |median|, 1e-9)`` (gc: at least 1 ms)
========================  ==================================================================

Then, over the **anomaly** window: signed z per bin, the **peak** (the second-largest z: one odd bin is not
a change), the **level** (median z of the last ``recent`` bins: is it still going on?) and the **onset** (the
first bin of a run of ``sustain`` bins above a threshold).

Examples:
    >>> import numpy as np
    >>> base = np.array([[10.0, 11, 9, 10, 12, 10]])
    >>> med, scale = baseline(base, ["latency-p50"], None, 10.0)
    >>> float(med[0]), round(float(scale[0]), 3)
    (10.0, 0.556)
    >>> z = (np.array([[10.0, 30, 31, 29]]) - med[:, None]) / scale[:, None]
    >>> float(np.round(peak(z)[0], 1)), int(onset(z, 4.0)[0])
    (36.0, 1)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["baseline", "level", "onset", "peak", "UP", "TWO_SIDED"]

UP = ("errors", "latency-mean", "latency-p50", "latency-p90", "latency-p99", "cpu", "mem", "gc", "cpu-per-request",
      "cpu-pressure")
TWO_SIDED = ("rate",)


def baseline(x: np.ndarray, metrics: Sequence[str], counts: np.ndarray | None,
             step_s: float) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Median and floored robust scale of each row of ``x`` ([series, time]) named by ``metrics``.

    ``counts`` (requests per bin of each series' entity, or None) sets the floors of errors and rates.
    """
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            med = np.nanmedian(x, axis=1)
            q75, q25 = np.nanpercentile(x, 75, axis=1), np.nanpercentile(x, 25, axis=1)
    scale = (q75 - q25) / 1.349
    n = np.nan_to_num(counts if counts is not None else np.full(len(metrics), np.nan), nan=0.0)
    floor = np.empty(len(metrics))
    absmed = np.abs(np.nan_to_num(med))
    for i, m in enumerate(metrics):
        if m == "errors":  # binomial noise of the share at the bin's volume, from a base share of >= 1/2n
            p0 = max(absmed[i], 0.5 / n[i]) if n[i] > 0 else 0.05
            floor[i] = max(np.sqrt(p0 * (1 - p0) / n[i]), 0.003) if n[i] > 0 else 0.05
        elif m == "rate":
            floor[i] = max(0.05 * absmed[i], np.sqrt(max(absmed[i] * step_s, 1.0)) / step_s)
        elif m.startswith("latency"):
            floor[i] = max(0.05 * absmed[i], 0.05)
        elif m == "cpu":
            floor[i] = 0.02 if absmed[i] <= 1.5 else 2.0
        elif m == "cpu-pressure":
            floor[i] = max(0.1 * absmed[i], 0.005)
        elif m == "gc":
            floor[i] = max(0.02 * absmed[i], 1.0)
        else:
            floor[i] = max(0.02 * absmed[i], 1e-9)
    return med, np.fmax(np.nan_to_num(scale, nan=0.0), floor)


def peak(z: np.ndarray, k: int = 2) -> np.ndarray:
    """The ``k``-th largest value of each row (NaN ignored; -inf when fewer than ``k`` values)."""
    zz = np.where(np.isnan(z), -np.inf, z)
    if zz.shape[1] < k:
        return np.full(zz.shape[0], -np.inf)
    return np.partition(zz, -k, axis=1)[:, -k]


def level(z: np.ndarray, recent: int = 6) -> np.ndarray:
    """Median of each row's last ``recent`` values (NaN ignored; 0 when none)."""
    tail = z[:, -recent:]
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            out = np.nanmedian(tail, axis=1)
    return np.nan_to_num(out, nan=0.0)


def onset(z: np.ndarray, thr: float, sustain: int = 2) -> np.ndarray:
    """Index of the first bin starting ``sustain`` bins in a row at or above ``thr``, per row; -1 if none."""
    hit = np.nan_to_num(z, nan=-np.inf) >= thr
    run = hit.copy()
    for j in range(1, sustain):
        run[:, : -j or None] &= hit[:, j:]
        run[:, z.shape[1] - j :] = False
    first = np.argmax(run, axis=1)
    return np.where(run.any(axis=1), first, -1)
