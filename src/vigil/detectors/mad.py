"""Robust z-score: distance from the median of the key's last N values, in units of their MAD.

Per key, the last ``window`` values are kept twice: in arrival order (a ring buffer, to know which
value leaves the window) and sorted (to read the median directly). Both are rows of 2-D arrays
``[slots, window]``. Learning a value removes the oldest from the sorted row and inserts the new one
(binary search plus one shift each); the MAD is the median of ``|v - median|``, read from the sorted
row by merging its two halves outwards from the median. Every step is O(window) per event, with no
allocation, which is fine for windows up to about a thousand.

The robust z-score (Iglewicz & Hoaglin) is ``0.6745 (x - median) / MAD``: for Gaussian data
``MAD / 0.6745`` estimates the standard deviation, but unlike it a few gross outliers in the window
move neither the median nor the MAD.

**MAD = 0.** More than half the window holds one value (counters, prices on a tick grid). Then the
scale falls back to the mean absolute deviation from the median, ``1.2533 * mean|v - median|``
(consistent with the standard deviation for Gaussian data, as in IBM SPSS's modified z-score). If
that is also 0 — every value in the window is the same — there is no scale and the key is not
ready for that row (score 0, no flag) rather than flagging every different value as infinitely
surprising.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numba
import numpy as np

from vigil.detectors.base import BaseDetector, Verdicts, register
from vigil.detectors.explain import one_feature
from vigil.stats.ring import SortedRings, median_scale, ring_push
from vigil.stats.special import two_sided_tail
from vigil.types import Contribution, Float64Array, Int32Array, Int64Array


@numba.njit(cache=True)
def _mad_kernel(
    slots: Any, x: Any, min_count: int, ring: Any, srt: Any, pos: Any, cnt: Any,
    out_z: Any, out_score: Any, out_cal: Any, out_ready: Any, out_med: Any, out_scale: Any, out_n: Any,
) -> None:  # fmt: skip
    for i in range(slots.shape[0]):
        k = slots[i]
        v = x[i]
        n = cnt[k]
        s = srt[k]
        out_n[i] = n
        out_z[i] = 0.0
        out_score[i] = 0.0
        out_cal[i] = 0.0
        out_ready[i] = False
        out_med[i] = np.nan
        out_scale[i] = np.nan
        if not math.isfinite(v):  # missing or inf: neither scored nor learned
            continue
        if n >= min_count:
            med, scale = median_scale(s, n)
            out_med[i] = med
            out_scale[i] = scale
            if scale > 0.0:
                z = (v - med) / scale
                out_z[i] = z
                out_score[i] = abs(z)
                out_cal[i] = two_sided_tail(z)
                out_ready[i] = True
        ring_push(ring, srt, pos, cnt, k, v)


@register
class RobustZScore(BaseDetector):
    """Per-key robust z-score against the median and MAD of the key's last ``window`` values.

    Args:
        field: the value to score.
        window: how many of the key's latest values (a count, not a time span) form the baseline.
        threshold: flag when the robust ``|z|`` exceeds it (3.5 is Iglewicz & Hoaglin's advice).
        min_count: values the window must hold before the key is scored (2 <= min_count <= window).

    Score:
        ``|z|`` with ``z = 0.6745 (x - median) / MAD`` over the window before the row (see the module
        docstring for MAD = 0); calibrated: the Gaussian two-sided tail probability
        ``erf(|z| / sqrt 2)``.

    State:
        Per key the last ``window`` values twice (arrival order and sorted), a write position and
        a count: ``16 * window`` bytes per key.

    Warm-up:
        ``min_count`` values in the window and a positive scale; before that rows get score 0, no
        flag. NaN and inf values are neither scored nor learned. Every finite value is learned, also
        flagged ones: the median does not need protecting. ``fire`` equals ``flag``.

    Examples:
        >>> det = RobustZScore(field="ms", window=10, threshold=3.5, min_count=5)
        >>> v = det.process_many(np.zeros(8, np.int32), np.arange(8) * 1000,
        ...                      {"ms": np.array([10, 12, 500, 11, 9, 10, 11, 40.0])})
        >>> v.ready.tolist(), v.flag.tolist()[-3:], round(float(v.stats["median"][-1]), 1)
        ([False, False, False, False, False, True, True, True], [False, False, True], 11.0)
    """

    kind: ClassVar[str] = "robust_zscore"
    state_version: ClassVar[int] = 1
    _slot_parts: ClassVar[tuple[str, ...]] = ("win",)

    def __init__(self, *, field: str = "value", window: int = 50, threshold: float = 3.5, min_count: int = 10) -> None:
        if isinstance(window, bool) or not isinstance(window, int | np.integer) or window < 2:
            raise ValueError(f"`window` is a count of events and must be an int >= 2; got {window!r}")
        if not threshold > 0:
            raise ValueError(f"`threshold` must be > 0; got {threshold!r}")
        if not 2 <= min_count <= window:
            raise ValueError(f"`min_count` must be between 2 and `window` ({window}); got {min_count!r}")
        self.field = field
        self.window = int(window)
        self.threshold = float(threshold)
        self.min_count = int(min_count)
        self.fields = (field,)
        self.win = SortedRings(self.window)

    def params(self) -> dict[str, Any]:
        return {"field": self.field, "window": self.window, "threshold": self.threshold, "min_count": self.min_count}

    @classmethod
    def _test_params(cls) -> list[dict[str, Any]]:
        return [
            {"field": "value", "window": 20, "threshold": 3.5, "min_count": 5},
            {"field": "value", "window": 7, "threshold": 3.0, "min_count": 7},
        ]

    def process_many(self, slots: Int32Array, ts_ms: Int64Array, X: dict[str, Float64Array]) -> Verdicts:
        x = np.asarray(X[self.field], np.float64)
        m = len(slots)
        w = self.win
        if m:
            w._grow_slots(int(slots.max()) + 1)
        z, score, cal, med, scale, n = (np.empty(m, np.float64) for _ in range(6))
        ready = np.empty(m, np.bool_)
        _mad_kernel(slots, x, self.min_count, w.ring, w.srt, w.pos, w.cnt, z, score, cal, ready, med, scale, n)
        flag = ready & (score > self.threshold)
        return Verdicts(score, cal, flag, flag, ready, {"value": x, "z": z, "median": med, "scale": scale, "count": n})

    def describe(self, stats: dict[str, Any]) -> str:
        """E.g. "amount 930 is 6.1 robust sd above the median 120 of the last 50 values (scale 41.2)"."""
        z = float(stats.get("z", 0.0))
        side = "above" if z > 0 else "below"
        return (
            f"{self.field} {float(stats.get('value', np.nan)):.6g} is {abs(z):.1f} robust sd {side} the median "
            f"{float(stats.get('median', np.nan)):.4g} of the last {int(stats.get('count', 0))} values "
            f"(scale {float(stats.get('scale', np.nan)):.3g})"
        )

    def explain_many(self, X: dict[str, Float64Array], v: Verdicts, rows: np.ndarray) -> list[list[Contribution]]:
        """The field, scored by its signed robust z; expected: the median of the key's window."""
        s = v.stats
        return one_feature(self.field, rows, s["z"], s["value"], s["median"], v.flag)

    def reset_slots(self, slots: Int32Array) -> None:
        self.win.reset_slots(slots)

    def snapshot(self) -> dict[str, Any]:
        w = self.win
        return {"ring": w.ring.copy(), "sorted": w.srt.copy(), "pos": w.pos.copy(), "count": w.cnt.copy()}

    def _restore(self, state: dict[str, Any]) -> None:
        w = self.win
        w.ring = np.array(state["ring"], np.float64).reshape(-1, self.window)
        w.srt = np.array(state["sorted"], np.float64).reshape(-1, self.window)
        w.pos = np.array(state["pos"], np.int64)
        w.cnt = np.array(state["count"], np.int64)
