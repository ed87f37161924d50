"""The console's memory of the live streams: a runner tap keeping the last points of the most recent keys.

:class:`StreamRecorder` is called by the :class:`~vigil.engine.runner.EmbeddedRunner` after every micro-batch
(``tap(batch, keys, verdicts)``). Per key it keeps the last ``points`` rows: event time, each numeric field, and
each detector step's score, calibrated score and flag. At most ``max_keys`` keys are kept: when a new key comes
and the recorder is full, the key seen least recently is forgotten (LRU). Storage is a pool of numpy ring
buffers, one row of ``points`` per key, grown in chunks up to ``max_keys`` rows; so memory is bounded by
``max_keys × points × (1 + fields + 3 × steps) × 8`` bytes (about 10 MB per column at the defaults) whatever the
stream's cardinality, and the work per batch is numpy over the rows plus a dictionary look-up per distinct key.

The tap costs about 1-2 million rows per second on a laptop core (hashing the keys dominates), so a pipeline
much faster than that should tap a sample of its batches.

It also keeps a fleet-wide series (events and flagged events per second of event time, the last
``fleet_seconds``) and the most recent flagged points of any key. Reads copy what they return under a lock, so
the web thread never sees a half-written batch.

Examples:
    >>> import numpy as np
    >>> from vigil.detectors.base import Verdicts
    >>> from vigil.types import Batch
    >>> rec = StreamRecorder(max_keys=2, points=3)
    >>> def feed(keys, ts, x, flag):
    ...     n = len(keys)
    ...     v = Verdicts(np.abs(x), np.zeros(n), np.array(flag), np.array(flag), np.ones(n, bool))
    ...     rec(Batch(np.zeros(n, np.int32), np.array(ts), {"x": np.array(x)}), np.array(keys, object), {"z": v})
    >>> feed(["a", "a", "b", "a", "a"], [1, 2, 3, 4, 5], [1.0, 2.0, 3.0, 4.0, 9.0], [0, 0, 0, 0, 1])
    >>> s = rec.series("a")
    >>> s["ts_ms"], s["fields"]["x"], s["steps"]["z"]["flag"]
    ([2, 4, 5], [2.0, 4.0, 9.0], [False, False, True])
    >>> feed(["c"], [6], [0.5], [0])  # a third key: "b", seen least recently, is forgotten
    >>> [k["key"] for k in rec.keys()], rec.series("b") is None
    (['c', 'a'], True)
    >>> rec.recent_flags()[0]["key"], rec.fleet()["flags"]
    ('a', [1])
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict, deque
from typing import Any

import numpy as np

from vigil.errors import ConfigError

DEFAULT_SPAN_MS = 10 * 60_000
_CHUNK_KEYS = 64


class StreamRecorder:
    """Per-key recent points and fleet-wide rates, for the console (see the module docstring).

    Args:
        max_keys: keys kept at most (least recently seen first out).
        points: points kept per key (the oldest are overwritten).
        fleet_seconds: seconds of event time in the fleet-wide series.
        flags_kept: most recent flagged points kept for :meth:`recent_flags`.
    """

    def __init__(self, max_keys: int = 2000, points: int = 600, *, fleet_seconds: int = 600,
                 flags_kept: int = 500) -> None:  # fmt: skip
        for name, value in (("max_keys", max_keys), ("points", points), ("fleet_seconds", fleet_seconds),
                            ("flags_kept", flags_kept)):  # fmt: skip
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError("must be an integer >= 1", field=name, value=value)
        self.max_keys, self.points, self.fleet_seconds = max_keys, points, fleet_seconds
        self._lock = threading.Lock()
        self._rows: OrderedDict[str, int] = OrderedDict()  # key -> pool row, least recently seen first
        self._free: list[int] = []
        self._cap = 0
        self._count = np.zeros(0, np.int64)  # rows ever written per pool row (the ring's head is count % points)
        self._ts = np.zeros((0, points), np.int64)
        self._cols: dict[tuple[str, str, str], np.ndarray] = {}  # ("f", field, "") / ("s", step, score|...)
        self._fleet: dict[int, list[int]] = {}  # event-time second -> [events, flags]
        self._fleet_max_s: int | None = None
        self._flags: deque[dict[str, Any]] = deque(maxlen=flags_kept)
        self.evicted = 0

    # -- writing (engine thread) ------------------------------------------------------------------------------

    def __call__(self, batch: Any, keys: Any, verdicts: dict[str, Any]) -> None:
        """The runner tap: record one micro-batch's on-time rows."""
        n = len(batch.ts_ms)
        if n == 0:
            return
        ts = np.asarray(batch.ts_ms, np.int64)
        columns: dict[tuple[str, str, str], np.ndarray] = {("f", f, ""): np.asarray(v, np.float64)
                                                          for f, v in batch.cols.items()}  # fmt: skip
        any_flag = np.zeros(n, bool)
        for step, v in verdicts.items():
            flag = np.asarray(v.flag, bool)
            columns[("s", step, "score")] = np.asarray(v.score, np.float64)
            columns[("s", step, "calibrated")] = np.asarray(v.calibrated, np.float64)
            columns[("s", step, "flag")] = flag.astype(np.float64)
            any_flag |= flag
        codes: dict[str, int] = {}  # factorize by hashing: faster than sorting strings with np.unique
        inverse = np.fromiter((codes.setdefault(str(k), len(codes)) for k in np.asarray(keys).tolist()), np.int64, n)
        uniq = list(codes)
        with self._lock:
            self._record_fleet(ts, any_flag)
            self._record_flags(keys, ts, any_flag, columns)
            last = np.zeros(len(uniq), np.int64)
            last[inverse] = np.arange(n)
            by_last = np.argsort(last)  # least recently seen first, so LRU order follows the batch
            if len(uniq) > self.max_keys:  # more keys than room: keep the ones seen last in this batch
                keep_u = by_last[len(by_last) - self.max_keys :]
                mask = np.isin(inverse, keep_u)
                inverse, ts = inverse[mask], ts[mask]
                columns = {k: c[mask] for k, c in columns.items()}
                by_last = keep_u
            pool = np.full(len(uniq), -1, np.int64)
            for u in by_last.tolist():
                pool[u] = self._row_for(uniq[u])
            for name in columns:
                if name not in self._cols:
                    self._cols[name] = np.full((self._cap, self.points), np.nan)
            self._write(pool[inverse], ts, columns)

    def _row_for(self, key: str) -> int:
        row = self._rows.get(key)
        if row is not None:
            self._rows.move_to_end(key)
            return row
        if len(self._rows) >= self.max_keys:
            _, row = self._rows.popitem(last=False)
            self.evicted += 1
        elif self._free:
            row = self._free.pop()
        else:
            self._grow()
            row = self._free.pop()
        self._count[row] = 0
        for c in self._cols.values():
            c[row] = np.nan
        self._rows[key] = row
        return row

    def _grow(self) -> None:
        new = min(self.max_keys, max(_CHUNK_KEYS, 2 * self._cap))
        add = new - self._cap
        self._count = np.concatenate([self._count, np.zeros(add, np.int64)])
        self._ts = np.concatenate([self._ts, np.zeros((add, self.points), np.int64)])
        for name, c in self._cols.items():
            self._cols[name] = np.concatenate([c, np.full((add, self.points), np.nan)])
        self._free.extend(range(new - 1, self._cap - 1, -1))
        self._cap = new

    def _write(self, rows: np.ndarray, ts: np.ndarray, columns: dict[tuple[str, str, str], np.ndarray]) -> None:
        order = np.argsort(rows, kind="stable")  # arrival order within each key
        r = rows[order]
        starts = np.flatnonzero(np.r_[True, r[1:] != r[:-1]])
        sizes = np.diff(np.r_[starts, len(r)])
        rank = np.arange(len(r)) - np.repeat(starts, sizes)
        total = np.repeat(sizes, sizes)
        keep = rank >= total - self.points  # more rows than the ring holds: only the last ones land
        r, rank, order = r[keep], rank[keep], order[keep]
        pos = (self._count[r] + rank) % self.points
        self._ts[r, pos] = ts[order]
        for name, col in columns.items():
            self._cols[name][r, pos] = col[order]
        np.add.at(self._count, rows, 1)

    def _record_fleet(self, ts: np.ndarray, flag: np.ndarray) -> None:
        secs = ts // 1000
        uniq, inverse = np.unique(secs, return_inverse=True)
        events = np.bincount(inverse)
        flags = np.bincount(inverse, weights=flag.astype(np.float64)).astype(np.int64)
        top = int(uniq[-1])
        self._fleet_max_s = top if self._fleet_max_s is None else max(self._fleet_max_s, top)
        low = self._fleet_max_s - self.fleet_seconds
        for s, e, f in zip(uniq.tolist(), events.tolist(), flags.tolist(), strict=True):
            if s > low:
                b = self._fleet.setdefault(s, [0, 0])
                b[0] += e
                b[1] += f
        if len(self._fleet) > self.fleet_seconds:
            for s in [s for s in self._fleet if s <= low]:
                del self._fleet[s]

    def _record_flags(self, keys: Any, ts: np.ndarray, flag: np.ndarray,
                      columns: dict[tuple[str, str, str], np.ndarray]) -> None:  # fmt: skip
        idx = np.flatnonzero(flag)
        idx = idx[max(0, len(idx) - (self._flags.maxlen or 1)) :]
        for i in idx.tolist():
            steps = {name[1]: _num(c[i]) for name, c in columns.items()
                     if name[0] == "s" and name[2] == "score" and columns[("s", name[1], "flag")][i]}  # fmt: skip
            values = {name[1]: _num(c[i]) for name, c in columns.items() if name[0] == "f"}
            self._flags.append({"key": str(keys[i]), "ts_ms": int(ts[i]), "scores": steps, "values": values})

    # -- reading (any thread) ---------------------------------------------------------------------------------

    def series(self, key: str, around_ms: int | None = None, span_ms: int | None = None) -> dict[str, Any] | None:
        """A key's recorded points in event-time order, or ``None`` if the key is not recorded.

        With ``around_ms``, only the points within ``span_ms`` (default 10 minutes) centred on it. NaN (a field
        missing in a batch) becomes ``None``. Returns ``{key, ts_ms, fields: {name: values}, steps: {step:
        {score, calibrated, flag}}}``.
        """
        with self._lock:
            row = self._rows.get(key)
            if row is None:
                return None
            count = int(self._count[row])
            m = min(count, self.points)
            idx = (np.arange(count - m, count) % self.points) if m else np.zeros(0, np.int64)
            ts = self._ts[row, idx].copy()
            cols = {name: c[row, idx].copy() for name, c in self._cols.items()}
        order = np.argsort(ts, kind="stable")
        if around_ms is not None:
            half = (DEFAULT_SPAN_MS if span_ms is None else span_ms) // 2
            order = order[(ts[order] >= around_ms - half) & (ts[order] <= around_ms + half)]
        out: dict[str, Any] = {"key": key, "ts_ms": ts[order].tolist(), "fields": {}, "steps": {}}
        for (kind, name, part), c in sorted(cols.items()):
            vals = c[order]
            if kind == "f":
                out["fields"][name] = [_num(x) for x in vals.tolist()]
            elif part == "flag":
                out["steps"].setdefault(name, {})[part] = [x == 1.0 for x in vals.tolist()]
            else:
                out["steps"].setdefault(name, {})[part] = [_num(x) for x in vals.tolist()]
        return out

    def keys(self, q: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Recorded keys, most recently seen first, optionally those containing ``q`` (case-insensitive).

        Each item is ``{key, points, last_ts_ms, flags}`` (``flags``: flagged points among those kept).
        """
        needle = q.lower() if q else None
        out = []
        with self._lock:
            flag_cols = [c for (kind, _, part), c in self._cols.items() if kind == "s" and part == "flag"]
            for key in reversed(self._rows):
                if needle is not None and needle not in key.lower():
                    continue
                row = self._rows[key]
                count = int(self._count[row])
                m = min(count, self.points)
                idx = np.arange(count - m, count) % self.points
                flagged = np.zeros(m, bool)
                for c in flag_cols:
                    flagged |= c[row, idx] == 1.0
                out.append({"key": key, "points": m, "last_ts_ms": int(self._ts[row, idx].max()) if m else None,
                            "flags": int(flagged.sum())})  # fmt: skip
                if len(out) >= limit:
                    break
        return out

    def recent_flags(self, limit: int = 100) -> list[dict[str, Any]]:
        """The most recent flagged points of any key, newest first: ``{key, ts_ms, scores, values}``."""
        with self._lock:
            items = list(self._flags)[-limit:] if limit > 0 else []
        return [dict(x) for x in reversed(items)]

    def fleet(self) -> dict[str, list[int]]:
        """Events and flagged events per second of event time: ``{ts_ms, events, flags}``, oldest first."""
        with self._lock:
            secs = sorted(self._fleet)
            low = (self._fleet_max_s or 0) - self.fleet_seconds
            rows = [(s, *self._fleet[s]) for s in secs if s > low]
        return {"ts_ms": [s * 1000 for s, _, _ in rows], "events": [e for _, e, _ in rows],
                "flags": [f for _, _, f in rows]}  # fmt: skip

    def __len__(self) -> int:
        with self._lock:
            return len(self._rows)


def _num(x: Any) -> float | None:
    """A float for JSON: NaN and infinities become ``None``."""
    x = float(x)
    return x if math.isfinite(x) else None
