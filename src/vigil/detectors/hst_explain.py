"""Per-feature attribution of Half-Space Trees scores: which fields' splits put a point in sparse regions.

A point's score comes from where its walk down each tree leaves the reference mass. At every split on the way,
the reference mass of the point's region drops from the parent's ``r(parent)`` to the child's ``r(child)``; a
typical point keeps about half, an isolated one falls into a nearly empty half. Each split's feature gets the bits
beyond an even split, ``max(0, log2((r(parent) + 1) / (r(child) + 1)) - 1)``, down to where the walk stops; a
feature's attribution is its share of those bits over all trees (in [0, 1], summing to 1 over the fields, or all 0
when no split was unusual).

It is computed in ``process_many`` for the flagged rows only (so alerts can carry it, and it costs nothing on
quiet batches), at the scaled values the row was scored with (learned limits as they were before the row), against
the key's reference window as it stands after the batch — the one that scored the row, unless the key completed
a window in the rest of the batch. With one field, the attribution is that field.
"""

from __future__ import annotations

import math
from typing import Any

import numba
import numpy as np


@numba.njit(cache=True)
def _limits_at_scoring(inv: Any, n_groups: int, cols: Any, lo0: Any, hi0: Any, want: Any, out_lo: Any,
                       out_hi: Any) -> None:  # pragma: no cover - compiled  # fmt: skip
    """Learned limits each wanted row was scored with: the key's limits before the batch, then its earlier rows."""
    d = cols.shape[1]
    cur_lo = np.empty((n_groups, d))
    cur_hi = np.empty((n_groups, d))
    seen = np.zeros(n_groups, np.bool_)
    for i in range(inv.shape[0]):
        g = inv[i]
        if not seen[g]:
            cur_lo[g] = lo0[i]
            cur_hi[g] = hi0[i]
            seen[g] = True
        if want[i]:
            out_lo[i] = cur_lo[g]
            out_hi[i] = cur_hi[g]
        finite = True
        for j in range(d):
            if not math.isfinite(cols[i, j]):
                finite = False
        if finite:  # the kernel learns the limits of finite rows only
            for j in range(d):
                cur_lo[g, j] = min(cur_lo[g, j], cols[i, j])
                cur_hi[g, j] = max(cur_hi[g, j], cols[i, j])


@numba.njit(cache=True)
def _isolation_bits(keys: Any, U: Any, feat: Any, thr: Any, mass: Any, height: int, size_limit: float,
                    out: Any) -> None:  # pragma: no cover - compiled  # fmt: skip
    for j in range(U.shape[0]):
        k = keys[j]
        for t in range(feat.shape[0]):
            node = 0
            depth = 0
            while True:
                rm = float(mass[k, t, node, 0])
                if depth == height or rm < size_limit:
                    break
                f = feat[t, node]
                child = 2 * node + 1 if U[j, f] < thr[t, node] else 2 * node + 2
                gain = math.log2((rm + 1.0) / (float(mass[k, t, child, 0]) + 1.0)) - 1.0
                if gain > 0.0:
                    out[j, f] += gain
                node = child
                depth += 1


def attribution(det: Any, idx: np.ndarray, cols: np.ndarray, lo0: np.ndarray | None, hi0: np.ndarray | None,
                flag: np.ndarray) -> np.ndarray:  # fmt: skip
    """Per row, each feature's share of the isolation bits (NaN on rows not flagged); see the module docstring.

    Args:
        det: the :class:`~vigil.detectors.HalfSpaceTrees` after it processed the batch.
        idx: the state row of each batch row (the slot, or 0 for one global model).
        cols: the batch's values, one column per feature in ``det.features`` order.
        lo0: with learned limits, each row's key's lower limits before the batch (``hi0``: the upper ones).
        flag: the rows to attribute.
    """
    m, d = cols.shape
    out = np.full((m, d), np.nan)
    rows = np.flatnonzero(flag)
    if not len(rows):
        return out
    if lo0 is None or hi0 is None:
        U = cols[rows]
    else:
        uniq, inv = np.unique(idx, return_inverse=True)
        lo, hi = np.full((m, d), np.nan), np.full((m, d), np.nan)
        _limits_at_scoring(inv.astype(np.int64), len(uniq), cols, lo0, hi0, flag, lo, hi)
        squeeze = 1.0 / (1.0 + 2.0 * det.margin)
        span = hi[rows] - lo[rows]
        with np.errstate(invalid="ignore", divide="ignore"):
            U = np.where(span != 0.0, (cols[rows] - lo[rows]) / np.where(span != 0.0, span, 1.0), 0.0)
        U = U * squeeze + det.margin * squeeze
    bits = np.zeros((len(rows), d))
    _isolation_bits(np.ascontiguousarray(idx[rows], np.int64), np.ascontiguousarray(U, np.float64), det.feat,
                    det.thr, det.mass, det.height, 0.1 * det.window_size, bits)  # fmt: skip
    total = bits.sum(axis=1, keepdims=True)
    out[rows] = np.divide(bits, total, out=np.zeros_like(bits), where=total > 0)
    return out
