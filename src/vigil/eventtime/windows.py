"""Window assigners and keyed windowed aggregation over micro-batches.

Windows are half-open event-time intervals ``[start_ms, end_ms)``; the assigners (re-exported here)
live in :mod:`vigil.eventtime.assigners`. :class:`WindowAggregator` keeps per-(slot, window)
accumulators and emits a window once the watermark passes ``end_ms + allowed_lateness_ms``.

Late rule (Flink's): a row is late for a window when ``end_ms + allowed_lateness_ms <= watermark``
in force before the row; such rows are not aggregated into that window. Watermarks passed to
:meth:`WindowAggregator.add` and :meth:`WindowAggregator.advance` must never go back, and ``advance``
must not run ahead of the watermark of later rows (call it with the tracker's watermark after the
batch) -- then results do not depend on how the stream is cut into batches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from vigil.errors import ConfigError, SnapshotError
from vigil.eventtime import _window_kernels as K
from vigil.eventtime.assigners import (
    AnyAssigner,
    SessionWindows,
    SlidingWindows,
    TumblingWindows,
    WindowAssigner,
    assigner_from_params,
)
from vigil.eventtime.watermarks import sub_ms, sub_ms_array
from vigil.types import Float64Array, Int32Array, Int64Array

__all__ = [
    "Emit",
    "LateSplit",
    "SessionWindows",
    "SlidingWindows",
    "TumblingWindows",
    "WindowAggregator",
    "WindowAssigner",
    "WindowResults",
    "assigner_from_params",
]

Emit = Literal["final", "current"]
_ACC_NAMES = ("count", "sum", "m2", "min", "max")  # accumulator columns, in the kernels' order


@dataclass(slots=True)
class WindowResults:
    """Columnar window aggregates, sorted by ``(end_ms, slot, start_ms)``.

    ``std`` is the sample standard deviation (ddof=1), NaN when ``count < 2``.

    Examples:
        >>> r = WindowResults.empty()
        >>> len(r), r.mean.dtype
        (0, dtype('float64'))
    """

    slot: Int32Array
    start_ms: Int64Array
    end_ms: Int64Array
    count: Int64Array
    sum: Float64Array
    mean: Float64Array
    std: Float64Array
    min: Float64Array
    max: Float64Array

    def __len__(self) -> int:
        return int(self.slot.shape[0])

    @staticmethod
    def empty() -> WindowResults:
        """No windows."""
        return WindowResults._build(
            np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.int64), np.empty((0, K.N_ACC))
        )

    @staticmethod
    def _build(slot: Int64Array, start: Int64Array, end: Int64Array, acc: np.ndarray) -> WindowResults:
        order = np.lexsort((start, slot, end))
        acc = acc[order]
        count = acc[:, K.COUNT]
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = acc[:, K.SUM] / count
            var = np.maximum(acc[:, K.M2], 0.0) / (count - 1.0)
        std = np.where(count >= 2, np.sqrt(np.where(count >= 2, var, 0.0)), np.nan)
        return WindowResults(
            slot[order].astype(np.int32),
            start[order].copy(),
            end[order].copy(),
            count.astype(np.int64),
            acc[:, K.SUM].copy(),
            mean,
            std,
            acc[:, K.MIN].copy(),
            acc[:, K.MAX].copy(),
        )


@dataclass(slots=True)
class LateSplit:
    """What :meth:`WindowAggregator.add` did with a batch.

    Attributes:
        late: indices of rows aggregated into no window because all their windows had closed -- the
            late side output.
        partial: indices of rows (sliding windows only) too late for some of their windows but
            aggregated into the others.
        updated: with ``emit="current"``, the current aggregates of the windows this batch touched;
            ``None`` with ``emit="final"``.

    Examples:
        >>> LateSplit(np.array([2]), np.empty(0, np.int64)).late.tolist()
        [2]
    """

    late: Int64Array
    partial: Int64Array
    updated: WindowResults | None = None


class WindowAggregator:
    """Keyed windowed aggregation (count, sum, mean, std, min, max) over micro-batches.

    Args:
        assigner: :class:`TumblingWindows`, :class:`SlidingWindows` or :class:`SessionWindows`.
        allowed_lateness_ms: a window stays open this long after the watermark passes its end.
        emit: ``"final"`` emits each window once, from :meth:`advance`, when it closes; ``"current"``
            also returns the updated aggregates of touched windows after each :meth:`add` (for
            sessions, an update may refer to a session that a later event merges into a larger one).

    Examples:
        >>> agg = WindowAggregator(TumblingWindows(10))
        >>> slots, ts = np.array([0, 0, 1], np.int32), np.array([1, 4, 12])
        >>> agg.add(slots, ts, np.array([1.0, 3.0, 5.0]), np.array([0, 0, 0])).late.tolist()
        []
        >>> r = agg.advance(watermark_ms=10)
        >>> r.slot.tolist(), r.start_ms.tolist(), r.count.tolist(), r.mean.tolist(), agg.state_size
        ([0], [0], [2], [2.0], 1)
        >>> agg.add(slots[:1], np.array([7]), np.array([9.0]), np.array([10])).late.tolist()   # window closed
        [0]
    """

    def __init__(self, assigner: AnyAssigner, allowed_lateness_ms: int = 0, emit: Emit = "final") -> None:
        if allowed_lateness_ms < 0:
            raise ConfigError("must be >= 0", field="allowed_lateness_ms", value=allowed_lateness_ms)
        if emit not in ("final", "current"):
            raise ConfigError("must be 'final' or 'current'", field="emit", value=emit)
        self.assigner = assigner
        self.allowed_lateness_ms = int(allowed_lateness_ms)
        self.emit: Emit = emit
        self._session = isinstance(assigner, SessionWindows)
        self._gap_ms = assigner.gap_ms if isinstance(assigner, SessionWindows) else 0
        self._size_ms = 0 if isinstance(assigner, SessionWindows) else int(assigner.size_ms)
        if self._session:
            self._clear_sessions()
        else:
            self._alloc_fixed(1024)

    # -- state layouts ---------------------------------------------------------------------------------

    def _clear_sessions(self) -> None:
        """Sessions: struct of arrays sorted by (slot, start)."""
        self._s_slot = np.empty(0, np.int64)
        self._s_start = np.empty(0, np.int64)
        self._s_end = np.empty(0, np.int64)
        self._s_acc = np.empty((0, K.N_ACC), np.float64)

    def _alloc_fixed(self, capacity: int) -> None:
        """Fixed windows: accumulator rows found through a typed dict ``(slot, start) -> row``."""
        self._index = K.new_window_index()
        self._w_slot = np.zeros(capacity, np.int64)
        self._w_start = np.zeros(capacity, np.int64)
        self._acc = np.zeros((capacity, K.N_ACC), np.float64)
        self._live = np.zeros(capacity, np.bool_)
        self._touched = np.zeros(capacity, np.bool_)
        self._free = np.zeros(capacity, np.int64)
        self._counters = np.zeros(2, np.int64)  # [n_free, high_water]

    def _reserve(self, extra: int) -> None:
        need = int(self._counters[1]) + extra
        cap = self._w_slot.shape[0]
        if need <= cap:
            return
        new_cap = max(need, 2 * cap)
        for name in ("_w_slot", "_w_start", "_acc", "_live", "_touched", "_free"):
            old = getattr(self, name)
            grown = np.zeros((new_cap,) + old.shape[1:], old.dtype)
            grown[:cap] = old
            setattr(self, name, grown)

    @property
    def state_size(self) -> int:
        """Number of open windows held in state."""
        if self._session:
            return int(self._s_slot.shape[0])
        return int(self._counters[1] - self._counters[0])

    # -- processing ------------------------------------------------------------------------------------

    def add(
        self, slots: Int32Array, ts_ms: Int64Array, values: Float64Array, watermark_before: Int64Array
    ) -> LateSplit:
        """Aggregate a batch; rows whose windows already closed are returned as late, not aggregated.

        Args:
            slots: key slot per row.
            ts_ms: event time per row.
            values: the value to aggregate per row.
            watermark_before: watermark in force before each row (from :meth:`WatermarkTracker.on_batch`).
        """
        ts = np.asarray(ts_ms, np.int64)
        slot = np.asarray(slots, np.int64)
        vals = np.asarray(values, np.float64)
        thr = sub_ms_array(np.asarray(watermark_before, np.int64), self.allowed_lateness_ms)
        if self._session:
            return self._add_sessions(slot, ts, vals, thr)
        assert not isinstance(self.assigner, SessionWindows)
        rows, starts = self.assigner.assign(ts)
        ok = (starts + np.int64(self._size_ms)) > thr[rows]
        n_ok = np.bincount(rows[ok], minlength=ts.shape[0])
        n_all = np.bincount(rows, minlength=ts.shape[0])
        late = np.flatnonzero((n_ok == 0) & (n_all > 0))
        partial = np.flatnonzero((n_ok > 0) & (n_ok < n_all))
        r_ok = rows[ok]
        self._reserve(r_ok.shape[0])
        K.fixed_add(
            self._index,
            self._w_slot,
            self._w_start,
            self._acc,
            self._live,
            self._touched,
            self._free,
            self._counters,
            slot[r_ok],
            starts[ok],
            vals[r_ok],
        )
        updated = None
        if self.emit == "current":
            idx = np.flatnonzero(self._touched)
            updated = self._fixed_results(idx)
        self._touched[:] = False
        return LateSplit(late.astype(np.int64), partial.astype(np.int64), updated)

    def _add_sessions(
        self, slot: Int64Array, ts: Int64Array, vals: Float64Array, thr: Int64Array
    ) -> LateSplit:
        gap = self._gap_ms
        order = np.argsort(slot, kind="stable")
        s_slot, s_start, s_end, s_acc, touched, late = K.session_add(
            self._s_slot, self._s_start, self._s_end, self._s_acc, order, slot, ts, vals, thr, int(gap)
        )
        self._s_slot, self._s_start, self._s_end, self._s_acc = s_slot, s_start, s_end, s_acc
        updated = None
        if self.emit == "current":
            updated = WindowResults._build(s_slot[touched], s_start[touched], s_end[touched], s_acc[touched])
        return LateSplit(np.flatnonzero(late).astype(np.int64), np.empty(0, np.int64), updated)

    def _fixed_results(self, idx: Int64Array) -> WindowResults:
        start = self._w_start[idx]
        return WindowResults._build(self._w_slot[idx], start, start + np.int64(self._size_ms), self._acc[idx])

    def advance(self, watermark_ms: int) -> WindowResults:
        """Emit and drop every window with ``end_ms + allowed_lateness_ms <= watermark_ms``.

        Pass :data:`~vigil.eventtime.watermarks.MAX_WATERMARK` to flush everything at end of stream.
        """
        thr = np.int64(sub_ms(watermark_ms, self.allowed_lateness_ms))
        if self._session:
            closed = self._s_end <= thr
            if not closed.any():
                return WindowResults.empty()
            out = WindowResults._build(
                self._s_slot[closed], self._s_start[closed], self._s_end[closed], self._s_acc[closed]
            )
            self._keep_sessions(~closed)
            return out
        top = int(self._counters[1])
        size = np.int64(self._size_ms)
        closed = self._live[:top] & (self._w_start[:top] + size <= thr)
        idx = np.flatnonzero(closed)
        if idx.shape[0] == 0:
            return WindowResults.empty()
        out = self._fixed_results(idx)
        K.fixed_remove(self._index, self._w_slot, self._w_start, idx, self._live, self._free, self._counters)
        return out

    def _keep_sessions(self, keep: np.ndarray) -> None:
        self._s_slot, self._s_start = self._s_slot[keep], self._s_start[keep]
        self._s_end, self._s_acc = self._s_end[keep], self._s_acc[keep]

    def reset_slots(self, slots: Int32Array) -> None:
        """Forget every window of ``slots`` (keys expired by TTL) without emitting them."""
        slots = np.asarray(slots, np.int64)
        if self._session:
            self._keep_sessions(~np.isin(self._s_slot, slots))
            return
        top = int(self._counters[1])
        idx = np.flatnonzero(self._live[:top] & np.isin(self._w_slot[:top], slots))
        K.fixed_remove(self._index, self._w_slot, self._w_start, idx, self._live, self._free, self._counters)

    # -- per-key slices --------------------------------------------------------------------------------

    def export_slots(self, slots: Int32Array) -> list[dict[str, Any]]:
        """Per slot, its open windows as plain data (``start_ms``, ``end_ms`` and the accumulator columns).

        :meth:`import_slots` puts them into any slot of an aggregator with the same params; that key's later
        windows and late rows are then those of the uninterrupted run.
        """
        slot, start, end, acc = self._open_windows()
        out = []
        for k in np.asarray(slots, np.int64).tolist():
            rows = np.flatnonzero(slot == k)
            rows = rows[np.argsort(start[rows], kind="stable")]
            out.append({"start_ms": start[rows].copy(), "end_ms": end[rows].copy(),
                        **{name: acc[rows, i].copy() for i, name in enumerate(_ACC_NAMES)}})  # fmt: skip
        return out

    def import_slots(self, slots: Int32Array, states: list[dict[str, Any] | None]) -> None:
        """Replace the open windows of ``slots`` with :meth:`export_slots` output (``None``: no open window)."""
        slots = np.asarray(slots, np.int64)
        if len(states) != len(slots):
            raise ValueError(f"got {len(states)} window states for {len(slots)} slots")
        for k, st in zip(slots.tolist(), states, strict=True):
            self.reset_slots(np.array([k], np.int64))
            if st is None or not len(st["start_ms"]):
                continue
            start = np.asarray(st["start_ms"], np.int64)
            acc = np.stack([np.asarray(st[n], np.float64) for n in _ACC_NAMES], axis=1).reshape(-1, K.N_ACC)
            key = np.full(len(start), k, np.int64)
            if self._session:
                slot_all = np.concatenate([self._s_slot, key])
                start_all = np.concatenate([self._s_start, start])
                order = np.lexsort((start_all, slot_all))
                self._s_slot, self._s_start = slot_all[order], start_all[order]
                self._s_end = np.concatenate([self._s_end, np.asarray(st["end_ms"], np.int64)])[order]
                self._s_acc = np.concatenate([self._s_acc, acc])[order]
            else:
                self._reserve(len(start))
                K.fixed_insert(self._index, self._w_slot, self._w_start, self._acc, self._live, self._free,
                               self._counters, key, start, acc)  # fmt: skip

    def next_close_ms(self, slots: Int32Array) -> Int64Array:
        """Per slot, the watermark at which :meth:`advance` closes its oldest open window (max int64: none open).

        Examples:
            >>> agg = WindowAggregator(TumblingWindows(10), allowed_lateness_ms=5)
            >>> _ = agg.add(np.array([0, 0, 1]), np.array([3, 14, 21]), np.ones(3), np.zeros(3, np.int64))
            >>> agg.next_close_ms(np.array([0, 1, 2])).tolist()[:2]
            [15, 35]
        """
        slots = np.asarray(slots, np.int64)
        out = np.full(len(slots), np.iinfo(np.int64).max, np.int64)
        slot, _, end, _ = self._open_windows()
        if len(slot) and len(slots):
            order = np.argsort(slots)
            first = np.full(len(slots), np.iinfo(np.int64).max, np.int64)
            hit = np.isin(slot, slots)
            if hit.any():
                s, e = slot[hit], end[hit]
                pos = order[np.searchsorted(slots[order], s)]
                np.minimum.at(first, pos, e)
            done = first != np.iinfo(np.int64).max
            out[done] = first[done] + np.int64(self.allowed_lateness_ms)
        return out

    # -- snapshots -------------------------------------------------------------------------------------

    def _open_windows(self) -> tuple[Int64Array, Int64Array, Int64Array, np.ndarray]:
        if self._session:
            return self._s_slot, self._s_start, self._s_end, self._s_acc
        idx = np.flatnonzero(self._live[: int(self._counters[1])])
        start = self._w_start[idx]
        return self._w_slot[idx], start, start + np.int64(self._size_ms), self._acc[idx]

    def snapshot(self) -> dict[str, Any]:
        """Plain data ``{kind, version, params, state}``; state holds the open windows as arrays."""
        slot, start, end, acc = self._open_windows()
        return {
            "kind": "window_aggregator",
            "version": 1,
            "params": {
                "assigner": self.assigner.to_params(),
                "allowed_lateness_ms": self.allowed_lateness_ms,
                "emit": self.emit,
            },
            "state": {
                "slot": slot.copy(),
                "start_ms": start.copy(),
                "end_ms": end.copy(),
                **{name: acc[:, i].copy() for i, name in enumerate(_ACC_NAMES)},
            },
        }

    @classmethod
    def from_snapshot(cls, snap: dict[str, Any]) -> WindowAggregator:
        """Rebuild an aggregator from :meth:`snapshot` output."""
        if snap.get("kind") != "window_aggregator" or snap.get("version") != 1:
            raise SnapshotError(
                f"expected a window_aggregator v1 snapshot; got {snap.get('kind')!r} v{snap.get('version')!r}"
            )
        p = snap["params"]
        agg = cls(assigner_from_params(p["assigner"]), p["allowed_lateness_ms"], p["emit"])
        s = snap["state"]
        slot = np.asarray(s["slot"], np.int64)
        start = np.asarray(s["start_ms"], np.int64)
        acc = np.stack([np.asarray(s[n], np.float64) for n in _ACC_NAMES], axis=1)
        acc = acc.reshape(-1, K.N_ACC)
        if agg._session:
            order = np.lexsort((start, slot))
            agg._s_slot, agg._s_start = slot[order], start[order]
            agg._s_end, agg._s_acc = np.asarray(s["end_ms"], np.int64)[order], acc[order]
        else:
            n = slot.shape[0]
            agg._alloc_fixed(max(1024, 2 * n))
            agg._w_slot[:n], agg._w_start[:n], agg._acc[:n], agg._live[:n] = slot, start, acc, True
            agg._counters[1] = n
            K.fixed_rebuild(agg._index, agg._w_slot, agg._w_start, n)
        return agg
