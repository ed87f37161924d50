"""Rolling z-score over an exact per-key event-time window, with a longer baseline as fallback.

The seed's detector: per key, the mean and standard deviation of the values in the last
``window`` of event time (default 60 s); a value more than ``threshold`` standard deviations from
the mean is anomalous.

A one-minute window often holds too few of one key's events for a meaningful deviation (a card
holder pays a few times a day, not a minute). So:

1. when the window holds at least ``min_count`` earlier events (and their spread is not zero), the
   score is the window z-score;
2. otherwise, if ``baseline_halflife`` is set, the score is the z-score against the key's long
   baseline — an exponentially weighted mean and variance over its history (half-life counted in
   events), used once it has seen ``min_baseline`` events;
3. otherwise the key is not ready: score 0, no flag (never alert on too little history).

``stats["basis"]`` says which one scored a row (1 = window, 2 = baseline, 0 = not ready).

With ``protect=True`` a flagged value is not learned into the window or the baseline, so an attack
does not teach the detector that attacks are normal (river's ``protect_anomaly_detector``).
``transform="log"`` scores ``log(x)`` instead of ``x``, for positive, right-skewed values such as
payment amounts (a purchase 3× the usual size is as odd as one a third of it).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numba
import numpy as np

from vigil.detectors.base import UNSCORABLE, BaseDetector, Verdicts, duration_param, register
from vigil.detectors.explain import one_feature
from vigil.stats.ew import ew_step, halflife_alpha
from vigil.stats.special import two_sided_tail
from vigil.stats.timewindow import CNT, TimeWindowState, evict, insert, load, mean_std, reserve, store
from vigil.types import Contribution, Float64Array, Int32Array, Int64Array


@numba.njit(cache=True)
def _zscore_kernel(
    slots: Any, ts: Any, x: Any, start: int, window_ms: int, min_count: int,
    threshold: float, protect: bool, alpha: float, min_baseline: int,
    ist: Any, fst: Any, meta: Any, pool_ts: Any, pool_x: Any,
    ew: Any,
    out_z: Any, out_score: Any, out_cal: Any, out_basis: Any, out_n: Any, out_mean: Any, out_std: Any,
) -> int:  # fmt: skip
    for i in range(start, slots.shape[0]):
        k = slots[i]
        v = x[i]
        off, c, h, n, newest, sh, a, b, ev = load(k, ist, fst)
        if not math.isfinite(v):  # NaN (missing) or inf: neither scored nor learned, the state is left alone
            out_n[i] = n
            out_z[i] = 0.0
            out_score[i] = 0.0
            out_cal[i] = 0.0
            out_basis[i] = 0
            out_mean[i] = np.nan
            out_std[i] = np.nan
            continue
        ok, off, c, h = reserve(off, c, h, n, meta, pool_ts, pool_x)
        if not ok:
            return i
        h, n, newest, sh, a, b, ev = evict(off, c, h, n, newest, sh, a, b, ev, ts[i], window_ms, pool_ts, pool_x)
        mean, std = mean_std(n, sh, a, b)
        out_n[i] = n
        z = 0.0
        basis = 0
        if n >= min_count and std > 0.0:
            z = (v - mean) / std
            basis = 1
        elif alpha > 0.0 and ew[k, 0] >= min_baseline and ew[k, 2] > 0.0:
            mean = ew[k, 1]
            std = math.sqrt(ew[k, 2])
            z = (v - mean) / std
            basis = 2
        out_z[i] = z
        out_score[i] = abs(z)
        # calibrated: two-sided Gaussian tail probability, erf(|z| / sqrt 2)
        out_cal[i] = two_sided_tail(z)
        out_basis[i] = basis
        out_mean[i] = mean
        out_std[i] = std
        if not (protect and basis > 0 and abs(z) > threshold):
            n, sh, a, b, ev = insert(off, c, h, n, newest, sh, a, b, ev, ts[i], v, window_ms, pool_ts, pool_x)
            if alpha > 0.0:
                # exponentially weighted mean/variance; the first events use 1/n so the start is unbiased
                ew[k, 0], ew[k, 1], ew[k, 2] = ew_step(ew[k, 0], ew[k, 1], ew[k, 2], v, alpha)
        store(k, ist, fst, off, c, h, n, newest, sh, a, b, ev)
    return slots.shape[0]


@register
class SlidingZScore(BaseDetector):
    """Per-key z-score of a field over an exact sliding event-time window (see the module docstring).

    Args:
        field: the value to score.
        window: window length (duration string or ms int), e.g. ``"60s"``.
        threshold: flag when ``|z|`` exceeds it.
        min_count: earlier events the window must hold before its z-score is used.
        baseline_halflife: half-life, in events, of the fallback baseline; ``None`` disables it.
        min_baseline: events the baseline must have seen before it scores.
        protect: don't learn flagged values.
        transform: ``"none"`` or ``"log"`` (score ``log(x)``; a value <= 0 is not scored, and is counted as
            such in the verdict's ``unscorable`` stat, which the run's statistics sum per step).

    Score: ``|z|``; calibrated: Gaussian two-sided tail probability. State: the window entries and
    three baseline numbers per key. Warm-up: ``min_count`` events in the window, or ``min_baseline``
    events of history.

    Examples:
        >>> det = SlidingZScore(field="amount", window="60s", threshold=3, min_count=5, baseline_halflife=None)
        >>> slots = np.zeros(8, np.int32); ts = np.arange(8) * 1000
        >>> v = det.process_many(slots, ts, {"amount": np.array([10, 11, 9, 10, 11, 9, 10, 50.0])})
        >>> v.flag.tolist(), v.ready.tolist()[4:6], round(float(v.score[-1]), 1)
        ([False, False, False, False, False, False, False, True], [False, True], 49.0)
    """

    kind: ClassVar[str] = "sliding_zscore"
    state_version: ClassVar[int] = 1
    _slot_arrays: ClassVar[tuple[str, ...]] = ("ew",)
    _slot_parts: ClassVar[tuple[str, ...]] = ("win",)

    def __init__(
        self,
        *,
        field: str = "value",
        window: str | int = "60s",
        threshold: float = 3.0,
        min_count: int = 10,
        baseline_halflife: float | None = 50.0,
        min_baseline: int = 5,
        protect: bool = True,
        transform: str = "none",
    ) -> None:
        self.field = field
        self.window = window
        self.window_ms = duration_param("window", window)
        if threshold <= 0:
            raise ValueError(f"`threshold` must be > 0; got {threshold!r}")
        if min_count < 2:
            raise ValueError(f"`min_count` must be >= 2 (a deviation needs two values); got {min_count!r}")
        if baseline_halflife is not None and baseline_halflife <= 0:
            raise ValueError(f"`baseline_halflife` must be > 0 events or null; got {baseline_halflife!r}")
        if transform not in ("none", "log"):
            raise ValueError(f"`transform` must be 'none' or 'log'; got {transform!r}")
        self.threshold = float(threshold)
        self.min_count = int(min_count)
        self.baseline_halflife = baseline_halflife
        self.min_baseline = int(min_baseline)
        self.protect = bool(protect)
        self.transform = transform
        self.fields = (field,)
        self._alpha = 0.0 if baseline_halflife is None else halflife_alpha(baseline_halflife)
        self.win = TimeWindowState(self.window_ms)
        self.ew = np.zeros((self.win.capacity, 3), np.float64)  # count, mean, variance

    def params(self) -> dict[str, Any]:
        return {
            "field": self.field, "window": self.window, "threshold": self.threshold,
            "min_count": self.min_count, "baseline_halflife": self.baseline_halflife,
            "min_baseline": self.min_baseline, "protect": self.protect, "transform": self.transform,
        }  # fmt: skip

    @classmethod
    def _test_params(cls) -> list[dict[str, Any]]:
        return [
            {"field": "value", "window": "10s", "min_count": 3, "baseline_halflife": None},
            {"field": "value", "window": "5s", "min_count": 4, "baseline_halflife": 20, "transform": "log"},
        ]

    def _grow_slots(self, top: int) -> None:
        self.win.ensure_capacity(top)
        if self.ew.shape[0] < self.win.capacity:
            grown = np.zeros((self.win.capacity, 3), np.float64)
            grown[: self.ew.shape[0]] = self.ew
            self.ew = grown

    def process_many(self, slots: Int32Array, ts_ms: Int64Array, X: dict[str, Float64Array]) -> Verdicts:
        x = raw = np.asarray(X[self.field], np.float64)
        if self.transform == "log":
            with np.errstate(divide="ignore", invalid="ignore"):
                x = np.where(x > 0, np.log(x), np.nan)
        if len(slots):
            self._grow_slots(int(slots.max()) + 1)
        m = len(slots)
        z = np.empty(m, np.float64)
        score = np.empty(m, np.float64)
        calibrated = np.empty(m, np.float64)
        basis = np.empty(m, np.int8)
        n = np.empty(m, np.int64)
        mean = np.empty(m, np.float64)
        std = np.empty(m, np.float64)
        w = self.win
        done = 0
        while True:
            done = _zscore_kernel(
                slots, ts_ms, x, done, self.window_ms, self.min_count, self.threshold, self.protect,
                self._alpha, self.min_baseline, w.ist, w.fst, w.meta, w.pool_ts, w.pool_x, self.ew,
                z, score, calibrated, basis, n, mean, std,
            )  # fmt: skip
            if done >= m:
                break
            w.grow_pool()
        ready = basis > 0
        flag = ready & (score > self.threshold)
        stats = {"value": raw, "z": z, "count": n.astype(np.float64), "mean": mean, "std": std,
                 "basis": basis.astype(np.float64)}  # fmt: skip
        if self.transform == "log":  # a value <= 0 has no log: it is not scored, and says so (counted, not silent)
            stats[UNSCORABLE] = (np.isnan(x) & ~np.isnan(raw)).astype(np.float64)
        return Verdicts(score, calibrated, flag, flag, ready, stats)

    def describe(self, stats: dict[str, Any]) -> str:
        """E.g. "amount 412 is 5.2 sd above the usual 83.1 (baseline of 42 events)"."""
        z = float(stats.get("z", 0.0))
        mean, std = float(stats.get("mean", np.nan)), float(stats.get("std", np.nan))
        usual = math.exp(mean) if self.transform == "log" else mean
        where = (f"last {_fmt_ms(self.window_ms)}, {int(stats.get('count', 0))} events"
                 if stats.get("basis") == 1 else "long baseline")  # fmt: skip
        side = "above" if z > 0 else "below"
        spread = f"x{math.exp(std):.2f}" if self.transform == "log" else f"{std:.3g}"
        return (f"{self.field} {stats.get('value', float('nan')):.6g} is {abs(z):.1f} sd {side} the usual "
                f"{usual:.4g} (sd {spread}, {where})")

    def explain_many(self, X: dict[str, Float64Array], v: Verdicts, rows: np.ndarray) -> list[list[Contribution]]:
        """The field, scored by its signed z; expected: the window (or baseline) mean, in the field's units."""
        s = v.stats
        mean = np.exp(s["mean"]) if self.transform == "log" else s["mean"]
        return one_feature(self.field, rows, s["z"], s["value"], mean, v.flag)

    def reset_slots(self, slots: Int32Array) -> None:
        self.win.reset_slots(slots)
        slots = slots[slots < self.ew.shape[0]]
        self.ew[slots] = 0.0

    def snapshot(self) -> dict[str, Any]:
        return {"window": self.win.snapshot(), "ew": self.ew.copy()}

    def _restore(self, state: dict[str, Any]) -> None:
        self.win = TimeWindowState.from_snapshot(state["window"])
        ew = np.asarray(state["ew"], np.float64)
        self.ew = np.zeros((max(self.win.capacity, ew.shape[0]), 3), np.float64)
        self.ew[: ew.shape[0]] = ew

    @property
    def keys_in_state(self) -> int:
        """Keys with events in their window."""
        return int((self.win.ist[:, CNT] > 0).sum())


def _fmt_ms(ms: int) -> str:
    if ms % 3_600_000 == 0:
        return f"{ms // 3_600_000}h"
    if ms % 60_000 == 0:
        return f"{ms // 60_000}m"
    if ms % 1000 == 0:
        return f"{ms // 1000}s"
    return f"{ms}ms"
