"""Point-wise detection metrics for labelled series (``vigil bench multivariate``), plain numpy.

Every function takes one series' ``scores`` (higher = more anomalous) and boolean ``labels`` of the same
length. Thresholds are swept over the distinct score values (a row is flagged when ``score >= t``), so ties
are flagged together and no metric depends on row order within a tie.

* :func:`best_f1`: the best F1 over all thresholds (an *oracle*: the threshold is chosen with the labels).
* :func:`auc_pr`: average precision (the step-wise area under the precision-recall curve, as scikit-learn's
  ``average_precision_score``).
* :func:`auc_roc`: the area under the ROC curve (Mann-Whitney, mid-ranks for ties).
* :func:`point_adjust`: the "point adjustment" of Xu et al. (2018): a labelled segment counts as detected
  as soon as any of its rows is flagged, so each row of a segment takes the segment's highest score.
  F1 after it *inflates* every method (random scores reach a high point-adjusted F1 on long segments);
  it is reported only beside the unadjusted figures, labelled as such.
* :func:`prf`: precision, recall and F1 of given flags (a product's own threshold, no oracle).
"""

from __future__ import annotations

import numpy as np


def _sweep(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """True positives and flagged counts at each distinct threshold (descending), and the positives."""
    s = np.asarray(scores, np.float64)
    y = np.asarray(labels, bool)
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    tp = np.cumsum(y)
    last = np.r_[s[1:] != s[:-1], True] if len(s) else np.zeros(0, bool)  # end of each tie group
    return tp[last], (np.flatnonzero(last) + 1), int(y.sum())


def best_f1(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float, float, float]:
    """Best F1 over thresholds, with its precision, recall and threshold: ``(f1, p, r, t)``.

    Examples:
        >>> best_f1(np.array([0.1, 0.9, 0.8, 0.2]), np.array([0, 1, 1, 0], bool))
        (1.0, 1.0, 1.0, 0.8)
        >>> round(best_f1(np.array([0.9, 0.1, 0.8, 0.2]), np.array([0, 1, 1, 0], bool))[0], 3)
        0.667
    """
    tp, k, pos = _sweep(scores, labels)
    if pos == 0 or len(tp) == 0:
        return 0.0, 0.0, 0.0, float("inf")
    f1 = 2.0 * tp / (k + pos)
    i = int(np.argmax(f1))
    s = np.sort(np.asarray(scores, np.float64))[::-1]
    return float(f1[i]), float(tp[i] / k[i]), float(tp[i] / pos), float(s[k[i] - 1])


def auc_pr(scores: np.ndarray, labels: np.ndarray) -> float:
    """Average precision: ``sum_n (R_n - R_{n-1}) P_n`` over the distinct thresholds.

    Examples:
        >>> auc_pr(np.array([0.9, 0.1, 0.8, 0.2]), np.array([0, 1, 1, 0], bool))
        0.5
    """
    tp, k, pos = _sweep(scores, labels)
    if pos == 0:
        return float("nan")
    recall = tp / pos
    precision = tp / k
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def auc_roc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (probability that a positive outranks a negative; ties count half).

    Examples:
        >>> auc_roc(np.array([0.9, 0.1, 0.8, 0.2]), np.array([0, 1, 1, 0], bool))
        0.25
    """
    s = np.asarray(scores, np.float64)
    y = np.asarray(labels, bool)
    pos = int(y.sum())
    neg = len(y) - pos
    if pos == 0 or neg == 0:
        return float("nan")
    order = np.argsort(s, kind="stable")
    ss = s[order]
    ranks = np.empty(len(s), np.float64)
    # mid-ranks of tie groups
    start = np.r_[0, np.flatnonzero(ss[1:] != ss[:-1]) + 1]
    end = np.r_[start[1:], len(ss)]
    mid = (start + end + 1) / 2.0
    ranks[order] = np.repeat(mid, end - start)
    return float((ranks[y].sum() - pos * (pos + 1) / 2.0) / (pos * neg))


def segments(labels: np.ndarray) -> list[tuple[int, int]]:
    """Half-open ``[start, end)`` row ranges of consecutive positive labels.

    Examples:
        >>> segments(np.array([0, 1, 1, 0, 1], bool))
        [(1, 3), (4, 5)]
    """
    y = np.r_[False, np.asarray(labels, bool), False].astype(np.int8)
    d = np.diff(y)
    return list(zip(np.flatnonzero(d == 1).tolist(), np.flatnonzero(d == -1).tolist(), strict=True))


def point_adjust(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Scores after point adjustment: every row of a labelled segment takes the segment's highest score.

    Examples:
        >>> point_adjust(np.array([0.1, 0.9, 0.2, 0.3]), np.array([0, 1, 1, 0], bool)).tolist()
        [0.1, 0.9, 0.9, 0.3]
    """
    out = np.asarray(scores, np.float64).copy()
    for a, b in segments(labels):
        out[a:b] = out[a:b].max()
    return out


def prf(flags: np.ndarray, labels: np.ndarray) -> tuple[float, float, float]:
    """Precision, recall and F1 of boolean flags (precision 0 when nothing is flagged).

    Examples:
        >>> prf(np.array([1, 1, 0, 0], bool), np.array([0, 1, 1, 0], bool))
        (0.5, 0.5, 0.5)
    """
    f = np.asarray(flags, bool)
    y = np.asarray(labels, bool)
    tp = int((f & y).sum())
    p = tp / int(f.sum()) if f.any() else 0.0
    r = tp / int(y.sum()) if y.any() else 0.0
    f1 = 2 * p * r / (p + r) if p + r > 0 else 0.0
    return float(p), float(r), float(f1)


def series_metrics(scores: np.ndarray, labels: np.ndarray, flags: np.ndarray | None = None) -> dict[str, float]:
    """All metrics of one series: ``f1_nopa``, ``auc_pr``, ``auc_roc``, ``f1_pa`` and, given flags, ``p/r/f1_default``.

    Examples:
        >>> m = series_metrics(np.array([0.1, 0.9, 0.2, 0.3]), np.array([0, 1, 1, 0], bool),
        ...                    np.array([0, 1, 0, 0], bool))
        >>> m["f1_nopa"], m["f1_pa"], m["f1_default"]
        (0.8, 1.0, 0.6666666666666666)
    """
    out = {
        "f1_nopa": best_f1(scores, labels)[0],
        "auc_pr": auc_pr(scores, labels),
        "auc_roc": auc_roc(scores, labels),
        "f1_pa": best_f1(point_adjust(scores, labels), labels)[0],
    }
    if flags is not None:
        out["p_default"], out["r_default"], out["f1_default"] = prf(flags, labels)
    return out
