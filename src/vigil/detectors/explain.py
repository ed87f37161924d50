"""Per-feature contributions behind flagged rows: helpers for the detectors' ``explain_many``.

``explain_many(X, verdicts, rows) -> list[list[Contribution]]`` is the ``Explainer`` protocol of
:mod:`vigil.dataflow.outputs`: for each row index in ``rows`` (into the batch that produced ``verdicts``), the
features behind its verdict, most anomalous first (by ``|score|``). Detectors that can attribute implement it
from their verdicts' ``stats`` (computed when the row was scored) and ``X``:

* single-field detectors: one contribution, the field, scored by the signed z-score (or the detector's own
  statistic), with the value and what was expected (mean, median, forecast, bound);
* multi-feature models share out the anomaly between features (:class:`~vigil.detectors.HalfSpaceTrees`,
  :class:`~vigil.detectors.IsolationForestDetector`): the score of a feature is its share of the *isolation
  bits* — how much more the point's region shrank at that feature's splits than an even split would have;
* combinations explain per member (:class:`~vigil.detectors.Ensemble`) or through their inner detector
  (:class:`~vigil.detectors.Calibrated`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from vigil.types import Contribution


def opt(x: Any) -> float | None:
    """A finite float, or ``None`` (missing, NaN or inf).

    Examples:
        >>> opt(np.float64(2.5)), opt(float("nan")), opt(None)
        (2.5, None, None)
    """
    if x is None:
        return None
    f = float(x)
    return f if math.isfinite(f) else None


def ranked(contributions: list[Contribution]) -> list[Contribution]:
    """Most anomalous first (by ``|score|``; ties keep their order)."""
    return sorted(contributions, key=lambda c: -abs(c.score) if math.isfinite(c.score) else 0.0)


def one_feature(feature: str, rows: np.ndarray, score: np.ndarray, value: np.ndarray | None,
                expected: np.ndarray | None, flag: np.ndarray | None) -> list[list[Contribution]]:  # fmt: skip
    """One contribution per row: the detector's only feature.

    Examples:
        >>> one_feature("amount", np.array([1]), np.array([0.0, -5.0]), np.array([9.0, 2.0]), None, None)
        [[Contribution(feature='amount', score=-5.0, value=2.0, expected=None, flag=None)]]
    """
    out = []
    for i in np.asarray(rows, np.int64).tolist():
        s = float(score[i])
        out.append([Contribution(feature, s if math.isfinite(s) else 0.0,
                                 opt(value[i]) if value is not None else None,
                                 opt(expected[i]) if expected is not None else None,
                                 bool(flag[i]) if flag is not None else None)])  # fmt: skip
    return out


def signed_larger(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """``pos`` where it is the larger one-sided statistic, else ``-neg`` (a direction for CUSUM-like tests)."""
    return np.where(pos >= neg, pos, -neg)


def score_or(verdicts: Any, alt: np.ndarray) -> np.ndarray:
    """The verdicts' score where finite, else ``alt`` (member views of an ensemble carry no member score)."""
    return np.where(np.isfinite(verdicts.score), verdicts.score, alt)


def can_explain(detector: Any) -> bool:
    """Whether ``detector`` implements ``explain_many``."""
    return callable(getattr(type(detector), "explain_many", None))


def feature_shares(features: tuple[str, ...], X: dict[str, np.ndarray], rows: np.ndarray, shares: np.ndarray,
                   expected: np.ndarray | None = None) -> list[list[Contribution]]:  # fmt: skip
    """Per row, one contribution per feature scored by its share of the anomaly (``shares[j, f]`` for row ``j``)."""
    out = []
    for j, i in enumerate(np.asarray(rows, np.int64).tolist()):
        out.append(ranked([
            Contribution(f, float(shares[j, c]) if math.isfinite(shares[j, c]) else 0.0,
                         opt(X[f][i]) if f in X else None, opt(expected[c]) if expected is not None else None)
            for c, f in enumerate(features)
        ]))  # fmt: skip
    return out

