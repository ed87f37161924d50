"""Numba kernels behind :class:`vigil.eventtime.windows.WindowAggregator` (private).

Accumulators are rows of a float64 matrix with the columns ``COUNT, SUM, M2, MIN, MAX``, where ``M2``
is the sum of squared deviations from the mean (Welford / Chan et al.): unlike a raw sum of squares
it does not lose the variance to cancellation when values are large and close together, and two
accumulators merge exactly (used when a bridging event merges two sessions).

Rows are processed in arrival order: within a batch, row ``i`` sees the effect of rows ``< i``,
exactly as if events were handled one at a time.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np
from numba import types
from numba.typed import Dict

COUNT, SUM, M2, MIN, MAX = range(5)
N_ACC = 5


def new_window_index() -> Any:
    """An empty typed dict ``(slot, start_ms) -> accumulator row``."""
    return Dict.empty(key_type=types.UniTuple(types.int64, 2), value_type=types.int64)


@numba.njit(cache=True)
def _add_value(acc: np.ndarray, i: int, x: float) -> None:
    n_old = acc[i, COUNT]
    mean_old = acc[i, SUM] / n_old
    n = n_old + 1.0
    acc[i, SUM] += x
    acc[i, M2] += (x - mean_old) * (x - acc[i, SUM] / n)
    acc[i, COUNT] = n
    if x < acc[i, MIN]:
        acc[i, MIN] = x
    if x > acc[i, MAX]:
        acc[i, MAX] = x


@numba.njit(cache=True)
def _merge_into(dst: np.ndarray, i: int, src: np.ndarray, j: int) -> None:
    na = dst[i, COUNT]
    nb = src[j, COUNT]
    n = na + nb
    delta = src[j, SUM] / nb - dst[i, SUM] / na
    dst[i, M2] += src[j, M2] + delta * delta * na * nb / n
    dst[i, SUM] += src[j, SUM]
    dst[i, COUNT] = n
    if src[j, MIN] < dst[i, MIN]:
        dst[i, MIN] = src[j, MIN]
    if src[j, MAX] > dst[i, MAX]:
        dst[i, MAX] = src[j, MAX]


@numba.njit(cache=True)
def fixed_add(
    index: Any,
    w_slot: Any,
    w_start: Any,
    acc: Any,
    live: Any,
    touched: Any,
    free: Any,
    counters: Any,
    p_slot: Any,
    p_start: Any,
    p_val: Any,
) -> None:
    """Add (slot, start, value) pairs to fixed-size windows; ``counters = [n_free, high_water]``.

    The caller guarantees capacity for ``high_water + len(p_slot)`` accumulator rows.
    """
    n_free = counters[0]
    top = counters[1]
    for i in range(p_slot.shape[0]):
        x = p_val[i]
        key = (np.int64(p_slot[i]), np.int64(p_start[i]))
        # One hash lookup per pair: offer the next free row; a different answer means the window exists.
        fresh = free[n_free - 1] if n_free > 0 else top
        idx = index.setdefault(key, fresh)
        if idx != fresh:
            _add_value(acc, idx, x)
        else:
            if n_free > 0:
                n_free -= 1
            else:
                top += 1
            w_slot[idx] = key[0]
            w_start[idx] = key[1]
            live[idx] = True
            acc[idx, COUNT] = 1.0
            acc[idx, SUM] = x
            acc[idx, M2] = 0.0
            acc[idx, MIN] = x
            acc[idx, MAX] = x
        touched[idx] = True
    counters[0] = n_free
    counters[1] = top


@numba.njit(cache=True)
def fixed_remove(
    index: Any, w_slot: Any, w_start: Any, rows: Any, live: Any, free: Any, counters: Any
) -> None:
    """Drop accumulator ``rows`` from the index and put them on the free list."""
    n_free = counters[0]
    for r in rows:
        index.pop((w_slot[r], w_start[r]))
        live[r] = False
        free[n_free] = r
        n_free += 1
    counters[0] = n_free


@numba.njit(cache=True)
def fixed_rebuild(index: Any, w_slot: Any, w_start: Any, n: int) -> None:
    """Index the first ``n`` accumulator rows (after a restore)."""
    for r in range(n):
        index[(w_slot[r], w_start[r])] = np.int64(r)


@numba.njit(cache=True)
def session_add(
    s_slot: Any,
    s_start: Any,
    s_end: Any,
    s_acc: Any,
    order: Any,
    slots: Any,
    ts: Any,
    vals: Any,
    thr: Any,
    gap_ms: int,
) -> Any:
    """Merge a batch into session state sorted by (slot, start); return the new state and a late mask.

    A session is open for a row while ``end > thr`` (``thr = watermark_before - allowed_lateness``).
    A row opens ``[ts, ts + gap)`` and absorbs every open session of its slot that it intersects
    (touching counts); open sessions never intersect each other, so one pass suffices. A row that
    merges with nothing and whose own session is already closed is late and changes nothing.
    """
    n_state = s_slot.shape[0]
    n = order.shape[0]
    cap = n_state + n
    o_slot = np.empty(cap, np.int64)
    o_start = np.empty(cap, np.int64)
    o_end = np.empty(cap, np.int64)
    o_acc = np.empty((cap, 5), np.float64)
    o_touched = np.zeros(cap, np.bool_)
    late = np.zeros(slots.shape[0], np.bool_)
    one = np.empty((1, 5), np.float64)
    p = 0
    i = 0
    j = 0
    while i < n_state or j < n:
        if j >= n or (i < n_state and s_slot[i] < slots[order[j]]):
            o_slot[p] = s_slot[i]
            o_start[p] = s_start[i]
            o_end[p] = s_end[i]
            o_acc[p] = s_acc[i]
            p += 1
            i += 1
            continue
        k = np.int64(slots[order[j]])
        base = p
        while i < n_state and s_slot[i] == k:
            o_slot[p] = k
            o_start[p] = s_start[i]
            o_end[p] = s_end[i]
            o_acc[p] = s_acc[i]
            p += 1
            i += 1
        while j < n and slots[order[j]] == k:
            r = order[j]
            j += 1
            t = ts[r]
            th = thr[r]
            lo = t
            hi = t + gap_ms
            x = vals[r]
            one[0, COUNT] = 1.0
            one[0, SUM] = x
            one[0, M2] = 0.0
            one[0, MIN] = x
            one[0, MAX] = x
            merged = False
            write = base
            for m in range(base, p):
                if o_end[m] > th and o_start[m] <= t + gap_ms and o_end[m] >= t:
                    _merge_into(one, 0, o_acc, m)
                    lo = min(lo, o_start[m])
                    hi = max(hi, o_end[m])
                    merged = True
                else:
                    if write != m:
                        o_start[write] = o_start[m]
                        o_end[write] = o_end[m]
                        o_acc[write] = o_acc[m]
                        o_touched[write] = o_touched[m]
                    write += 1
            p = write
            if not merged and hi <= th:
                late[r] = True
                continue
            pos = p
            while pos > base and o_start[pos - 1] > lo:
                o_start[pos] = o_start[pos - 1]
                o_end[pos] = o_end[pos - 1]
                o_acc[pos] = o_acc[pos - 1]
                o_touched[pos] = o_touched[pos - 1]
                pos -= 1
            o_slot[pos] = k
            o_start[pos] = lo
            o_end[pos] = hi
            o_acc[pos] = one[0]
            o_touched[pos] = True
            p += 1
        o_slot[base:p] = k
    return o_slot[:p], o_start[:p], o_end[:p], o_acc[:p], o_touched[:p], late


@numba.njit(cache=True)
def fixed_insert(
    index: Any, w_slot: Any, w_start: Any, acc: Any, live: Any, free: Any, counters: Any, p_slot: Any,
    p_start: Any, p_acc: Any,
) -> None:  # fmt: skip
    """Add whole windows (slot, start, accumulator) that are not open yet (importing a key's slice).

    The caller guarantees capacity for ``high_water + len(p_slot)`` accumulator rows.
    """
    n_free = counters[0]
    top = counters[1]
    for i in range(p_slot.shape[0]):
        if n_free > 0:
            n_free -= 1
            idx = free[n_free]
        else:
            idx = top
            top += 1
        index[(np.int64(p_slot[i]), np.int64(p_start[i]))] = np.int64(idx)
        w_slot[idx] = p_slot[i]
        w_start[idx] = p_start[i]
        live[idx] = True
        acc[idx] = p_acc[i]
    counters[0] = n_free
    counters[1] = top
