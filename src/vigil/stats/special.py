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
