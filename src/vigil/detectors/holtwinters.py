"""Online additive Holt-Winters per key, and the detector that scores its one-step-ahead residuals.

Per key: a level ``l``, a trend ``b`` and a ring of ``p`` seasonal offsets ``s`` (``p`` = the seasonal period in
events). For the ``n``-th value of a key (counting from 0), with phase ``h = n mod p``:

* forecast, made *before* the value is learned: ``yhat = l + b + s[h]``;
* learning ``x`` (classic Holt-Winters component form)::

      l' = alpha * (x - s[h]) + (1 - alpha) * (l + b)
      b' = beta * (l' - l) + (1 - beta) * b
      s[h] = gamma * (x - l') + (1 - gamma) * s[h]      (skipped when p = 1: no season)

**Warm-up.** A key buffers its first ``W`` finite values, forecasting nothing (NaN). ``W = warmup_periods * p``
when the period is given, ``W = (warmup_periods + 1) * max_period`` when it is learned. When the buffer is full:

1. *Period (if not given)* — the buffer is detrended by a least-squares line and its autocorrelation
   ``r(k)`` computed for lags 1 … ``max_period + 1``. If no lag in [2, ``max_period``] reaches
   ``min_autocorr``, the key has no season (``p = 1``: Holt's linear trend). Otherwise ``p`` is the
   *smallest* lag in [2, ``max_period``] that is a local peak (``r(k) > r(k-1)`` and ``r(k) >= r(k+1)``) and
   reaches 0.9 × the highest ``r``; the smallest such lag, so a multiple of the period (48 for 24) does not
   win, and a peak, so a slowly decaying (trending or autoregressive) series does not pass as seasonal.
   Without such a peak, ``p = 1``.
2. *Initial state* from the last ``K = W // p`` whole periods of the buffer: ``b`` = least-squares slope of
   the period means (per event; 0 if ``K = 1``), ``s`` = the mean detrended deviation of each phase from its
   period's mean (centred to sum 0), ``l`` = the level at the buffer's last event. No replay is needed.

The period counts *events*, not time: feed a regular series (one value per key per step, e.g. a window
aggregate). Event times are ignored. NaN/inf values are neither scored nor learned and do not advance the phase.

The per-key state is struct-of-arrays indexed by slot: ``st[slot] = (level, trend, n, period)``, the seasonal
ring ``season[slot, :p]`` and the warm-up buffer ``buf[slot, :W]``; one numba kernel walks the batch in arrival
order across all keys.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numba
import numpy as np

from vigil.detectors.base import register
from vigil.detectors.forecast import ForecastResidual, register_forecaster
from vigil.stats.slots import SlotArrays, grow_rows_pow2, reset_rows
from vigil.types import Float64Array, Int32Array, Int64Array


@numba.njit(cache=True)
def acf_period(buf: Any, max_period: int, min_autocorr: float) -> int:  # pragma: no cover - compiled
    """The seasonal period of ``buf`` by its autocorrelation (rule in the module docstring); 1 = none."""
    w = buf.shape[0]
    tbar = (w - 1) / 2.0
    ybar = 0.0
    for t in range(w):
        ybar += buf[t]
    ybar /= w
    sxy = 0.0
    sxx = 0.0
    for t in range(w):
        sxy += (t - tbar) * (buf[t] - ybar)
        sxx += (t - tbar) * (t - tbar)
    slope = sxy / sxx if sxx > 0.0 else 0.0
    y = np.empty(w, np.float64)
    c0 = 0.0
    scale = 0.0
    for t in range(w):
        y[t] = buf[t] - ybar - slope * (t - tbar)
        c0 += y[t] * y[t]
        scale += buf[t] * buf[t]
    if c0 <= 1e-12 * scale or c0 == 0.0:  # a straight line: nothing periodic left
        return 1
    top = min(max_period + 1, w - 1)
    r = np.full(max_period + 2, -np.inf)
    for lag in range(1, top + 1):
        acc = 0.0
        for t in range(w - lag):
            acc += y[t] * y[t + lag]
        r[lag] = acc / c0
    best = -np.inf
    for lag in range(2, max_period + 1):
        best = max(best, r[lag])
    if best < min_autocorr:
        return 1
    for lag in range(2, max_period + 1):
        if r[lag] >= 0.9 * best and r[lag] > r[lag - 1] and r[lag] >= r[lag + 1]:
            return lag
    return 1


@numba.njit(cache=True)
def hw_init(buf: Any, p: int, season: Any) -> tuple[float, float]:  # pragma: no cover - compiled
    """Initial (level, trend) at the buffer's last event, and ``season[:p]`` by phase (module docstring)."""
    w = buf.shape[0]
    k_periods = w // p
    s0 = w - k_periods * p
    means = np.zeros(k_periods, np.float64)
    for k in range(k_periods):
        acc = 0.0
        for j in range(p):
            acc += buf[s0 + k * p + j]
        means[k] = acc / p
    trend = 0.0
    if k_periods >= 2:
        kbar = (k_periods - 1) / 2.0
        mbar = 0.0
        for k in range(k_periods):
            mbar += means[k]
        mbar /= k_periods
        sxy = 0.0
        sxx = 0.0
        for k in range(k_periods):
            sxy += (k - kbar) * (means[k] - mbar)
            sxx += (k - kbar) * (k - kbar)
        trend = sxy / sxx / p
    season[:] = 0.0
    centre = (p - 1) / 2.0
    total = 0.0
    for j in range(p):
        acc = 0.0
        for k in range(k_periods):
            acc += buf[s0 + k * p + j] - means[k] - trend * (j - centre)
        season[(s0 + j) % p] = acc / k_periods
        total += acc / k_periods
    for j in range(p):
        season[j] -= total / p
    level = means[k_periods - 1] + trend * centre
    return level, trend


@numba.njit(cache=True)
def hw_kernel(
    slots: Any, x: Any, alpha: float, beta: float, gamma: float, period: int, max_period: int, min_autocorr: float,
    st: Any, season: Any, buf: Any, out: Any,
) -> None:  # pragma: no cover - compiled  # fmt: skip
    """One-step forecasts ``out`` for the rows (NaN while warming up), learning each finite row after it."""
    warm = buf.shape[1]
    for i in range(slots.shape[0]):
        k = slots[i]
        v = x[i]
        n = int(st[k, 2])
        if n < warm:
            out[i] = np.nan
            if math.isfinite(v):
                buf[k, n] = v
                n += 1
                st[k, 2] = n
                if n == warm:
                    p = period if period > 0 else acf_period(buf[k], max_period, min_autocorr)
                    level, trend = hw_init(buf[k], p, season[k])
                    st[k, 0] = level
                    st[k, 1] = trend
                    st[k, 3] = p
            continue
        p = int(st[k, 3])
        h = n % p
        s = season[k, h]
        level = st[k, 0]
        trend = st[k, 1]
        out[i] = level + trend + s
        if math.isfinite(v):
            new_level = alpha * (v - s) + (1.0 - alpha) * (level + trend)
            st[k, 1] = beta * (new_level - level) + (1.0 - beta) * trend
            st[k, 0] = new_level
            if p > 1:
                season[k, h] = gamma * (v - new_level) + (1.0 - gamma) * s
            st[k, 2] = n + 1


def _unit(name: str, value: float, low_open: bool) -> float:
    ok = (0.0 < value <= 1.0) if low_open else (0.0 <= value <= 1.0)
    if not ok:
        raise ValueError(f"`{name}` must be in {'(0' if low_open else '[0'}, 1]; got {value!r}")
    return float(value)


@register_forecaster
class HoltWintersForecaster(SlotArrays):
    """Additive Holt-Winters one-step-ahead forecasts per key (the recursion and warm-up of the module docstring).

    Examples:
        >>> f = HoltWintersForecaster(period=2, alpha=0.5, beta=0.1, gamma=0.5)
        >>> x = np.array([1.0, 3.0, 1.0, 3.0, 1.0, 3.0])
        >>> f.predict_learn_many(np.zeros(6, np.int32), np.arange(6), x).tolist()
        [nan, nan, nan, nan, 1.0, 3.0]
    """

    kind: ClassVar[str] = "holt_winters"
    _slot_arrays: ClassVar[tuple[str, ...]] = ("st", "season", "buf")

    def __init__(
        self,
        *,
        period: int | None = None,
        alpha: float = 0.1,
        beta: float = 0.01,
        gamma: float = 0.1,
        warmup_periods: int = 2,
        max_period: int = 48,
        min_autocorr: float = 0.3,
    ) -> None:
        if period is not None and (isinstance(period, bool) or int(period) != period or period < 1):
            raise ValueError(f"`period` must be an int >= 1 (events) or null to learn it; got {period!r}")
        if int(max_period) != max_period or max_period < 2:
            raise ValueError(f"`max_period` must be an int >= 2 (events); got {max_period!r}")
        if int(warmup_periods) != warmup_periods or warmup_periods < 1:
            raise ValueError(f"`warmup_periods` must be an int >= 1; got {warmup_periods!r}")
        if not -1.0 <= min_autocorr <= 1.0:
            raise ValueError(f"`min_autocorr` must be in [-1, 1]; got {min_autocorr!r}")
        self.period = None if period is None else int(period)
        self.alpha = _unit("alpha", alpha, True)
        self.beta = _unit("beta", beta, False)
        self.gamma = _unit("gamma", gamma, False)
        self.warmup_periods = int(warmup_periods)
        self.max_period = int(max_period)
        self.min_autocorr = float(min_autocorr)
        width = self.period if self.period is not None else self.max_period
        self.warmup_len = self.warmup_periods * width if self.period is not None else (self.warmup_periods + 1) * width
        self.st = np.zeros((0, 4), np.float64)  # level, trend, values learned, period (0 until known)
        self.season = np.zeros((0, width), np.float64)
        self.buf = np.zeros((0, self.warmup_len), np.float64)

    def predict_learn_many(self, slots: Int32Array, ts_ms: Int64Array, x: Float64Array) -> Float64Array:
        if len(slots):
            self._grow_slots(int(slots.max()) + 1)
        out = np.empty(len(slots), np.float64)
        hw_kernel(slots, np.asarray(x, np.float64), self.alpha, self.beta, self.gamma, self.period or 0,
                  self.max_period, self.min_autocorr, self.st, self.season, self.buf, out)  # fmt: skip
        return out

    def periods(self, slots: Int32Array) -> np.ndarray:
        """The seasonal period of each slot (0 while it is still warming up; 1 = no season)."""
        slots = np.asarray(slots, np.int64)
        out = np.zeros(len(slots), np.int64)
        known = slots < self.st.shape[0]
        out[known] = self.st[slots[known], 3].astype(np.int64)
        return out

    def params(self) -> dict[str, Any]:
        return {
            "period": self.period, "alpha": self.alpha, "beta": self.beta, "gamma": self.gamma,
            "warmup_periods": self.warmup_periods, "max_period": self.max_period, "min_autocorr": self.min_autocorr,
        }  # fmt: skip

    def snapshot(self) -> dict[str, Any]:
        return {"st": self.st.copy(), "season": self.season.copy(), "buf": self.buf.copy()}

    def restore(self, state: dict[str, Any]) -> None:
        self.st = np.array(state["st"], np.float64).reshape(-1, 4)
        self.season = np.array(state["season"], np.float64).reshape(-1, self.season.shape[1])
        self.buf = np.array(state["buf"], np.float64).reshape(-1, self.warmup_len)

    def _grow_slots(self, top: int) -> None:
        self.st = grow_rows_pow2(self.st, top)
        self.season = grow_rows_pow2(self.season, top)
        self.buf = grow_rows_pow2(self.buf, top)

    def reset_slots(self, slots: Int32Array) -> None:
        for arr in (self.st, self.season, self.buf):
            reset_rows(arr, slots)

    def __repr__(self) -> str:
        return "HoltWintersForecaster(" + ", ".join(f"{k}={v!r}" for k, v in self.params().items()) + ")"


@register
class HoltWinters(ForecastResidual):
    """Per-key additive Holt-Winters; flags values far from the one-step-ahead forecast.

    ``ForecastResidual`` with a :class:`HoltWintersForecaster` (see the module docstring for the recursion, the
    warm-up and the period-learning rule).

    Args:
        field: the value to score (one value per key per step: the period counts events).
        period: seasonal period in events; ``None`` learns it per key from the warm-up values.
        alpha: level smoothing, in (0, 1].
        beta: trend smoothing, in [0, 1].
        gamma: seasonal smoothing, in [0, 1].
        threshold: flag when the residual z-score ``|z|`` exceeds it.
        warmup_periods: whole periods buffered before the first forecast (``+ 1`` periods of ``max_period``
            when the period is learned).
        max_period: the longest period considered when learning it.
        min_autocorr: autocorrelation a period must reach; below it the key has no season.
        residual_halflife: half-life, in events, of the residuals' EW mean and variance.
        min_residuals: residuals seen before a key's rows are scored.
        protect: don't learn flagged residuals into the residual statistics.

    Score:
        residual z ``|r - mean_r| / std_r`` with ``r = x - forecast`` and the key's EW mean and standard
        deviation of earlier residuals; calibrated: Gaussian two-sided tail ``erf(|z| / sqrt 2)``.

    State:
        per key level, trend, count and period (4 numbers), ``period`` (or ``max_period``) seasonal offsets,
        the warm-up buffer (``W`` values) and 3 residual statistics.

    Warm-up:
        ``W`` finite values (the buffer, see above), then ``min_residuals`` residuals; score 0, no flag before.

    Examples:
        >>> det = HoltWinters(field="v", period=4, threshold=5, min_residuals=8)
        >>> rng = np.random.default_rng(0)
        >>> x = 10 + np.tile([0.0, 3.0, 0.0, -3.0], 10) + 0.1 * rng.standard_normal(40)
        >>> x[-1] += 4.0
        >>> v = det.process_many(np.zeros(40, np.int32), np.arange(40), {"v": x})
        >>> int(v.ready.argmax()), np.flatnonzero(v.flag).tolist()
        (16, [39])
    """

    kind: ClassVar[str] = "holt_winters"
    state_version: ClassVar[int] = 1

    def __init__(
        self,
        *,
        field: str = "value",
        period: int | None = None,
        alpha: float = 0.1,
        beta: float = 0.01,
        gamma: float = 0.1,
        threshold: float = 4.0,
        warmup_periods: int = 2,
        max_period: int = 48,
        min_autocorr: float = 0.3,
        residual_halflife: float = 100.0,
        min_residuals: int = 10,
        protect: bool = True,
    ) -> None:
        fc = HoltWintersForecaster(
            period=period, alpha=alpha, beta=beta, gamma=gamma, warmup_periods=warmup_periods,
            max_period=max_period, min_autocorr=min_autocorr,
        )  # fmt: skip
        super().__init__(field=field, forecaster=fc, threshold=threshold, residual_halflife=residual_halflife,
                         min_residuals=min_residuals, protect=protect)  # fmt: skip
        self.hw = fc

    def params(self) -> dict[str, Any]:
        p = super().params()
        p.pop("forecaster")
        return {**p, **self.hw.params()}

    @classmethod
    def _test_params(cls) -> list[dict[str, Any]]:
        return [
            {"field": "value", "period": 4, "residual_halflife": 30, "min_residuals": 5},
            {"field": "value", "max_period": 6, "alpha": 0.2, "min_residuals": 5},
        ]

    def describe(self, stats: dict[str, Any]) -> str:
        return super().describe(stats) + " [Holt-Winters]"
