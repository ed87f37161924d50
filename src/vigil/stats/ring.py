"""Per-slot ring buffers of a key's last N values: rolling median/MAD and rolling mean/variance kernels.

Each key slot owns one row of fixed-width 2-D arrays (struct of arrays, rows indexed by slot):

* **Sorted rings** (:class:`SortedRings`, :func:`ring_push`, :func:`median_scale`): the last ``window``
  values twice, in arrival order (to know which one leaves) and sorted (to read order statistics).
  Learning a value removes the oldest from the sorted row and inserts the new one (binary search plus one
  shift each), O(window) with no allocation. :func:`median_scale` reads the median and a robust scale
  (MAD / 0.6745, else the scaled mean absolute deviation) of a sorted row. Used by
  :class:`~vigil.detectors.RobustZScore`.
* **Rolling moments** (:func:`rolling_moments_push`): the exact mean and sum of squared deviations of a
  ring's last ``width`` values, updated in O(1) per value (Welford while filling, a replace update when
  full) and recomputed exactly once per ``width`` values so rounding never drifts. Used by the anomaly
  likelihood (:class:`~vigil.detectors.likelihood.AnomalyLikelihood`).

The ``@njit`` helpers are called from the detectors' numba kernels (one compiled loop per batch).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numba
import numpy as np

from vigil.stats.slots import SlotArrays

MAD_TO_Z = 0.6745  # MAD / 0.6745 estimates the sd of Gaussian data
MEAN_AD_TO_SD = 1.2533141373155003  # sqrt(pi / 2): mean absolute deviation -> sd of Gaussian data


@numba.njit(cache=True)
def median_scale(s: Any, n: int) -> tuple[float, float]:
    """Median and scale (MAD / 0.6745, else 1.2533 * mean absolute deviation, else 0) of sorted ``s[:n]``."""
    h = n // 2
    med = s[h] if n % 2 == 1 else (s[h - 1] + s[h]) / 2.0
    # deviations grow outwards from the median on both sides: merge the two runs up to the middle one
    r = np.searchsorted(s[:n], med)
    lo = r - 1
    lower = 0.0
    upper = 0.0
    for t in range(h + 1):
        if lo >= 0 and (r >= n or med - s[lo] <= s[r] - med):
            d = med - s[lo]
            lo -= 1
        else:
            d = s[r] - med
            r += 1
        if t == h - 1:
            lower = d
        upper = d
    mad = upper if n % 2 == 1 else (lower + upper) / 2.0
    if mad > 0.0:
        return med, mad / MAD_TO_Z
    total = 0.0
    for j in range(n):
        total += abs(s[j] - med)
    return med, MEAN_AD_TO_SD * (total / n)


@numba.njit(cache=True, inline="always")
def ring_push(ring: Any, srt: Any, pos: Any, cnt: Any, k: int, v: float) -> None:
    """Learn ``v`` into slot ``k``'s window: the oldest value leaves when the window is full."""
    size = ring.shape[1]
    n = cnt[k]
    s = srt[k]
    if n == size:  # the window is full: the oldest value leaves the sorted row
        old = ring[k, pos[k]]
        j = np.searchsorted(s[:n], old)
        for t in range(j, n - 1):
            s[t] = s[t + 1]
        n -= 1
    j = np.searchsorted(s[:n], v, side="right")
    for t in range(n, j, -1):
        s[t] = s[t - 1]
    s[j] = v
    cnt[k] = n + 1
    ring[k, pos[k]] = v
    pos[k] = (pos[k] + 1) % size


@numba.njit(cache=True, inline="always")
def rolling_moments_push(row: Any, n: int, mu: float, m2: float, v: float) -> tuple[float, float]:
    """Add ``v`` (the ``n``-th value, from 0) to a ring row's rolling mean ``mu`` and squared deviations ``m2``.

    ``v`` must be exactly representable in the row's dtype (the statistics use the stored value). Returns the
    new ``(mu, m2)``; the caller counts ``n``.
    """
    width = row.shape[0]
    pos = n % width
    if n < width:
        d = v - mu
        mu += d / (n + 1)
        m2 += d * (v - mu)
    else:
        old = float(row[pos])
        new_mu = mu + (v - old) / width
        m2 += (v - old) * (v - new_mu + old - mu)
        mu = new_mu
    row[pos] = v
    if (n + 1) % width == 0:  # once per window, recompute exactly: no drift from the sliding updates
        acc = 0.0
        for j in range(width):
            acc += float(row[j])
        mu = acc / width
        m2 = 0.0
        for j in range(width):
            d = float(row[j]) - mu
            m2 += d * d
    return mu, m2


@numba.njit(cache=True)
def _rings_kernel(slots: Any, x: Any, ring: Any, srt: Any, pos: Any, cnt: Any, out_n: Any, out_med: Any,
                  out_scale: Any) -> None:  # fmt: skip
    for i in range(slots.shape[0]):
        k = slots[i]
        n = cnt[k]
        out_n[i] = n
        out_med[i] = np.nan
        out_scale[i] = np.nan
        if n > 0:
            out_med[i], out_scale[i] = median_scale(srt[k], n)
        if np.isfinite(x[i]):
            ring_push(ring, srt, pos, cnt, k, x[i])


class SortedRings(SlotArrays):
    """The last ``window`` values of many keys, in arrival order and sorted (see the module docstring).

    Args:
        window: values kept per key.
        capacity: initial number of key slots (grows on demand).

    Examples:
        >>> r = SortedRings(window=3)
        >>> n, med, scale = r.update(np.zeros(5, np.int32), np.array([5.0, 1.0, 3.0, 100.0, 2.0]))
        >>> n.tolist(), med.tolist()   # before each row; the 4th row's median is of (5, 1, 3)
        ([0, 1, 2, 3, 3], [nan, 5.0, 3.0, 3.0, 3.0])
        >>> r.export_slots(np.array([0]))[0]["ring"].tolist()   # slices: see vigil.stats.slots
        [100.0, 2.0, 3.0]
    """

    _slot_arrays: ClassVar[tuple[str, ...]] = ("ring", "srt", "pos", "cnt")

    def __init__(self, window: int, capacity: int = 16) -> None:
        if int(window) != window or window < 1:
            raise ValueError(f"`window` must be an int >= 1; got {window!r}")
        self.window = int(window)
        self.ring = np.zeros((capacity, self.window), np.float64)
        self.srt = np.zeros((capacity, self.window), np.float64)
        self.pos = np.zeros(capacity, np.int64)
        self.cnt = np.zeros(capacity, np.int64)

    def _grow_slots(self, top: int) -> None:
        cap = self.cnt.shape[0]
        if top <= cap:
            return
        new = max(top, 2 * cap)
        for name in ("ring", "srt", "pos", "cnt"):
            old = getattr(self, name)
            grown = np.zeros((new, *old.shape[1:]), old.dtype)
            grown[:cap] = old
            setattr(self, name, grown)

    def update(self, slots: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per row, the key's count, median and robust scale before the row; then learn it (if finite)."""
        slots = np.asarray(slots, np.int64)
        if len(slots):
            self._grow_slots(int(slots.max()) + 1)
        m = len(slots)
        n, med, scale = np.empty(m, np.int64), np.empty(m), np.empty(m)
        _rings_kernel(slots, np.asarray(x, np.float64), self.ring, self.srt, self.pos, self.cnt, n, med, scale)
        return n, med, scale

    def reset_slots(self, slots: np.ndarray) -> None:
        """Forget ``slots``."""
        slots = np.asarray(slots, np.int64)
        slots = slots[slots < self.cnt.shape[0]]
        for name in ("ring", "srt", "pos", "cnt"):
            getattr(self, name)[slots] = 0
