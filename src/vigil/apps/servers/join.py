"""The windowed join: per host and tumbling event-time window, one vector of metric means (see the package doc)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from vigil.eventtime.watermarks import sub_ms, sub_ms_array


@dataclass(slots=True)
class JoinedWindows:
    """Feature vectors, one row per (host slot, window), sorted by ``(start_ms, slot)``.

    ``value`` is the window mean per metric (imputed where ``missing``), ``max`` the window max (the imputed
    value where missing), ``count`` the samples per metric, ``imputed`` the missing cells that got a value,
    ``delta`` the change of the mean since the host's previous window (NaN unless both were observed).
    """

    slot: np.ndarray
    start_ms: np.ndarray
    end_ms: np.ndarray
    value: np.ndarray
    max: np.ndarray
    count: np.ndarray
    missing: np.ndarray
    imputed: np.ndarray
    delta: np.ndarray

    def __len__(self) -> int:
        return int(self.slot.shape[0])

    @property
    def n_missing(self) -> np.ndarray:
        """Missing metrics per row."""
        return self.missing.sum(axis=1)

    @staticmethod
    def empty(m: int) -> JoinedWindows:
        """No rows."""
        z = np.empty((0, m))
        return JoinedWindows(np.empty(0, np.int32), np.empty(0, np.int64), np.empty(0, np.int64), z, z.copy(),
                             np.empty((0, m), np.int64), np.empty((0, m), bool), np.empty((0, m), bool),
                             z.copy())  # fmt: skip

    @staticmethod
    def concat(parts: list[JoinedWindows], m: int) -> JoinedWindows:
        """Rows of consecutive outputs as one."""
        parts = [p for p in parts if len(p)]
        if not parts:
            return JoinedWindows.empty(m)
        return JoinedWindows(*(np.concatenate([getattr(p, f) for p in parts]) for f in JoinedWindows.__slots__))


class MultiMetricJoin:
    """Per host and tumbling window, one vector of metric means and maxes (see the module docstring).

    Args:
        n_metrics: number of metrics (rows carry a metric index in ``[0, n_metrics)``).
        window_ms: tumbling window size.
        allowed_lateness_ms: a window stays open this long after the watermark passes its end.
        carry_windows: how many windows a last value may be carried forward before the running mean is used.

    Examples:
        >>> j = MultiMetricJoin(2, window_ms=10)
        >>> late = j.add(np.array([0, 0, 0, 1]), np.array([0, 0, 1, 0]), np.array([1, 5, 3, 4]),
        ...              np.array([1.0, 3.0, 7.0, 9.0]), np.full(4, -1))
        >>> r = j.advance(10)
        >>> r.slot.tolist(), r.value.tolist(), r.missing.tolist()
        ([0, 1], [[2.0, 7.0], [9.0, nan]], [[False, False], [False, True]])
        >>> j.add(np.array([1]), np.array([1]), np.array([12]), np.array([5.0]), np.array([10])).tolist()
        []
        >>> r = j.advance(20); r.value.tolist(), r.imputed.tolist()    # host 1's cpu carried forward
        ([[9.0, 5.0]], [[True, False]])
    """

    def __init__(self, n_metrics: int, *, window_ms: int = 10_000, allowed_lateness_ms: int = 0,
                 carry_windows: int = 3) -> None:  # fmt: skip
        if window_ms <= 0:
            raise ValueError(f"`window_ms` must be > 0; got {window_ms!r}")
        if allowed_lateness_ms < 0 or carry_windows < 0:
            raise ValueError("`allowed_lateness_ms` and `carry_windows` must be >= 0; "
                             f"got {allowed_lateness_ms!r}, {carry_windows!r}")  # fmt: skip
        self.m = int(n_metrics)
        self.window_ms = int(window_ms)
        self.allowed_lateness_ms = int(allowed_lateness_ms)
        self.carry_windows = int(carry_windows)
        self._cap = 0
        self._open: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        # per host and metric: last observed window mean and its window start, running sum and count of means
        self.last_val = self.run_sum = np.empty((0, self.m), np.float64)
        self.last_start = self.run_n = np.empty((0, self.m), np.int64)
        self._alloc(64)

    def _alloc(self, cap: int) -> None:
        m, old = self.m, self._cap
        grow = {"last_val": np.nan, "last_start": np.iinfo(np.int64).min, "run_sum": 0.0, "run_n": 0}
        for name, fill in grow.items():
            arr = np.full((cap, m), fill, np.int64 if name in ("last_start", "run_n") else np.float64)
            if old:
                arr[:old] = getattr(self, name)
            setattr(self, name, arr)
        for start, (s, c, mx) in list(self._open.items()):
            s2, c2, mx2 = np.zeros((cap, m)), np.zeros((cap, m), np.int64), np.full((cap, m), -np.inf)
            s2[:old], c2[:old], mx2[:old] = s, c, mx
            self._open[start] = (s2, c2, mx2)
        self._cap = cap

    def snapshot(self) -> dict[str, Any]:
        """Plain data (numpy arrays): the open windows' accumulators and each host's carry-forward state."""
        return {"cap": self._cap, "open": [[s, *acc] for s, acc in sorted(self._open.items())],
                **{n: getattr(self, n) for n in ("last_val", "last_start", "run_sum", "run_n")}}  # fmt: skip

    def restore(self, state: dict[str, Any]) -> None:
        """Load :meth:`snapshot` output (same ``n_metrics``)."""
        self._cap = int(state["cap"])
        for n in ("last_val", "last_start", "run_sum", "run_n"):
            setattr(self, n, np.array(state[n]))
        self._open = {int(s): (np.array(a), np.array(c), np.array(mx)) for s, a, c, mx in state["open"]}

    def reset_slots(self, slots: np.ndarray) -> None:
        """Forget these hosts (their slots may be reused by new hosts)."""
        s = np.asarray(slots, np.int64)
        s = s[s < self._cap]
        self.last_val[s], self.last_start[s] = np.nan, np.iinfo(np.int64).min
        self.run_sum[s], self.run_n[s] = 0.0, 0
        for acc in self._open.values():
            acc[0][s], acc[1][s], acc[2][s] = 0.0, 0, -np.inf

    # -- per-key slices (Flink keyed state) -----------------------------------------------------------

    def export_slots(self, slots: np.ndarray) -> list[dict[str, Any]]:
        """Per host slot: its carry-forward state and its samples in each open window (plain data)."""
        out = []
        for k in np.asarray(slots, np.int64).tolist():
            if k >= self._cap:
                out.append(self._fresh_slice())
                continue
            out.append({"last_val": self.last_val[k].copy(), "last_start": self.last_start[k].copy(),
                        "run_sum": self.run_sum[k].copy(), "run_n": self.run_n[k].copy(),
                        "open": [[s, a[k].copy(), c[k].copy(), mx[k].copy()]
                                 for s, (a, c, mx) in sorted(self._open.items()) if c[k].any()]})  # fmt: skip
        return out

    def _fresh_slice(self) -> dict[str, Any]:
        m = self.m
        return {"last_val": np.full(m, np.nan), "last_start": np.full(m, np.iinfo(np.int64).min, np.int64),
                "run_sum": np.zeros(m), "run_n": np.zeros(m, np.int64), "open": []}  # fmt: skip

    def import_slots(self, slots: np.ndarray, states: list[dict[str, Any] | None]) -> None:
        """Load :meth:`export_slots` output into ``slots`` (``None``: a host never seen)."""
        slots = np.asarray(slots, np.int64)
        if len(states) != len(slots):
            raise ValueError(f"got {len(states)} join states for {len(slots)} slots")
        if len(slots) and int(slots.max()) >= self._cap:
            self._alloc(max(2 * self._cap, int(slots.max()) + 1))
        self.reset_slots(slots)
        for k, st in zip(slots.tolist(), states, strict=True):
            if st is None:
                continue
            for n in ("last_val", "last_start", "run_sum", "run_n"):
                getattr(self, n)[k] = st[n]
            for s, a, c, mx in st["open"]:
                acc = self._open.get(int(s))
                if acc is None:
                    cap, m = self._cap, self.m
                    acc = self._open[int(s)] = (np.zeros((cap, m)), np.zeros((cap, m), np.int64),
                                                np.full((cap, m), -np.inf))  # fmt: skip
                acc[0][k], acc[1][k], acc[2][k] = a, c, mx

    def next_close_ms(self, slots: np.ndarray) -> np.ndarray:
        """Per host slot, the watermark at which its oldest open window is emitted (max int64: none open)."""
        never = np.iinfo(np.int64).max
        out = np.full(len(slots), never, np.int64)
        s = np.asarray(slots, np.int64)
        inside = s < self._cap
        for start in sorted(self._open):
            c = self._open[start][1]
            hit = inside & (out == never)
            if not hit.any():
                break
            has = np.zeros(len(s), bool)
            has[hit] = c[s[hit]].any(axis=1)
            out[has] = start + self.window_ms + self.allowed_lateness_ms
        return out

    @property
    def open_windows(self) -> int:
        """Windows held in state."""
        return len(self._open)

    def add(self, slots: np.ndarray, metric: np.ndarray, ts_ms: np.ndarray, values: np.ndarray,
            watermark_before: np.ndarray) -> np.ndarray:  # fmt: skip
        """Fold a batch in; return the indices of late rows (their window had closed), which are not aggregated.

        NaN values are ignored (neither aggregated nor late).
        """
        slots = np.asarray(slots, np.int64)
        metric = np.asarray(metric, np.int64)
        ts = np.asarray(ts_ms, np.int64)
        vals = np.asarray(values, np.float64)
        size = np.int64(self.window_ms)
        start = ts // size * size
        thr = sub_ms_array(np.asarray(watermark_before, np.int64), self.allowed_lateness_ms)
        late = start + size <= thr
        ok = ~late & np.isfinite(vals)
        if len(slots) and int(slots.max()) >= self._cap:
            self._alloc(max(2 * self._cap, int(slots.max()) + 1))
        if ok.any():
            cap, m = self._cap, self.m
            st, inv = np.unique(start[ok], return_inverse=True)
            flat = (inv * cap + slots[ok]) * m + metric[ok]
            n = st.shape[0] * cap * m
            v = vals[ok]
            sums = np.bincount(flat, weights=v, minlength=n).reshape(-1, cap, m)
            cnts = np.bincount(flat, minlength=n).reshape(-1, cap, m)
            mx = np.full(n, -np.inf)
            np.maximum.at(mx, flat, v)
            mx = mx.reshape(-1, cap, m)
            for i, s in enumerate(st.tolist()):
                acc = self._open.get(s)
                if acc is None:
                    self._open[s] = (sums[i].copy(), cnts[i].copy(), mx[i].copy())
                else:
                    acc[0][:] += sums[i]
                    acc[1][:] += cnts[i]
                    np.maximum(acc[2], mx[i], out=acc[2])
        return np.flatnonzero(late)

    def advance(self, watermark_ms: int) -> JoinedWindows:
        """Emit (and drop) every window with ``end_ms + allowed_lateness_ms <= watermark_ms``, oldest first."""
        thr = sub_ms(watermark_ms, self.allowed_lateness_ms)
        closed = sorted(s for s in self._open if s + self.window_ms <= thr)
        return JoinedWindows.concat([self._emit(s, *self._open.pop(s)) for s in closed], self.m)

    def _emit(self, start: int, sums: np.ndarray, cnts: np.ndarray, mx: np.ndarray) -> JoinedWindows:
        rows = np.flatnonzero(cnts.sum(axis=1) > 0)
        c = cnts[rows]
        seen = c > 0
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(seen, sums[rows] / c, np.nan)
            run_mean = self.run_sum[rows] / self.run_n[rows]
        fresh = self.last_start[rows] >= start - self.carry_windows * self.window_ms
        fill = np.where(fresh, self.last_val[rows], run_mean)
        value = np.where(seen, mean, fill)
        mxv = np.where(seen, mx[rows], value)
        missing = ~seen
        imputed = missing & np.isfinite(value)
        prev = np.where(self.last_start[rows] == start - self.window_ms, self.last_val[rows], np.nan)
        delta = mean - prev
        # state for later windows: observed cells only
        r, j = np.nonzero(seen)
        self.last_val[rows[r], j] = mean[r, j]
        self.last_start[rows[r], j] = start
        self.run_sum[rows[r], j] += mean[r, j]
        self.run_n[rows[r], j] += 1
        n = rows.shape[0]
        return JoinedWindows(rows.astype(np.int32), np.full(n, start, np.int64),
                             np.full(n, start + self.window_ms, np.int64), value, mxv, c, missing, imputed,
                             delta)  # fmt: skip
