"""Page-Hinkley test per key: detect a drift of a key's mean, with river's semantics.

This is river's ``drift.PageHinkley`` (mode ``"both"``), run for every key at once. Per key, on each
value ``x``:

    n += 1;  mean += (x - mean) / n                 (the running mean, including x)
    dev = x - mean
    up   = alpha * up   + dev - delta;   up_min   = min(up_min, up)
    down = alpha * down + dev + delta;   down_max = max(down_max, down)

and once ``n >= min_instances`` a drift is detected when ``up - up_min > threshold`` (the mean went
up) or ``down_max - down > threshold`` (it went down). After a drift the key's test restarts from
scratch (river resets at the next update; resetting right away is the same for every later row).

``delta`` and ``threshold`` are in the units of the field (river's defaults suit values of order 1,
such as error rates); scale them to the field, or feed a standardized value.

As in river, the row's own value enters the statistic before the test: the score says whether the
key's stream *up to and including* this row shows a change (still causal: nothing later is used).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numba
import numpy as np

from vigil.detectors.base import BaseDetector, Verdicts, register
from vigil.detectors.explain import one_feature, signed_larger
from vigil.types import Contribution, Float64Array, Int32Array, Int64Array

_NCOL = 6  # per-key state: n, mean, up, up_min, down, down_max
_FRESH = np.array([0.0, 0.0, 0.0, np.inf, 0.0, -1.0])  # river's initial values (down_max starts at -1)


@numba.njit(cache=True)
def _ph_kernel(
    slots: Any, x: Any, delta: float, threshold: float, alpha: float, min_instances: int, st: Any, fresh: Any,
    out_score: Any, out_ready: Any, out_flag: Any, out_up: Any, out_down: Any, out_mean: Any, out_n: Any,
) -> None:  # fmt: skip
    for i in range(slots.shape[0]):
        k = slots[i]
        v = x[i]
        out_score[i] = 0.0
        out_ready[i] = False
        out_flag[i] = False
        out_up[i] = 0.0
        out_down[i] = 0.0
        out_mean[i] = np.nan
        out_n[i] = st[k, 0]
        if not math.isfinite(v):  # missing or inf: neither scored nor learned
            continue
        n = st[k, 0] + 1.0
        mean = st[k, 1] + (1.0 / n) * (v - st[k, 1])
        dev = v - mean
        up = alpha * st[k, 2] + dev - delta
        down = alpha * st[k, 4] + dev + delta
        up_min = min(st[k, 3], up)
        down_max = max(st[k, 5], down)
        out_mean[i] = mean
        out_n[i] = n
        if n >= min_instances:
            t_up = up - up_min
            t_down = down_max - down
            out_ready[i] = True
            out_up[i] = t_up
            out_down[i] = t_down
            out_score[i] = max(t_up, t_down)
            if t_up > threshold or t_down > threshold:
                out_flag[i] = True
                st[k, :] = fresh  # drift reported: the test restarts on the next value
                continue
        st[k, 0] = n
        st[k, 1] = mean
        st[k, 2] = up
        st[k, 3] = up_min
        st[k, 4] = down
        st[k, 5] = down_max


@register
class PageHinkley(BaseDetector):
    """Per-key two-sided Page-Hinkley drift test, river's semantics (see the module docstring).

    Args:
        field: the value to watch.
        delta: the magnitude of change tolerated per event (field units).
        threshold: the change detection threshold, lambda (field units).
        alpha: forgetting factor of the cumulative sums (1 = no forgetting).
        min_instances: events a key's test must have seen before it can detect (including this one).

    Score:
        ``max(up - up_min, down_max - down)``, the Page-Hinkley statistic after this row, in field
        units; flagged when it exceeds ``threshold``. Calibrated: ``score / (score + threshold)``, a
        monotone squashing that is 0.5 exactly at the threshold, so ``flag`` ⇔ ``calibrated > 0.5``.

    State:
        Per key six numbers: count, running mean, the two cumulative sums and their extremes.

    Warm-up:
        ``min_instances`` values since the key's start or its last detected drift (counting the
        row). Before that rows get score 0, no flag. NaN and inf values are neither scored nor
        learned. A drift fires once: the test restarts after it, so ``fire`` equals ``flag``.

    Examples:
        >>> det = PageHinkley(field="err", delta=0.005, threshold=5, min_instances=30)
        >>> err = np.concatenate([np.tile([0.0, 1.0], 50), np.tile([4.0, 5.0], 10)])
        >>> v = det.process_many(np.zeros(120, np.int32), np.arange(120) * 1000, {"err": err})
        >>> np.flatnonzero(v.flag).tolist(), round(float(v.calibrated[v.flag][0]), 2)
        ([101], 0.64)
    """

    kind: ClassVar[str] = "page_hinkley"
    state_version: ClassVar[int] = 1
    _slot_arrays: ClassVar[tuple[str, ...]] = ("st",)

    def __init__(
        self,
        *,
        field: str = "value",
        delta: float = 0.005,
        threshold: float = 50.0,
        alpha: float = 1 - 0.0001,
        min_instances: int = 30,
    ) -> None:
        if not delta >= 0:
            raise ValueError(f"`delta` must be >= 0; got {delta!r}")
        if not threshold > 0:
            raise ValueError(f"`threshold` must be > 0; got {threshold!r}")
        if not 0 < alpha <= 1:
            raise ValueError(f"`alpha` (forgetting factor) must be in (0, 1]; got {alpha!r}")
        if min_instances < 1:
            raise ValueError(f"`min_instances` must be >= 1; got {min_instances!r}")
        self.field = field
        self.delta = float(delta)
        self.threshold = float(threshold)
        self.alpha = float(alpha)
        self.min_instances = int(min_instances)
        self.fields = (field,)
        self.st = np.tile(_FRESH, (64, 1))

    def params(self) -> dict[str, Any]:
        return {"field": self.field, "delta": self.delta, "threshold": self.threshold, "alpha": self.alpha,
                "min_instances": self.min_instances}  # fmt: skip

    @classmethod
    def _test_params(cls) -> list[dict[str, Any]]:
        return [
            {"field": "value", "delta": 0.5, "threshold": 15, "min_instances": 10},
            {"field": "value", "delta": 1.0, "threshold": 25, "alpha": 0.99, "min_instances": 5},
        ]

    def process_many(self, slots: Int32Array, ts_ms: Int64Array, X: dict[str, Float64Array]) -> Verdicts:
        x = np.asarray(X[self.field], np.float64)
        m = len(slots)
        if m:
            self._grow_slots(int(slots.max()) + 1)
        score, up, down, mean, n = (np.empty(m, np.float64) for _ in range(5))
        ready = np.empty(m, np.bool_)
        flag = np.empty(m, np.bool_)
        _ph_kernel(slots, x, self.delta, self.threshold, self.alpha, self.min_instances, self.st, _FRESH,
                   score, ready, flag, up, down, mean, n)  # fmt: skip
        calibrated = score / (score + self.threshold)
        return Verdicts(score, calibrated, flag, flag.copy(), ready,
                        {"value": x, "up": up, "down": down, "mean": mean, "count": n})  # fmt: skip

    def describe(self, stats: dict[str, Any]) -> str:
        """E.g. "error_rate drifted up: Page-Hinkley 61.2 > 50 (running mean 0.48 over 212 events)"."""
        up, down = float(stats.get("up", 0.0)), float(stats.get("down", 0.0))
        return (
            f"{self.field} drifted {'up' if up >= down else 'down'}: Page-Hinkley {max(up, down):.3g} > "
            f"{self.threshold:g} (running mean {float(stats.get('mean', np.nan)):.4g} over "
            f"{int(stats.get('count', 0))} events)"
        )

    def explain_many(self, X: dict[str, Float64Array], v: Verdicts, rows: np.ndarray) -> list[list[Contribution]]:
        """The field, scored by the Page-Hinkley statistic (negative for a drift down); expected: the running mean."""
        s = v.stats
        return one_feature(self.field, rows, signed_larger(s["up"], s["down"]), s["value"], s["mean"], v.flag)

    def _grow_slots(self, top: int) -> None:
        if self.st.shape[0] < top:
            old = self.st
            self.st = np.tile(_FRESH, (max(top, 2 * old.shape[0]), 1))
            self.st[: old.shape[0]] = old

    def reset_slots(self, slots: Int32Array) -> None:
        self.st[slots[slots < self.st.shape[0]]] = _FRESH

    def snapshot(self) -> dict[str, Any]:
        return {"st": self.st.copy()}

    def _restore(self, state: dict[str, Any]) -> None:
        self.st = np.array(state["st"], np.float64).reshape(-1, _NCOL)
