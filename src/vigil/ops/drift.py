"""Input drift: how far recent inputs have moved from the data a model was trained on (PSI per feature).

At training time :func:`quantile_bins` cuts each feature into (by default 10) quantile bins and stores the
bin edges and the share of training rows in each bin (``training_stats[feature]["bin_edges"]`` and
``["bin_fractions"]`` in a model's ``meta.json``, see :mod:`vigil.models.training`). While serving,
:class:`DriftMonitor` keeps the last ``window`` values of each feature in a ring buffer (fixed memory, numpy)
and compares their shares in the same bins with the training shares using the population stability index::

    PSI = sum over bins of (actual - expected) * ln(actual / expected)

The usual reading: **< 0.1 stable**, **0.1 - 0.25 moderate shift** (watch it), **> 0.25 significant shift**
(the model scores data unlike its training data: retrain or check the producer). :data:`DEFAULT_PSI_THRESHOLD`
(0.25) is the default alert threshold of the self-watch ``input_drift`` rule.

Binning rule (shared by training and serving, so the training data scored against its own bins gives PSI 0):
the inner edges are cut points, the outer bins are open (a value below the training minimum falls in the
first bin, above the maximum in the last), and a value equal to a cut point goes to the bin on its right.
Quantile edges that coincide (a feature with few distinct values) are merged, so such a feature has fewer
bins. Empty bins are floored at :data:`EPSILON` so that PSI stays finite.

Examples:
    >>> rng = np.random.default_rng(0)
    >>> edges, fractions = quantile_bins(rng.normal(0, 1, 10_000))
    >>> len(edges), len(fractions), round(sum(fractions), 6)
    (11, 10, 1.0)
    >>> mon = DriftMonitor({"cpu": {"bin_edges": edges, "bin_fractions": fractions}}, window=2000)
    >>> mon.update({"cpu": rng.normal(0, 1, 2000)})
    >>> mon.scores()["cpu"] < 0.1
    True
    >>> mon.update({"cpu": rng.normal(1.5, 1, 2000)})      # the stream moved by 1.5 standard deviations
    >>> mon.scores()["cpu"] > DEFAULT_PSI_THRESHOLD
    True
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from vigil.errors import ConfigError
from vigil.stats.psi import DEFAULT_BINS, EPSILON, bin_fractions, psi, quantile_bins

__all__ = ["DEFAULT_BINS", "DEFAULT_PSI_THRESHOLD", "EPSILON", "DriftMonitor", "bin_fractions", "psi", "quantile_bins"]

DEFAULT_PSI_THRESHOLD = 0.25


class _Ring:
    """The last ``size`` finite values of one feature."""

    def __init__(self, size: int) -> None:
        self.buf = np.empty(size, np.float64)
        self.next = 0
        self.filled = 0

    def add(self, x: np.ndarray) -> None:
        x = x[np.isfinite(x)]
        size = len(self.buf)
        if len(x) >= size:
            self.buf[:] = x[-size:]
            self.next, self.filled = 0, size
            return
        end = self.next + len(x)
        if end <= size:
            self.buf[self.next : end] = x
        else:
            split = size - self.next
            self.buf[self.next :] = x[:split]
            self.buf[: end - size] = x[split:]
        self.next = end % size
        self.filled = min(size, self.filled + len(x))

    def values(self) -> np.ndarray:
        return self.buf[: self.filled] if self.filled < len(self.buf) else self.buf


class DriftMonitor:
    """PSI per feature between a model's training distribution and the last ``window`` inputs.

    Args:
        training_stats: ``{feature: {"bin_edges": [...], "bin_fractions": [...], ...}}`` as stored in a model's
            ``meta.json``; features without bins (models trained before bins were stored) are not monitored.
        window: recent values kept per feature (a ring buffer: memory is ``8 * window`` bytes per feature).
        min_samples: no score for a feature until this many recent values were seen (a handful of values
            would give a noisy PSI).

    ``update`` costs one copy of the batch's columns into the rings; ``scores`` bins ``window`` values per
    feature, so call it at a human pace (the self-watch does, once a second), not per batch.
    """

    def __init__(self, training_stats: Mapping[str, Any], window: int = 5000, *, min_samples: int = 500) -> None:
        if int(window) != window or window < 1:
            raise ConfigError("must be an int >= 1", field="window", value=window)
        if int(min_samples) != min_samples or not 1 <= min_samples <= window:
            raise ConfigError(f"must be an int in [1, window={window}]", field="min_samples", value=min_samples)
        self.window = int(window)
        self.min_samples = int(min_samples)
        self.edges: dict[str, np.ndarray] = {}
        self.expected: dict[str, np.ndarray] = {}
        for feature, st in training_stats.items():
            edges, fractions = (st or {}).get("bin_edges"), (st or {}).get("bin_fractions")
            if not edges or not fractions:
                continue
            if len(edges) != len(fractions) + 1:
                raise ConfigError(f"needs len(bin_edges) == len(bin_fractions) + 1; got {len(edges)} and "
                                  f"{len(fractions)}", field=f"training_stats.{feature}")  # fmt: skip
            self.edges[str(feature)] = np.asarray(edges, np.float64)
            self.expected[str(feature)] = np.asarray(fractions, np.float64)
        self._rings = {f: _Ring(self.window) for f in self.edges}

    @property
    def features(self) -> list[str]:
        """The monitored features."""
        return list(self.edges)

    def update(self, X: Mapping[str, np.ndarray]) -> None:
        """Add a batch of inputs (columns by feature; other columns and non-finite values are ignored)."""
        for feature, ring in self._rings.items():
            col = X.get(feature)
            if col is not None and len(col):
                ring.add(np.asarray(col, np.float64))

    def counts(self) -> dict[str, int]:
        """Recent values held per feature (at most ``window``)."""
        return {f: r.filled for f, r in self._rings.items()}

    def scores(self) -> dict[str, float]:
        """PSI per feature over the recent values; features with fewer than ``min_samples`` are left out."""
        out = {}
        for feature, ring in self._rings.items():
            if ring.filled >= self.min_samples:
                value = psi(self.expected[feature], bin_fractions(ring.values(), self.edges[feature]))
                out[feature] = value if math.isfinite(value) else math.inf
        return out
