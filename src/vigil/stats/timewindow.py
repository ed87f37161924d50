"""Exact per-key sliding time windows over columnar batches (the engine's hot path).

Every key slot owns a ring buffer of ``(ts_ms, x)`` pairs kept **sorted by event time**, plus the
running count, sum and sum of squares of the values inside the window. The window of a key is the
events with ``ts > newest_ts - window_ms`` (the last ``window_ms`` of event time as known when an
event arrives). Because the buffer is sorted, eviction is exact even when events arrive out of
order (an out-of-order event is inserted at its place, usually a few steps from the end).

Ring buffers live in one shared pool with power-of-two size classes and free lists, so memory is
proportional to the events currently inside windows, not to keys × the busiest key. When the pool
is full the kernel stops and returns; Python grows the pool and calls again (the kernel resumes
at the same row, so the result is the same as if the pool had been large enough).

Sums are kept relative to a per-key shift (the first value after the window was last empty) to
avoid the catastrophic cancellation of the naive sum-of-squares formula; they are recomputed
exactly whenever the window empties.

This module is pure numpy + numba and knows nothing of detectors: :mod:`vigil.detectors` builds
z-scores and counts on top of :func:`window_update`.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np

from vigil.types import Float64Array, Int32Array, Int64Array

MIN_CLASS = 2  # smallest ring: 2**2 = 4 entries
N_CLASSES = 40

# meta array layout
_TOP = 0  # bump pointer into the pool
# meta[1 + c] = head of the free list of class c (-1: empty)
_NO_TIME = np.iinfo(np.int64).min


@numba.njit(cache=True, inline="always")
def _alloc(c: int, meta: Any, pool_ts: Any) -> int:
    head = meta[1 + c]
    if head >= 0:
        meta[1 + c] = pool_ts[head]  # the next free block's offset is stored in its first entry
        return head
    size = 1 << c
    top = meta[_TOP]
    if top + size > pool_ts.shape[0]:
        return -1
    meta[_TOP] = top + size
    return top


@numba.njit(cache=True, inline="always")
def _free(off: int, c: int, meta: Any, pool_ts: Any) -> None:
    pool_ts[off] = meta[1 + c]
    meta[1 + c] = off


# per-slot integer state columns (one row per slot keeps a key's state in one cache line)
OFF, CLS, HEAD, CNT, NEWEST = 0, 1, 2, 3, 4
# per-slot float state columns (MASS: squared deviations added or removed since the sums were rebased)
SHIFT, S1, S2, MASS = 0, 1, 2, 3
N_FLOAT = 4


# The kernels below work on one slot's state held in local variables — ``off, c, h, n, newest``
# (ring offset, size class, head, count, newest event time) and ``sh, a, b`` (shift, sum, sum of
# squares) — loaded once per row with :func:`load` and written back once with :func:`store`.
# Keeping them in locals matters: the pool and the state are both int64 arrays, so the compiler must
# assume they alias and would otherwise reload the state after every pool write.


@numba.njit(cache=True, inline="always")
def load(k: int, ist: Any, fst: Any) -> Any:
    """Slot k's state as a tuple ``(off, c, h, n, newest, sh, a, b, ev)``."""
    return (ist[k, OFF], ist[k, CLS], ist[k, HEAD], ist[k, CNT], ist[k, NEWEST],
            fst[k, SHIFT], fst[k, S1], fst[k, S2], fst[k, MASS])  # fmt: skip


@numba.njit(cache=True, inline="always")
def store(k: int, ist: Any, fst: Any, off: int, c: int, h: int, n: int, newest: int, sh: float, a: float,
          b: float, ev: float) -> None:  # fmt: skip
    """Write slot k's state back."""
    fst[k, MASS] = ev
    ist[k, OFF] = off
    ist[k, CLS] = c
    ist[k, HEAD] = h
    ist[k, CNT] = n
    ist[k, NEWEST] = newest
    fst[k, SHIFT] = sh
    fst[k, S1] = a
    fst[k, S2] = b


@numba.njit(cache=True, inline="always")
def reserve(off: int, c: int, h: int, n: int, meta: Any, pool_ts: Any, pool_x: Any) -> Any:
    """Room for one more entry: returns ``(ok, off, c, h)``; ``ok`` is False when the pool is full."""
    if off < 0:
        o = _alloc(MIN_CLASS, meta, pool_ts)
        if o < 0:
            return False, off, c, h
        return True, o, MIN_CLASS, 0
    if n == (1 << c):
        o = _alloc(c + 1, meta, pool_ts)
        if o < 0:
            return False, off, c, h
        mask = (1 << c) - 1
        for j in range(n):
            p = off + ((h + j) & mask)
            pool_ts[o + j] = pool_ts[p]
            pool_x[o + j] = pool_x[p]
        _free(off, c, meta, pool_ts)
        return True, o, c + 1, 0
    return True, off, c, h


# Rebase when the squared deviations that went through the running sums exceed this many times the
# window's own: the sums' relative error is about 1e-16 times that ratio.
_REBASE_RATIO = 1e6


@numba.njit(cache=True, inline="always")
def evict(off: int, c: int, h: int, n: int, newest: int, sh: float, a: float, b: float, ev: float, t: int,
          window_ms: int, pool_ts: Any, pool_x: Any) -> Any:  # fmt: skip
    """Advance the newest time to t (if later) and drop entries at or before newest - window.

    Returns ``(h, n, newest, sh, a, b, ev)``. ``ev`` is the mass (sum of squared deviations) that
    went through the running sums since they were last computed exactly. Sums that only add and
    subtract keep the rounding error of everything that passed through: a huge value long gone, or a
    level that drifted far from the shift, would ruin a busy key's deviation. When that mass exceeds
    ``_REBASE_RATIO`` times the window's own squared deviations, the sums are recomputed exactly
    relative to the oldest value still inside; a given value can trigger this at most once, so the
    cost stays amortized O(1) for ordinary data.
    """
    if t > newest:
        newest = t
    lo = newest - window_ms
    mask = (1 << c) - 1
    n0 = n
    while n > 0 and pool_ts[off + h] <= lo:
        d = pool_x[off + h] - sh
        a -= d
        b -= d * d
        ev += d * d
        h = (h + 1) & mask
        n -= 1
    if n < n0:
        if n == 0:
            return h, 0, newest, sh, 0.0, 0.0, 0.0
        if ev > _REBASE_RATIO * max(b - a * a / n, 0.0):
            sh = pool_x[off + h]
            a = 0.0
            b = 0.0
            for j in range(n):
                d = pool_x[off + ((h + j) & mask)] - sh
                a += d
                b += d * d
            ev = 0.0
    return h, n, newest, sh, a, b, ev


@numba.njit(cache=True, inline="always")
def mean_std(n: int, sh: float, a: float, b: float) -> Any:
    """Mean and sample standard deviation of a window (NaN when undefined)."""
    if n == 0:
        return np.nan, np.nan
    m = a / n
    if n == 1:
        return sh + m, np.nan
    var = (b - a * m) / (n - 1)
    return sh + m, (np.sqrt(var) if var > 0.0 else 0.0)


@numba.njit(cache=True, inline="always")
def insert(off: int, c: int, h: int, n: int, newest: int, sh: float, a: float, b: float, ev: float, t: int,
           v: float, window_ms: int, pool_ts: Any, pool_x: Any) -> Any:  # fmt: skip
    """Insert (t, v) at its time-sorted place (after :func:`reserve`); returns ``(n, sh, a, b, ev)``."""
    if t <= newest - window_ms:
        return n, sh, a, b, ev  # older than the window: nothing to keep
    if n == 0:
        sh = v
        a = 0.0
        b = 0.0
        ev = 0.0
    mask = (1 << c) - 1
    j = n
    while j > 0:
        q = off + ((h + j - 1) & mask)
        if pool_ts[q] <= t:
            break
        r = off + ((h + j) & mask)
        pool_ts[r] = pool_ts[q]
        pool_x[r] = pool_x[q]
        j -= 1
    r = off + ((h + j) & mask)
    pool_ts[r] = t
    pool_x[r] = v
    d = v - sh
    return n + 1, sh, a + d, b + d * d, ev + d * d


@numba.njit(cache=True)
def window_update(
    slots: Any, ts: Any, x: Any, learn: Any, start: int, window_ms: int,
    ist: Any, fst: Any, meta: Any, pool_ts: Any, pool_x: Any,
    out_n: Any, out_mean: Any, out_std: Any,
) -> int:  # fmt: skip
    """Process rows ``start..`` in order: evict, report the window's stats, then insert the row.

    ``learn[i]`` false means row i is reported but not added. Returns the number of rows done;
    fewer than ``len(slots)`` means the pool is full: grow it and call again from there.
    """
    for i in range(start, slots.shape[0]):
        k = slots[i]
        off, c, h, n, newest, sh, a, b, ev = load(k, ist, fst)
        ok, off, c, h = reserve(off, c, h, n, meta, pool_ts, pool_x)
        if not ok:
            return i
        h, n, newest, sh, a, b, ev = evict(off, c, h, n, newest, sh, a, b, ev, ts[i], window_ms, pool_ts, pool_x)
        out_n[i] = n
        out_mean[i], out_std[i] = mean_std(n, sh, a, b)
        if learn[i]:
            n, sh, a, b, ev = insert(off, c, h, n, newest, sh, a, b, ev, ts[i], x[i], window_ms, pool_ts, pool_x)
        store(k, ist, fst, off, c, h, n, newest, sh, a, b, ev)
    return slots.shape[0]


@numba.njit(cache=True)
def _release(slots: Any, ist: Any, fst: Any, meta: Any, pool_ts: Any) -> None:
    for k in slots:
        if ist[k, OFF] >= 0:
            _free(ist[k, OFF], ist[k, CLS], meta, pool_ts)
        ist[k, OFF] = -1
        ist[k, CLS] = 0
        ist[k, HEAD] = 0
        ist[k, CNT] = 0
        ist[k, NEWEST] = _NO_TIME
        fst[k, SHIFT] = 0.0
        fst[k, S1] = 0.0
        fst[k, S2] = 0.0
        fst[k, MASS] = 0.0


@numba.njit(cache=True)
def _ring_indices(ks, ist, out):  # type: ignore[no-untyped-def]  # noqa: ANN001
    """Pool indices of each slot's ring (``2**CLS`` entries at ``OFF``, oldest at ``HEAD``), in time order."""
    j = 0
    for k in ks:
        mask = (1 << ist[k, CLS]) - 1
        off, head = ist[k, OFF], ist[k, HEAD]
        for i in range(ist[k, CNT]):
            out[j] = off + ((head + i) & mask)
            j += 1


class TimeWindowState:
    """Exact sliding event-time windows for many keys (struct of arrays + a pooled ring store).

    Args:
        window_ms: length of the window in event time.
        capacity: initial number of key slots (grows on demand).
        pool_size: initial number of buffered (ts, x) entries (grows on demand).

    Examples:
        >>> w = TimeWindowState(window_ms=60_000)
        >>> n, mean, std = w.update(np.array([0, 0, 0, 0], np.int32), np.array([0, 1000, 2000, 60_500]),
        ...                         np.array([1.0, 2.0, 3.0, 4.0]))
        >>> n.tolist(), mean.tolist()   # stats before each row; at 60.5 s the event at 0 s has left
        ([0, 1, 2, 2], [nan, 1.0, 1.5, 2.5])
    """

    def __init__(self, window_ms: int, capacity: int = 1024, pool_size: int = 1 << 16) -> None:
        if window_ms <= 0:
            raise ValueError(f"`window_ms` must be > 0; got {window_ms!r}")
        self.window_ms = int(window_ms)
        self.ist = self._new_ist(capacity)
        self.fst = np.zeros((capacity, N_FLOAT), np.float64)
        self.meta = np.full(1 + N_CLASSES, -1, np.int64)
        self.meta[0] = 0
        self.pool_ts = np.zeros(pool_size, np.int64)
        self.pool_x = np.zeros(pool_size, np.float64)

    @staticmethod
    def _new_ist(n: int) -> np.ndarray:
        ist = np.zeros((n, 5), np.int64)
        ist[:, OFF] = -1
        ist[:, NEWEST] = _NO_TIME
        return ist

    @property
    def capacity(self) -> int:
        """Number of key slots the arrays hold."""
        return int(self.ist.shape[0])

    def ensure_capacity(self, n_slots: int) -> None:
        """Grow the per-slot arrays to hold at least ``n_slots`` slots."""
        cap = self.capacity
        if n_slots <= cap:
            return
        new = max(n_slots, 2 * cap)
        ist = self._new_ist(new)
        ist[:cap] = self.ist
        fst = np.zeros((new, N_FLOAT), np.float64)
        fst[:cap] = self.fst
        self.ist, self.fst = ist, fst

    def grow_pool(self) -> None:
        """Double the entry pool (called when a kernel reports it is full)."""
        size = self.pool_ts.shape[0]
        ts = np.zeros(2 * size, np.int64)
        xs = np.zeros(2 * size, np.float64)
        ts[:size] = self.pool_ts
        xs[:size] = self.pool_x
        self.pool_ts, self.pool_x = ts, xs

    def update(
        self,
        slots: Int32Array,
        ts_ms: Int64Array,
        x: Float64Array,
        learn: np.ndarray | None = None,
    ) -> tuple[Int64Array, Float64Array, Float64Array]:
        """Process rows in order; return the window (count, mean, sample std) each row saw before it was added.

        Args:
            slots: key slot per row.
            ts_ms: event time per row.
            x: value per row (must be finite).
            learn: optional bool mask; rows with False are reported but not added.
        """
        m = slots.shape[0]
        if m and int(slots.max()) >= self.capacity:
            self.ensure_capacity(int(slots.max()) + 1)
        if learn is None:
            learn = np.ones(m, np.bool_)
        out_n = np.empty(m, np.int64)
        out_mean = np.empty(m, np.float64)
        out_std = np.empty(m, np.float64)
        done = 0
        while True:
            done = window_update(
                slots, ts_ms, x, learn, done, self.window_ms,
                self.ist, self.fst, self.meta, self.pool_ts, self.pool_x, out_n, out_mean, out_std,
            )  # fmt: skip
            if done >= m:
                return out_n, out_mean, out_std
            self.grow_pool()

    def count(self, slots: Int32Array) -> Int64Array:
        """Events currently in the window of each slot (as of the newest event seen for it)."""
        return self.ist[slots, CNT]

    def reset_slots(self, slots: Int32Array) -> None:
        """Forget the windows of ``slots`` (expired keys) and return their buffers to the pool."""
        slots = slots[slots < self.capacity]
        if len(slots):
            _release(slots.astype(np.int64), self.ist, self.fst, self.meta, self.pool_ts)

    @property
    def buffered(self) -> int:
        """Number of (ts, x) entries currently held in windows."""
        return int(self.ist[:, CNT].sum())

    @property
    def nbytes(self) -> int:
        """Memory held by the state arrays and the pool."""
        return int(self.ist.nbytes + self.fst.nbytes + self.pool_ts.nbytes + self.pool_x.nbytes)

    def snapshot(self) -> dict[str, Any]:
        """Plain data: per slot, the window's entries in time order (compact; the pool is rebuilt on restore)."""
        counts = self.ist[:, CNT].copy()
        idx = self._entries(np.flatnonzero(counts > 0))
        return {
            "window_ms": self.window_ms,
            "cnt": counts,
            "newest": self.ist[:, NEWEST].copy(),
            "fst": self.fst.copy(),
            "ts": self.pool_ts[idx],
            "x": self.pool_x[idx],
        }

    def _entries(self, ks: Int64Array) -> Int64Array:
        """Pool indices of the windows of slots ``ks``, slot after slot, each in time order (one gather)."""
        ks = np.asarray(ks, np.int64)
        out = np.empty(int(self.ist[ks, CNT].sum()), np.int64)
        _ring_indices(ks, self.ist, out)
        return out

    def export_slots(self, slots: Int32Array) -> list[dict[str, Any]]:
        """Per slot, its window as plain data: entries in time order, newest time, running sums (bit for bit).

        A slot never seen exports an empty window. :meth:`import_slots` puts it into any slot of any
        instance with the same ``window_ms``; later results are those of the uninterrupted run.
        """
        out = []
        for k in np.asarray(slots, np.int64).tolist():
            if k >= self.capacity:
                out.append({"newest": int(_NO_TIME), "fst": np.zeros(N_FLOAT), "ts": np.empty(0, np.int64),
                            "x": np.empty(0, np.float64)})  # fmt: skip
                continue
            n = int(self.ist[k, CNT])
            idx = self.ist[k, OFF] + ((self.ist[k, HEAD] + np.arange(n)) & ((1 << int(self.ist[k, CLS])) - 1))
            out.append({"newest": int(self.ist[k, NEWEST]), "fst": self.fst[k].copy(),
                        "ts": self.pool_ts[idx] if n else np.empty(0, np.int64),
                        "x": self.pool_x[idx] if n else np.empty(0, np.float64)})  # fmt: skip
        return out

    def import_slots(self, slots: Int32Array, states: list[dict[str, Any] | None]) -> None:
        """Load :meth:`export_slots` output into ``slots`` (``None``: an empty window), growing as needed."""
        slots = np.asarray(slots, np.int64)
        if len(states) != len(slots):
            raise ValueError(f"got {len(states)} window states for {len(slots)} slots")
        if len(slots):
            self.ensure_capacity(int(slots.max()) + 1)
        for k, st in zip(slots.tolist(), states, strict=True):
            one = np.array([k], np.int32)
            self.reset_slots(one)
            if st is None:
                continue
            ts = np.asarray(st["ts"], np.int64)
            # entries are sorted and all inside the window anchored at the newest time: none is evicted
            self.ist[k, NEWEST] = int(st["newest"])
            if len(ts):
                self.update(np.repeat(one, len(ts)), ts, np.asarray(st["x"], np.float64))
            self.ist[k, NEWEST] = int(st["newest"])
            self.fst[k] = np.asarray(st["fst"], np.float64)  # running sums bit for bit, as in from_snapshot

    @classmethod
    def from_snapshot(cls, snap: dict[str, Any]) -> TimeWindowState:
        """Rebuild from :meth:`snapshot` output; later results are identical to the uninterrupted run."""
        cnt = np.asarray(snap["cnt"], np.int64)
        n_slots = max(1, len(cnt))
        w = cls(int(snap["window_ms"]), capacity=n_slots, pool_size=max(1 << 16, 2 * int(cnt.sum())))
        newest = np.asarray(snap["newest"], np.int64)
        order_slots = np.repeat(np.arange(len(cnt), dtype=np.int32), cnt)
        if len(order_slots):
            # entries are sorted per slot and all inside the window anchored at the slot's newest time
            w.ist[: len(newest), NEWEST] = newest
            w.update(order_slots, np.asarray(snap["ts"], np.int64), np.asarray(snap["x"], np.float64))
        w.ist[: len(newest), NEWEST] = newest
        # running sums restored bit for bit, so later scores equal the uninterrupted run's
        fst = np.asarray(snap["fst"], np.float64)
        w.fst[: len(fst)] = fst
        return w
