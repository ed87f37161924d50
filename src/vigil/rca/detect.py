"""When did the incident start? A plain detector over the services' latency and error series.

:func:`detect_incident` scores each service's ``latency-p90`` (else ``latency-p50``/``latency-mean``) and
``errors`` against the ``baseline_s`` before ``from_ms`` (robust z, the floors of :mod:`~vigil.rca.scores`)
and returns the end of the first run of ``sustain`` bins at or above ``z_thr`` on any service: the time an
alert with a ``for: sustain x step`` clause would fire. It stands in for Vigil's detectors when the RCA
prototype runs offline without an alert time.

Examples:
    >>> import numpy as np
    >>> from vigil.rca.frame import MetricFrame
    >>> lat = np.r_[np.full(150, 10.0) + np.sin(np.arange(150)), np.full(30, 60.0)]
    >>> f = MetricFrame(np.arange(180, dtype=np.int64) * 10_000, ["api"], ["latency-p90"], lat[None, None, :])
    >>> detect_incident(f, from_ms=140 * 10_000)
    1530000
"""

from __future__ import annotations

import numpy as np

from vigil.rca.frame import MetricFrame
from vigil.rca.scores import baseline, onset

__all__ = ["detect_incident"]


def detect_incident(frame: MetricFrame, from_ms: int, *, baseline_s: float = 1200.0, z_thr: float = 6.0,
                    sustain: int = 3, until_ms: int | None = None) -> int | None:  # fmt: skip
    """The alert time of the first sustained latency or error change at or after ``from_ms`` (or None)."""
    ts = frame.ts_ms
    step = frame.step_ms or 10_000
    base = (ts >= from_ms - int(baseline_s * 1000)) & (ts < from_ms)  # (shorter when the data starts later)
    scan = (ts >= from_ms) & (ts < (until_ms if until_ms is not None else np.iinfo(np.int64).max))
    if base.sum() < 3 or not scan.any():
        return None
    rows, names, counts = [], [], []
    for s in frame.services:
        rate = frame.series(s, "rate")
        n = float(np.nanmedian(rate[base])) * step / 1000.0 if rate is not None else np.nan
        for group in (("latency-p90", "latency-p50", "latency-mean"), ("errors",)):
            for m in group:
                x = frame.series(s, m)
                if x is not None:
                    rows.append(x)
                    names.append(m)
                    counts.append(n)
                    break
    if not rows:
        return None
    X = np.array(rows)
    med, scale = baseline(X[:, base], names, np.array(counts), step / 1000.0)
    z = (X[:, scan] - med[:, None]) / scale[:, None]
    first = onset(z, z_thr, sustain)
    hit = first[first >= 0]
    if not len(hit):
        return None
    return int(ts[scan][int(hit.min())]) + sustain * step
