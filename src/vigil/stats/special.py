"""Vectorized special functions (numba-compiled, no scipy dependency)."""

from __future__ import annotations

import math
from typing import Any

import numba
import numpy as np

from vigil.types import Float64Array


@numba.vectorize(["float64(float64)"], cache=True)
def _erf(x: float) -> float:  # pragma: no cover - compiled
    return math.erf(x)


def erf(x: Float64Array) -> Float64Array:
    """Element-wise error function.

    Examples:
        >>> erf(np.array([0.0, 1.0])).round(6).tolist()
        [0.0, 0.842701]
    """
    out: Any = _erf(np.asarray(x, np.float64))
    return np.asarray(out, np.float64)


_SQRT1_2 = 0.7071067811865476  # 1 / sqrt(2)


@numba.njit(cache=True, inline="always")
def two_sided_tail(z: float) -> float:  # pragma: no cover - compiled
    """``erf(|z| / sqrt 2)``: the probability that a Gaussian deviate is closer to the mean than ``z``.

    The calibration of every z-score detector, for use inside their numba kernels.
    """
    return math.erf(abs(z) * _SQRT1_2)


@numba.vectorize(["float64(float64)"], cache=True)
def two_sided_tail_many(z: float) -> float:  # pragma: no cover - compiled
    """Element-wise :func:`two_sided_tail` (a numpy ufunc)."""
    return math.erf(abs(z) * _SQRT1_2)
