"""Random walks on the anomaly subgraph: personalized PageRank towards root causes.

MicroRCA / RCD / MicroRank-style: a walker starts at an anomalous service in proportion to its own
anomaly (the personalization), and from a service moves to one of its anomalous **callees** in proportion
to how anomalous they look to it (blame flows downstream, against the direction in which failures
propagate), or stays (a self-loop weighted by the service's own, unexplained anomaly), or, with
probability ``1 - damping``, restarts. The stationary distribution concentrates on services whose trouble
is not explained by anything further down. Power iteration on a dense matrix: the subgraph has at most a
few dozen nodes.

Examples:
    >>> import numpy as np
    >>> # frontend -> cart -> redis; redis is the root
    >>> w = np.array([[0, 1.0, 0], [0, 0, 1.0], [0, 0, 0]])
    >>> p = personalized_pagerank(w, self_weight=np.array([0.1, 0.1, 1.0]), personal=np.array([1.0, 1, 1]))
    >>> int(np.argmax(p))
    2
"""

from __future__ import annotations

import numpy as np

__all__ = ["personalized_pagerank"]


def personalized_pagerank(weights: np.ndarray, *, self_weight: np.ndarray, personal: np.ndarray,
                          damping: float = 0.85, tol: float = 1e-10, max_iter: int = 200) -> np.ndarray:  # fmt: skip
    """Stationary distribution of the walk above (``weights[i, j]``: from ``i`` to its callee ``j``)."""
    n = weights.shape[0]
    if n == 0:
        return np.zeros(0)
    W = np.maximum(weights, 0.0) + np.diag(np.maximum(self_weight, 0.0))
    out = W.sum(axis=1, keepdims=True)
    P = np.where(out > 0, W / np.where(out > 0, out, 1.0), 1.0 / n)  # a node with no way out restarts uniformly
    v = np.maximum(personal, 0.0)
    v = v / v.sum() if v.sum() > 0 else np.full(n, 1.0 / n)
    p = v.copy()
    for _ in range(max_iter):
        nxt = damping * (p @ P) + (1.0 - damping) * v
        if np.abs(nxt - p).sum() < tol:
            return nxt
        p = nxt
    return p
