"""Streaming statistics, vectorized over key slots.

:mod:`vigil.stats.timewindow` holds the exact per-key sliding event-time window (count, mean and
standard deviation of the last N seconds of each key) that the statistical detectors and rules
build on; :mod:`vigil.stats.special` small vectorized special functions.
"""

from vigil.stats.timewindow import TimeWindowState

__all__ = ["TimeWindowState"]
