"""BARO's root-cause step alone (Pham et al., FSE 2024), as a baseline for :func:`~vigil.rca.rank.rank_causes`."""

from __future__ import annotations

import numpy as np

from vigil.rca.frame import EDGE, MetricFrame
from vigil.rca.rank import Cause, RcaParams, RcaResult

__all__ = ["rank_baro"]


def rank_baro(frame: MetricFrame, at_ms: int, params: RcaParams | None = None) -> RcaResult:
    """BARO's root-cause step alone, as a baseline to compare with.

    Every series is scaled by the baseline's median and IQR (scikit-learn's ``RobustScaler``: an IQR of 0
    scales by 1) and scored by its largest value in the anomaly window; services are ranked by their best
    series. No noise floors, no propagation, no graph.
    """
    p = params or RcaParams()
    a0 = at_ms - int(p.lookback_s * 1000)
    base = (frame.ts_ms >= a0 - int(p.baseline_s * 1000)) & (frame.ts_ms < a0)
    win = (frame.ts_ms >= a0) & (frame.ts_ms < at_ms)
    best: dict[str, tuple[float, str]] = {}
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            for i, e in enumerate(frame.entities):
                if EDGE in e:
                    continue
                X = frame.values[i]
                med = np.nanmedian(X[:, base], axis=1)
                iqr = np.nanpercentile(X[:, base], 75, axis=1) - np.nanpercentile(X[:, base], 25, axis=1)
                iqr = np.where((iqr > 0) & np.isfinite(iqr), iqr, 1.0)
                z = np.nanmax((X[:, win] - med[:, None]) / iqr[:, None], axis=1)
                z = np.where(np.isfinite(z), z, -np.inf)
                j = int(np.argmax(z))
                best[e] = (float(z[j]), frame.metrics[j])
    order = sorted(best, key=lambda s: (-best[s][0], s))
    top = max((best[s][0] for s in order), default=1.0) or 1.0
    causes = [Cause(s, "latency" if best[s][1].startswith("latency") else "errors" if best[s][1] == "errors"
                    else "saturation", best[s][0] / top, {"metric": best[s][1], "z": round(best[s][0], 1)})
              for s in order]  # fmt: skip
    return RcaResult(causes, at_ms, (a0, at_ms), (a0 - int(p.baseline_s * 1000), a0))
