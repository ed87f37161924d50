"""Exponentially weighted z-score: per key, an EW mean and variance that forget old events.

Each key keeps an exponentially weighted mean and variance of its values, updated with West's
weighted incremental algorithm (Finch, "Incremental calculation of weighted mean and variance",
2009). The new event always has weight 1; the weight of earlier events decays either

* per event (``halflife`` in events: after ``halflife`` more events an event weighs half), or
* per event time (``halflife_time``, e.g. ``"5m"``: an event ``5m`` older weighs half), which
  suits keys whose events arrive irregularly (a quiet night does not count as many events).

The total weight ``W`` and the sum of squared weights ``W2`` are tracked too, so the variance is
bias-corrected with the reliability-weights factor ``W² / (W² - W2)``: for the first events (all of
similar weight) it is the ordinary sample variance, not a shrunken one. This makes the start
unbiased without a special case. Decaying all earlier weights by the same factor leaves that factor
unchanged, so in time mode the score does not depend on how long ago the key was last seen.

Out-of-order events in time mode: an event older than the key's newest one decays nothing (its
elapsed time counts as 0); the key's clock never goes back.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numba
import numpy as np

from vigil.detectors.base import BaseDetector, Verdicts, duration_param, register
from vigil.detectors.explain import one_feature
from vigil.stats.ew import halflife_decay
from vigil.stats.ew import west_learn as ew_learn
from vigil.stats.ew import west_std as ew_std
from vigil.stats.slots import grow_rows
from vigil.stats.special import two_sided_tail
from vigil.types import Contribution, Float64Array, Int32Array, Int64Array

_NCOL = 5  # per-key state columns: events learned, total weight W, sum of squared weights W2, mean, variance


@numba.njit(cache=True)
def _ewz_kernel(
    slots: Any, ts: Any, x: Any, decay: float, halflife_ms: float, min_count: int, threshold: float,
    protect: bool, st: Any, last_ts: Any,
    out_z: Any, out_score: Any, out_cal: Any, out_ready: Any, out_mean: Any, out_std: Any, out_n: Any,
) -> None:  # fmt: skip
    for i in range(slots.shape[0]):
        k = slots[i]
        v = x[i]
        cnt = st[k, 0]
        out_n[i] = cnt
        out_z[i] = 0.0
        out_score[i] = 0.0
        out_cal[i] = 0.0
        out_ready[i] = False
        out_mean[i] = np.nan
        out_std[i] = np.nan
        if not math.isfinite(v):  # missing or inf: neither scored nor learned
            continue
        mean = st[k, 3]
        std = ew_std(st, k)
        z = 0.0
        ready = cnt >= min_count and std > 0.0
        if ready:
            z = (v - mean) / std
            out_z[i] = z
            out_score[i] = abs(z)
            out_cal[i] = two_sided_tail(z)
            out_ready[i] = True
        if cnt > 0:
            out_mean[i] = mean
            out_std[i] = std
        if protect and ready and abs(z) > threshold:
            continue  # a flagged value does not teach the baseline that it is normal
        if halflife_ms > 0.0:
            f = 0.0
            if cnt > 0:
                dt = float(ts[i] - last_ts[k])
                f = 2.0 ** (-max(dt, 0.0) / halflife_ms)
            if cnt == 0 or ts[i] > last_ts[k]:
                last_ts[k] = ts[i]
        else:
            f = decay
        ew_learn(st, k, v, f)


@register
class EWZScore(BaseDetector):
    """Per-key z-score against an exponentially weighted mean and variance (see the module docstring).

    Args:
        field: the value to score.
        halflife: half-life in events of the key's history; the default (when neither half-life is
            given) is 50 events.
        halflife_time: half-life in event time instead (duration string or ms int, e.g. ``"5m"``);
            give either this or ``halflife``, not both.
        threshold: flag when ``|z|`` exceeds it.
        min_count: events a key must have learned before it is scored (>= 2).
        protect: don't learn flagged values (river's ``protect_anomaly_detector``), so an attack does
            not become the new normal. The price: a genuine level shift stays flagged until the key
            is reset; use a change detector (``cusum``, ``page_hinkley``) to catch those.

    Score:
        ``|z|`` with ``z = (x - mean) / std`` from the key's state before the row; calibrated: the
        Gaussian two-sided tail probability ``erf(|z| / sqrt 2)``, so ``threshold = 4`` corresponds
        to a calibrated 0.99994.

    State:
        Per key five numbers (events learned, total weight, total squared weight, mean, variance)
        plus, in time mode, the key's newest event time.

    Warm-up:
        A key is ready once it has learned ``min_count`` events and its variance is positive; before
        that rows get score 0, no flag. NaN and inf values are neither scored nor learned.
        ``fire`` equals ``flag``.

    Examples:
        >>> det = EWZScore(field="ms", halflife=20, threshold=4, min_count=5)
        >>> v = det.process_many(np.zeros(8, np.int32), np.arange(8) * 1000,
        ...                      {"ms": np.array([10, 11, 9, 10, 11, 10, 9, 30.0])})
        >>> v.ready.tolist(), v.flag.tolist()[-2:], round(float(v.score[-1]), 1)
        ([False, False, False, False, False, True, True, True], [False, True], 24.4)
    """

    kind: ClassVar[str] = "ew_zscore"
    state_version: ClassVar[int] = 1
    _slot_arrays: ClassVar[tuple[str, ...]] = ("st", "last_ts")

    def __init__(
        self,
        *,
        field: str = "value",
        halflife: float | None = None,
        halflife_time: str | int | None = None,
        threshold: float = 4.0,
        min_count: int = 10,
        protect: bool = True,
    ) -> None:
        if halflife is not None and halflife_time is not None:
            raise ValueError(
                f"give either `halflife` (events) or `halflife_time` (event time), not both; "
                f"got halflife={halflife!r}, halflife_time={halflife_time!r}"
            )
        if halflife is not None and not halflife > 0:
            raise ValueError(f"`halflife` must be > 0 events; got {halflife!r}")
        if not threshold > 0:
            raise ValueError(f"`threshold` must be > 0; got {threshold!r}")
        if min_count < 2:
            raise ValueError(f"`min_count` must be >= 2 (a deviation needs two values); got {min_count!r}")
        self.field = field
        self.halflife = halflife
        self.halflife_time = halflife_time
        self.halflife_ms = 0 if halflife_time is None else duration_param("halflife_time", halflife_time)
        events = 50.0 if halflife is None else float(halflife)
        self._decay = halflife_decay(events)  # weight kept by earlier events per new event
        self.threshold = float(threshold)
        self.min_count = int(min_count)
        self.protect = bool(protect)
        self.fields = (field,)
        self.st = np.zeros((64, _NCOL), np.float64)
        self.last_ts = np.zeros(64, np.int64)

    def params(self) -> dict[str, Any]:
        return {
            "field": self.field, "halflife": self.halflife, "halflife_time": self.halflife_time,
            "threshold": self.threshold, "min_count": self.min_count, "protect": self.protect,
        }  # fmt: skip

    @classmethod
    def _test_params(cls) -> list[dict[str, Any]]:
        return [
            {"field": "value", "halflife": 20, "threshold": 3, "min_count": 5},
            {"field": "value", "halflife_time": "30s", "threshold": 3.5, "min_count": 8, "protect": False},
        ]

    def process_many(self, slots: Int32Array, ts_ms: Int64Array, X: dict[str, Float64Array]) -> Verdicts:
        x = np.asarray(X[self.field], np.float64)
        m = len(slots)
        if m:
            self._grow_slots(int(slots.max()) + 1)
        z, score, cal, mean, std, n = (np.empty(m, np.float64) for _ in range(6))
        ready = np.empty(m, np.bool_)
        _ewz_kernel(
            slots, np.asarray(ts_ms, np.int64), x, self._decay, float(self.halflife_ms), self.min_count,
            self.threshold, self.protect, self.st, self.last_ts, z, score, cal, ready, mean, std, n,
        )  # fmt: skip
        flag = ready & (score > self.threshold)
        return Verdicts(score, cal, flag, flag, ready, {"value": x, "z": z, "mean": mean, "std": std, "count": n})

    def _grow_slots(self, top: int) -> None:
        self.st = grow_rows(self.st, top)
        self.last_ts = grow_rows(self.last_ts, top)

    def describe(self, stats: dict[str, Any]) -> str:
        """E.g. "latency_ms 930 is 6.1 sd above the usual 120 (sd 41.2, EW over ~50 events)"."""
        z = float(stats.get("z", 0.0))
        side = "above" if z > 0 else "below"
        span = f"~{self.halflife or 50:g} events" if self.halflife_time is None else f"half-life {self.halflife_time}"
        return (
            f"{self.field} {float(stats.get('value', np.nan)):.6g} is {abs(z):.1f} sd {side} the usual "
            f"{float(stats.get('mean', np.nan)):.4g} (sd {float(stats.get('std', np.nan)):.3g}, EW {span})"
        )

    def explain_many(self, X: dict[str, Float64Array], v: Verdicts, rows: np.ndarray) -> list[list[Contribution]]:
        """The field, scored by its signed z; expected: the key's EW mean."""
        s = v.stats
        return one_feature(self.field, rows, s["z"], s["value"], s["mean"], v.flag)

    def reset_slots(self, slots: Int32Array) -> None:
        slots = slots[slots < self.st.shape[0]]
        self.st[slots] = 0.0
        self.last_ts[slots] = 0

    def snapshot(self) -> dict[str, Any]:
        return {"st": self.st.copy(), "last_ts": self.last_ts.copy()}

    def _restore(self, state: dict[str, Any]) -> None:
        self.st = np.array(state["st"], np.float64).reshape(-1, _NCOL)
        self.last_ts = np.array(state["last_ts"], np.int64)
