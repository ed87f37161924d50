"""Exponentially weighted z-score per key: the logic the prototype Flink jobs share (no pyflink import here).

Per key, events are taken in order (event time, then arrival) and scored *prequentially*: the score of an event
uses only the state before it, then the event updates the state::

    z = (x - mean) / sqrt(var)            if n >= MIN_N and var > 0, else no score
    mean' = mean + ALPHA * d              d = x - mean
    var'  = (1 - ALPHA) * (var + ALPHA * d * d)

An alert is raised when |z| > THRESHOLD. The micro-batch kernel (`score_batch`) runs this recursion over a batch
that spans many keys, sorted into per-key segments, compiled by numba (the recursion is sequential per key:
numba is the house answer, see DESIGN.md); `score_reference` is the plain per-event Python reference that the
tests compare it with exactly.

Per-key state is a versioned snapshot: `encode_state` / `decode_state` (25 bytes: version, n, mean, var), the
shape Vigil's `export_slots` / `import_slots` bytes take in Flink keyed state.

>>> st = {}
>>> [round(z, 3) if z == z else None for z in score_reference(st, ["a"] * 12, [10.0] * 11 + [20.0])][-2:]
[None, None]
>>> decode_state(encode_state(3, 1.5, 0.25))
(3, 1.5, 0.25)
"""

from __future__ import annotations

import math
import os
import struct
import sys
import tempfile

import numpy as np

ALPHA = 0.05
MIN_N = 10
THRESHOLD = 3.0

_STATE = struct.Struct("<Bqdd")
STATE_VERSION = 1


def encode_state(n: int, mean: float, var: float) -> bytes:
    """One key's state as versioned bytes (no pickle at rest)."""
    return _STATE.pack(STATE_VERSION, n, mean, var)


def decode_state(raw: bytes | None) -> tuple[int, float, float]:
    """Inverse of `encode_state`; None (a new key) is the empty state."""
    if raw is None:
        return 0, 0.0, 0.0
    version, n, mean, var = _STATE.unpack(raw)
    if version != STATE_VERSION:
        raise ValueError(f"ew z-score state: unknown version {version} (this code reads {STATE_VERSION})")
    return n, mean, var


def _score_segments(starts, x, n, mean, var, z, alpha, min_n):  # pragma: no cover - compiled
    # starts: segment boundaries (len = keys + 1); segment k uses state slot k; x sorted into segments
    for k in range(len(starts) - 1):
        nk = n[k]
        mk = mean[k]
        vk = var[k]
        for i in range(starts[k], starts[k + 1]):
            xi = x[i]
            if nk >= min_n and vk > 0.0:
                z[i] = (xi - mk) / math.sqrt(vk)
            else:
                z[i] = np.nan
            if nk == 0:
                mk = xi
                vk = 0.0
            else:
                d = xi - mk
                mk = mk + alpha * d
                vk = (1.0 - alpha) * (vk + alpha * d * d)
            nk += 1
        n[k] = nk
        mean[k] = mk
        var[k] = vk



def _let_numba_import_under_beam() -> None:
    """PyFlink's process-mode worker (beam_sdk_worker_main) replaces builtins.print with a bound method of its own;
    numba's import checks that `print.__module__` has an attribute `print` and fails with AttributeError. Give it one."""
    import builtins

    p = builtins.print
    mod = sys.modules.get(getattr(p, "__module__", None) or "builtins")
    name = getattr(p, "__name__", "print")
    if mod is not None and not hasattr(mod, name):
        setattr(mod, name, p)


_kernels: dict = {"python": _score_segments}


def kernel(name: str = "numba"):
    """The segment kernel: "numba" (compiled on first use, ~1 s per Python worker; cache=True keeps it across runs
    where the directory is writable) or "python" (the same loop, interpreted)."""
    if name not in _kernels:
        if name != "numba":
            raise ValueError(f"unknown kernel {name!r}")
        _let_numba_import_under_beam()
        # Flink unpacks the job's Python files into a directory numba cannot write its cache next to ("no locator
        # available"): give it a cache directory of its own
        os.environ.setdefault("NUMBA_CACHE_DIR", os.path.join(tempfile.gettempdir(), "vigil-numba-cache"))
        import numba

        # _nrt=False: without numba's runtime the kernel never frees an array through NRT's pyobject destructor,
        # which calls PyGILState_Ensure and deadlocks inside PyFlink's thread mode (PEMJA holds the GIL with a
        # thread state of its own). The kernel allocates nothing, so it does not need NRT.
        _kernels[name] = numba.njit(cache=True, _nrt=False)(_score_segments)
    return _kernels[name]


def score_batch(starts: np.ndarray, x: np.ndarray, n: np.ndarray, mean: np.ndarray, var: np.ndarray,
                kernel_name: str = "numba") -> np.ndarray:
    """Score a batch sorted into per-key segments, updating the per-segment state arrays in place.

    Args:
        starts: int64[K + 1] segment boundaries into x (segment k = key k, events in order).
        x: float64[N] values.
        n, mean, var: int64[K], float64[K], float64[K] state per key, updated in place.

    Returns:
        float64[N] z-scores, NaN where the key was not warmed up (n < MIN_N) or had zero variance.
    """
    z = np.empty(len(x), dtype=np.float64)
    kernel(kernel_name)(starts, x, n, mean, var, z, ALPHA, MIN_N)
    return z


def score_reference(state: dict, keys, xs) -> list[float]:
    """Plain per-event reference: `state` maps key -> (n, mean, var), updated; returns z (NaN = not scored)."""
    out = []
    for k, x in zip(keys, xs, strict=True):
        n, mean, var = state.get(k, (0, 0.0, 0.0))
        out.append((x - mean) / math.sqrt(var) if n >= MIN_N and var > 0.0 else math.nan)
        if n == 0:
            mean, var = x, 0.0
        else:
            d = x - mean
            mean = mean + ALPHA * d
            var = (1.0 - ALPHA) * (var + ALPHA * d * d)
        state[k] = (n + 1, mean, var)
    return out


def is_alert(z: float) -> bool:
    """|z| > THRESHOLD (NaN never alerts)."""
    return abs(z) > THRESHOLD
