"""Population stability: quantile bins of a training feature and the PSI of new data against them.

The pure statistics behind input-drift monitoring (:mod:`vigil.ops.drift`) and the training statistics a
model stores (:mod:`vigil.models.training`). See :mod:`vigil.ops.drift` for the reading of PSI values.

Examples:
    >>> rng = np.random.default_rng(0)
    >>> edges, fractions = quantile_bins(rng.normal(0, 1, 10_000))
    >>> len(edges), len(fractions), round(sum(fractions), 6)
    (11, 10, 1.0)
    >>> round(psi(fractions, bin_fractions(rng.normal(0, 1, 10_000), edges)), 2)
    0.0
"""

from __future__ import annotations

import numpy as np

from vigil.errors import ConfigError

DEFAULT_BINS = 10
DEFAULT_PSI_THRESHOLD = 0.25
EPSILON = 1e-4


def quantile_bins(values: np.ndarray, bins: int = DEFAULT_BINS) -> tuple[list[float], list[float]]:
    """Quantile bin edges of ``values`` (finite ones) and the share of values in each bin.

    Returns ``(edges, fractions)`` as plain lists (JSON-ready): ``len(edges) == len(fractions) + 1``; the
    first and last edges are the minimum and maximum, the others are the cut points (see the module
    docstring). No finite value gives ``([], [])``.

    Examples:
        >>> quantile_bins(np.arange(100.0), bins=4)
        ([0.0, 24.75, 49.5, 74.25, 99.0], [0.25, 0.25, 0.25, 0.25])
        >>> quantile_bins(np.array([0.0] * 8 + [1.0, 2.0]), bins=4)   # ties merge bins
        ([0.0, 2.0], [1.0])
    """
    if int(bins) != bins or bins < 1:
        raise ConfigError("must be an int >= 1", field="bins", value=bins)
    x = np.asarray(values, np.float64)
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return [], []
    lo, hi = float(x.min()), float(x.max())
    cuts = np.unique(np.quantile(x, np.linspace(0, 1, int(bins) + 1)[1:-1]))
    cuts = cuts[(cuts > lo) & (cuts < hi)] if hi > lo else cuts[:0]
    edges = [lo, *cuts.tolist(), hi] if hi > lo else [lo, hi]
    return edges, bin_fractions(x, edges).tolist()


def bin_fractions(values: np.ndarray, edges: list[float] | np.ndarray) -> np.ndarray:
    """Share of the finite ``values`` in each bin of ``edges`` (outer bins open; see the module docstring).

    Examples:
        >>> bin_fractions(np.array([-5.0, 0.5, 1.0, 1.5, 9.0]), [0.0, 1.0, 2.0]).tolist()
        [0.4, 0.6]
    """
    x = np.asarray(values, np.float64)
    x = x[np.isfinite(x)]
    k = max(len(edges) - 1, 1)
    if len(x) == 0:
        return np.zeros(k)
    idx = np.searchsorted(np.asarray(edges, np.float64)[1:-1], x, side="right")
    return np.bincount(idx, minlength=k)[:k] / len(x)


def psi(expected: np.ndarray | list[float], actual: np.ndarray | list[float]) -> float:
    """Population stability index of two bin-share vectors (empty bins floored at :data:`EPSILON`).

    Examples:
        >>> psi([0.5, 0.5], [0.5, 0.5])
        0.0
        >>> round(psi([0.5, 0.5], [0.9, 0.1]), 3)
        0.879
    """
    e = np.maximum(np.asarray(expected, np.float64), EPSILON)
    a = np.maximum(np.asarray(actual, np.float64), EPSILON)
    return float(np.sum((a - e) * np.log(a / e)))
