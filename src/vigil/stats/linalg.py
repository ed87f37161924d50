"""Small dense linear algebra for numba kernels: SPD inverse (Cholesky) and symmetric eigendecomposition (Jacobi).

numba's ``np.linalg`` calls LAPACK through SciPy, which is not one of Vigil's core dependencies; detectors that
refresh a covariance's inverse or principal axes row by row inside a kernel (``mahalanobis``) use these
instead. They target the small matrices of a streaming detector (tens of dimensions), where a plain
O(d^3) loop is fast enough, and are tested against numpy's LAPACK results (``tests/detectors/test_multivariate.py``).
"""

from __future__ import annotations

import math
from typing import Any

import numba


@numba.njit(cache=True)
def spd_inverse(A: Any, out: Any, L: Any) -> bool:  # pragma: no cover - compiled
    """Write the inverse of the symmetric positive definite ``A`` into ``out`` (``L`` is scratch, d x d).

    Returns False (leaving ``out`` unchanged) if ``A`` is not numerically positive definite.

    Examples:
        >>> import numpy as np
        >>> A = np.array([[4.0, 1.0], [1.0, 3.0]])
        >>> out, L = np.zeros((2, 2)), np.zeros((2, 2))
        >>> spd_inverse(A, out, L), bool(np.allclose(out, np.linalg.inv(A)))
        (True, True)
    """
    d = A.shape[0]
    for j in range(d):  # Cholesky: A = L L^T
        s = A[j, j]
        for k in range(j):
            s -= L[j, k] * L[j, k]
        if not s > 0.0:
            return False
        L[j, j] = math.sqrt(s)
        for i in range(j + 1, d):
            t = A[i, j]
            for k in range(j):
                t -= L[i, k] * L[j, k]
            L[i, j] = t / L[j, j]
        for i in range(j):
            L[i, j] = 0.0
    # out = L^-T L^-1: invert L in place (lower triangular), then multiply
    for j in range(d):
        L[j, j] = 1.0 / L[j, j]
        for i in range(j + 1, d):
            t = 0.0
            for k in range(j, i):
                t -= L[i, k] * L[k, j]
            L[i, j] = t / L[i, i]
    for i in range(d):
        for j in range(i + 1):
            t = 0.0
            for k in range(i, d):
                t += L[k, i] * L[k, j]
            out[i, j] = t
            out[j, i] = t
    return True


@numba.njit(cache=True)
def sym_eigh(A: Any, w: Any, V: Any, max_sweeps: int = 50) -> None:  # pragma: no cover - compiled
    """Eigenvalues (descending, into ``w``) and eigenvectors (columns of ``V``) of the symmetric ``A``.

    Cyclic Jacobi rotations on a copy of ``A`` until the off-diagonal mass is negligible.

    Examples:
        >>> import numpy as np
        >>> A = np.array([[2.0, 1.0], [1.0, 2.0]])
        >>> w, V = np.zeros(2), np.zeros((2, 2))
        >>> sym_eigh(A, w, V)
        >>> w.round(6).tolist(), bool(np.allclose(A @ V, V * w))
        ([3.0, 1.0], True)
    """
    d = A.shape[0]
    B = A.copy()
    for i in range(d):
        for j in range(d):
            V[i, j] = 1.0 if i == j else 0.0
    scale = 0.0
    for i in range(d):
        for j in range(d):
            scale += B[i, j] * B[i, j]
    for _ in range(max_sweeps):
        off = 0.0
        for i in range(d):
            for j in range(i + 1, d):
                off += B[i, j] * B[i, j]
        if off <= 1e-30 * scale or off == 0.0:
            break
        for p in range(d):
            for q in range(p + 1, d):
                apq = B[p, q]
                if apq == 0.0:
                    continue
                theta = (B[q, q] - B[p, p]) / (2.0 * apq)
                t = (1.0 if theta >= 0 else -1.0) / (abs(theta) + math.sqrt(theta * theta + 1.0))
                c = 1.0 / math.sqrt(t * t + 1.0)
                s = t * c
                for k in range(d):  # B <- B J (columns p, q)
                    bkp = B[k, p]
                    bkq = B[k, q]
                    B[k, p] = c * bkp - s * bkq
                    B[k, q] = s * bkp + c * bkq
                for k in range(d):  # B <- J^T B (rows p, q)
                    bpk = B[p, k]
                    bqk = B[q, k]
                    B[p, k] = c * bpk - s * bqk
                    B[q, k] = s * bpk + c * bqk
                for k in range(d):
                    vkp = V[k, p]
                    vkq = V[k, q]
                    V[k, p] = c * vkp - s * vkq
                    V[k, q] = s * vkp + c * vkq
    for i in range(d):
        w[i] = B[i, i]
    # sort descending (selection sort: d is small), moving eigenvector columns along
    for i in range(d):
        m = i
        for j in range(i + 1, d):
            if w[j] > w[m]:
                m = j
        if m != i:
            tmp = w[i]
            w[i] = w[m]
            w[m] = tmp
            for k in range(d):
                tv = V[k, i]
                V[k, i] = V[k, m]
                V[k, m] = tv
