"""Exponentially weighted mean and variance per key slot: the kernels the detectors share, and their merge.

Two forms, both updated one value at a time in arrival order (prequential callers read the moments
*before* learning a value):

* **Smoothing weight with a 1/n start** (``alpha``; state ``(n, mean, var)``). The n-th learned value
  gets weight ``w = max(alpha, 1/n)``::

      d = x - mean;   mean += w d;   var = (1 - w) (var + w d²)

  While ``1/n > alpha`` this is the ordinary running mean and (population) variance, so the start is
  unbiased; afterwards the usual EW statistics with smoothing weight ``alpha``. Used by
  :class:`~vigil.detectors.SlidingZScore`'s long baseline, the residual statistics of
  :class:`~vigil.detectors.ForecastResidual` and the mean of :class:`~vigil.detectors.forecast.EWForecaster`.
* **West's weighted incremental form** (decay factor ``f`` per learned value; state rows
  ``(n, W, W2, mean, var)`` with ``W`` the total weight and ``W2`` the sum of squared weights). The new value
  has weight 1 and earlier ones are multiplied by ``f``. The standard deviation carries the
  reliability-weights correction ``W² / (W² - W2)``, the ordinary sample standard deviation while the weights
  are equal. Used by :class:`~vigil.detectors.EWZScore` and :class:`~vigil.detectors.CUSUM`.

The ``@njit`` helpers are inlined into the detectors' numba kernels, so each detector still walks its batch
in one compiled loop; the arithmetic is written once, here, in the order the detectors always used (their
results are bit-for-bit those of the per-detector copies this module replaced).

:func:`merge` pools two summaries (e.g. two partitions of one key, or keys rolled up for RCA) by their
weights: exact for equal weights (the 1/n phase, or ``f = 1``), the weight-pooled approximation otherwise.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numba
import numpy as np

from vigil.stats.slots import SlotArrays
from vigil.types import Float64Array


def halflife_alpha(halflife: float) -> float:
    """Smoothing weight of an EW statistic whose half-life is ``halflife`` events.

    Examples:
        >>> halflife_alpha(1.0)
        0.5
    """
    return 1.0 - 2.0 ** (-1.0 / float(halflife))


def halflife_decay(halflife: float) -> float:
    """Weight kept by earlier values per new value, for a half-life of ``halflife`` values (``1 - alpha``).

    Examples:
        >>> halflife_decay(2.0) ** 2
        0.5000000000000001
    """
    return 2.0 ** (-1.0 / float(halflife))


@numba.njit(cache=True, inline="always")
def ew_step(n: float, mean: float, var: float, x: float, alpha: float) -> tuple[float, float, float]:
    """Learn ``x`` into ``(n, mean, var)`` (smoothing weight ``max(alpha, 1/n)``); returns the new triple."""
    n = n + 1.0
    w = max(alpha, 1.0 / n)
    d = x - mean
    inc = w * d
    return n, mean + inc, (1.0 - w) * (var + d * inc)


@numba.njit(cache=True, inline="always")
def ew_mean_step(n: float, mean: float, x: float, alpha: float) -> tuple[float, float]:
    """The mean-only :func:`ew_step`: learn ``x`` into ``(n, mean)``."""
    n = n + 1.0
    return n, mean + max(alpha, 1.0 / n) * (x - mean)


# West's form: rows of ``st`` hold (count, W, W2, mean, var) in columns 0..4 (a detector may keep more columns).


@numba.njit(cache=True, inline="always")
def west_std(st: Any, k: int) -> float:
    """Standard deviation of row ``k`` with the reliability-weights correction; 0 while undefined."""
    w_sum = st[k, 1]
    den = w_sum * w_sum - st[k, 2]
    return math.sqrt(st[k, 4] * w_sum * w_sum / den) if den > 0.0 else 0.0


@numba.njit(cache=True, inline="always")
def west_learn(st: Any, k: int, v: float, f: float) -> None:
    """Learn ``v`` into row ``k``, earlier weights multiplied by ``f`` (the decay)."""
    w_sum = f * st[k, 1] + 1.0
    w = 1.0 / w_sum
    d = v - st[k, 3]
    st[k, 0] += 1.0
    st[k, 1] = w_sum
    st[k, 2] = f * f * st[k, 2] + 1.0
    st[k, 3] += w * d
    st[k, 4] = (1.0 - w) * (st[k, 4] + w * d * d)


@numba.njit(cache=True)
def _ew_update_kernel(slots: Any, x: Any, alpha: float, st: Any, out_mean: Any, out_std: Any) -> None:
    for i in range(slots.shape[0]):
        k = slots[i]
        out_mean[i] = st[k, 1] if st[k, 0] > 0.0 else np.nan
        out_std[i] = math.sqrt(st[k, 2]) if st[k, 0] > 0.0 else np.nan
        v = x[i]
        if math.isfinite(v):
            st[k, 0], st[k, 1], st[k, 2] = ew_step(st[k, 0], st[k, 1], st[k, 2], v, alpha)


def merge(
    w_a: Float64Array, mean_a: Float64Array, var_a: Float64Array, w_b: Float64Array, mean_b: Float64Array,
    var_b: Float64Array,
) -> tuple[Float64Array, Float64Array, Float64Array]:  # fmt: skip
    """Pool two weighted summaries ``(W, mean, var)`` (population variance) into one, element-wise.

    Chan et al.'s parallel formula with weights: exact for the pooled values when the summaries are of
    disjoint, equally weighted histories. A side with weight 0 leaves the other unchanged.

    Examples:
        >>> a, b = np.array([1.0, 2.0, 3.0]), np.array([10.0, 20.0])
        >>> w, m, v = merge(np.array([3.0]), np.array([a.mean()]), np.array([a.var()]),
        ...                 np.array([2.0]), np.array([b.mean()]), np.array([b.var()]))
        >>> both = np.r_[a, b]
        >>> bool(np.isclose(m[0], both.mean()) and np.isclose(v[0], both.var())), float(w[0])
        (True, 5.0)
    """
    w = w_a + w_b
    with np.errstate(invalid="ignore", divide="ignore"):
        share_b = np.where(w > 0.0, w_b / np.where(w > 0.0, w, 1.0), 0.0)
    d = mean_b - mean_a
    mean = mean_a + share_b * d
    var = (1.0 - share_b) * var_a + share_b * var_b + share_b * (1.0 - share_b) * d * d
    return w, mean, var


class EWMoments(SlotArrays):
    """EW mean and variance of many keys (smoothing weight with a 1/n start), struct of arrays by slot.

    Args:
        halflife: half-life in learned values.
        capacity: initial number of key slots (grows on demand).

    Examples:
        >>> ew = EWMoments(halflife=10)
        >>> mean, std = ew.update(np.array([0, 0, 0, 1], np.int32), np.array([1.0, 3.0, np.nan, 5.0]))
        >>> mean.tolist()   # before each row; NaN rows are not learned
        [nan, 1.0, 2.0, nan]
        >>> ew.export_slots(np.array([0]))[0]["st"].tolist()
        [2.0, 2.0, 1.0]
    """

    _slot_arrays: ClassVar[tuple[str, ...]] = ("st",)

    def __init__(self, halflife: float, capacity: int = 64) -> None:
        if not halflife > 0:
            raise ValueError(f"`halflife` must be > 0 values; got {halflife!r}")
        self.halflife = float(halflife)
        self.alpha = halflife_alpha(self.halflife)
        self.st = np.zeros((capacity, 3), np.float64)  # n, mean, var

    def _grow_slots(self, top: int) -> None:
        if self.st.shape[0] < top:
            grown = np.zeros((max(top, 2 * self.st.shape[0]), 3), np.float64)
            grown[: self.st.shape[0]] = self.st
            self.st = grown

    def update(self, slots: np.ndarray, x: Float64Array) -> tuple[Float64Array, Float64Array]:
        """Per row, the key's mean and standard deviation before the row (NaN if empty); then learn it."""
        slots = np.asarray(slots, np.int64)
        if len(slots):
            self._grow_slots(int(slots.max()) + 1)
        mean, std = np.empty(len(slots)), np.empty(len(slots))
        _ew_update_kernel(slots, np.asarray(x, np.float64), self.alpha, self.st, mean, std)
        return mean, std

    def merge_slots(self, into: int, other: int) -> None:
        """Pool slot ``other``'s summary into slot ``into`` (see :func:`merge`); ``other`` is left as it was."""
        self._grow_slots(max(into, other) + 1)
        a, b = self.st[into], self.st[other]
        cap = 1.0 / self.alpha  # the effective weight of a summary: n, at most 1/alpha
        w, m, v = merge(np.array([min(a[0], cap)]), a[1:2], a[2:3], np.array([min(b[0], cap)]), b[1:2], b[2:3])
        self.st[into] = [a[0] + b[0], m[0], v[0]]

    def reset_slots(self, slots: np.ndarray) -> None:
        """Forget ``slots``."""
        slots = np.asarray(slots, np.int64)
        self.st[slots[slots < self.st.shape[0]]] = 0.0
