"""Streaming statistics, vectorized over key slots.

:mod:`vigil.stats.timewindow` holds the exact per-key sliding event-time window (count, mean and
standard deviation of the last N seconds of each key) that the statistical detectors and rules
build on; :mod:`vigil.stats.ew` the exponentially weighted mean/variance kernels (with their merge),
:mod:`vigil.stats.ring` per-slot ring buffers (rolling median/MAD, rolling mean/variance),
:mod:`vigil.stats.slots` growing, resetting and slicing per-slot state arrays, and
:mod:`vigil.stats.special` small vectorized special functions. The ``@njit`` helpers are shared by the
detectors' numba kernels, so each statistic is written once.
"""

from vigil.stats.ew import EWMoments
from vigil.stats.ring import SortedRings
from vigil.stats.timewindow import TimeWindowState

__all__ = ["EWMoments", "SortedRings", "TimeWindowState"]
