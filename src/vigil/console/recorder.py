"""The console's memory of the live streams: a runner tap keeping the last points of the keys that matter.

:class:`StreamRecorder` is called by the :class:`~vigil.engine.runner.EmbeddedRunner` after every micro-batch
(``tap(batch, keys, verdicts)``). Per key it keeps the last ``points`` rows: event time, each numeric field, and
each detector step's score, calibrated score and flag. Which keys it keeps:

- **alerting keys**: a key with a flagged (anomalous) point is *pinned*, so "around the alert" has its window
  however many other keys stream by. Pinned keys are ordered by their latest flag; when ``memory_bytes`` is spent
  the key whose latest flag is oldest goes back among the others (as if just seen: it keeps its window while
  ``max_keys`` other keys come by).
- **the others**: the ``max_keys`` keys seen most recently (LRU).

Storage is a pool of numpy ring buffers, one row of ``points`` per key, grown in chunks; it never holds more than
``max_keys`` plus as many pinned keys as fit in ``memory_bytes`` (``points × (1 + columns) × 8`` bytes a key,
the columns known when the pool grows), whatever the stream's cardinality. The work per batch is numpy over the
rows plus a dictionary look-up per distinct key.

The tap costs about 1-2 million rows per second on a laptop core (hashing the keys dominates), so a pipeline
much faster than that should tap a sample of its batches.

It also keeps a fleet-wide series (events and flagged events per second of event time, the last
``fleet_seconds``), the most recent flagged points of any key, the newest event time seen and when (processing
time, from ``clock``) the last batch came: the console's two lags. Reads copy what they return under a lock, so
the web thread never sees a half-written batch.

Examples:
    >>> import numpy as np
    >>> from vigil.detectors.base import Verdicts
    >>> from vigil.types import Batch
    >>> rec = StreamRecorder(max_keys=2, points=3, clock=lambda: 99)
    >>> def feed(keys, ts, x, flag):
    ...     n = len(keys)
    ...     v = Verdicts(np.abs(x), np.zeros(n), np.array(flag), np.array(flag), np.ones(n, bool))
    ...     rec(Batch(np.zeros(n, np.int32), np.array(ts), {"x": np.array(x)}), np.array(keys, object), {"z": v})
    >>> feed(["a", "a", "b", "a", "a"], [1, 2, 3, 4, 5], [1.0, 2.0, 3.0, 4.0, 9.0], [0, 0, 0, 0, 1])
    >>> s = rec.series("a")
    >>> s["ts_ms"], s["fields"]["x"], s["steps"]["z"]["flag"]
    ([2, 4, 5], [2.0, 4.0, 9.0], [False, False, True])
    >>> feed(["c"], [6], [0.5], [0]); feed(["d"], [7], [0.5], [0])  # "a" alerted: pinned; "b" is forgotten
    >>> [k["key"] for k in rec.keys()], rec.series("b") is None
    (['d', 'c', 'a'], True)
    >>> rec.recent_flags()[0]["key"], rec.fleet()["flags"], rec.newest_ts_ms, rec.last_batch_ms
    ('a', [1], 7, 99)
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

import numpy as np

from vigil.errors import ConfigError

DEFAULT_SPAN_MS = 10 * 60_000
_CHUNK_KEYS = 64


class StreamRecorder:
    """Per-key recent points and fleet-wide rates, for the console (see the module docstring).

    Args:
        max_keys: keys without a flagged point kept at most (least recently seen first out).
        points: points kept per key (the oldest are overwritten).
        memory_bytes: the pool's budget; what ``max_keys`` leaves of it holds pinned (alerting) keys.
        fleet_seconds: seconds of event time in the fleet-wide series.
        flags_kept: most recent flagged points kept for :meth:`recent_flags`.
        clock: processing time in epoch ms (default: the wall clock), for :attr:`last_batch_ms`.
    """

    def __init__(self, max_keys: int = 2000, points: int = 600, *, memory_bytes: int = 256 << 20,
                 fleet_seconds: int = 600, flags_kept: int = 500, clock: Callable[[], int] | None = None
                 ) -> None:  # fmt: skip
        for name, value in (("max_keys", max_keys), ("points", points), ("fleet_seconds", fleet_seconds),
                            ("flags_kept", flags_kept), ("memory_bytes", memory_bytes)):  # fmt: skip
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError("must be an integer >= 1", field=name, value=value)
        self.max_keys, self.points, self.fleet_seconds = max_keys, points, fleet_seconds
        self.memory_bytes = memory_bytes
        self.clock = clock or (lambda: time.time_ns() // 1_000_000)
        self._lock = threading.Lock()
        self._rows: OrderedDict[str, int] = OrderedDict()  # key -> pool row, least recently seen first
        self._pinned: OrderedDict[str, int] = OrderedDict()  # alerting keys, oldest latest flag first
        self._batch: set[str] = set()  # keys of the batch being written: never evicted by it
        self._fresh: list[int] = []  # pool rows the batch being written gives to new keys
        self._free: list[int] = []
        self._cap = 0
        self._count = np.zeros(0, np.int64)  # rows ever written per pool row (the ring's head is count % points)
        self._seen = np.zeros(0, np.int64)  # when each pool row's key was last seen (a sequence number)
        self._seq = 0
        self._ts = np.zeros((0, points), np.int64)
        self._cols: dict[tuple[str, str, str], np.ndarray] = {}  # ("f", field, "") / ("s", step, score|...)
        self._fleet: dict[int, list[int]] = {}  # event-time second -> [events, flags]
        self._fleet_max_s: int | None = None
        self._flags: deque[dict[str, Any]] = deque(maxlen=flags_kept)
        self.evicted = 0
        self.newest_ts_ms: int | None = None
        self.last_batch_ms: int | None = None

    @property
    def pinned_capacity(self) -> int:
        """How many alerting keys fit beside ``max_keys`` others in ``memory_bytes`` (with today's columns)."""
        per_key = self.points * 8 * (1 + max(1, len(self._cols))) + 16  # event times, columns; count, recency
        return max(0, self.memory_bytes // per_key - self.max_keys)

    # -- writing (engine thread) ------------------------------------------------------------------------------

    def __call__(self, batch: Any, keys: Any, verdicts: dict[str, Any]) -> None:
        """The runner tap: record one micro-batch's on-time rows."""
        now = self.clock()
        n = len(batch.ts_ms)
        if n == 0:
            self.last_batch_ms = now
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
            self.last_batch_ms = now
            top = int(ts.max())
            self.newest_ts_ms = top if self.newest_ts_ms is None else max(self.newest_ts_ms, top)
            self._record_fleet(ts, any_flag)
            self._record_flags(keys, ts, any_flag, columns)
            for name in columns:
                if name not in self._cols:
                    self._cols[name] = np.full((self._cap, self.points), np.nan)
            cap = self.pinned_capacity
            pool, mask = self._place(uniq, inverse, any_flag, cap)
            if mask is not None:  # more keys than room: some keys' rows of this batch are left out
                inverse, ts = inverse[mask], ts[mask]
                columns = {k: c[mask] for k, c in columns.items()}
            self._write(pool[inverse], ts, columns)

    def _place(self, uniq: list[str], inverse: np.ndarray, any_flag: np.ndarray, cap: int
               ) -> tuple[np.ndarray, np.ndarray | None]:  # fmt: skip
        """A pool row for each key of the batch; the mask of the rows kept when not every key fits.

        First the pinned set is decided: the ``cap`` keys whose latest flag is newest, this batch's flags (by
        row) after the earlier ones; the pinned keys left out go back among the others as if just seen. Then the
        keys take rows in the order they were last seen in the batch, so the LRU follows it; when there are more
        keys than room, the ``max_keys`` others seen last are kept.
        """
        n = len(inverse)
        last = np.zeros(len(uniq), np.int64)
        last[inverse] = np.arange(n)
        flag_at = np.full(len(uniq), -1, np.int64)
        np.maximum.at(flag_at, inverse[any_flag], np.flatnonzero(any_flag))
        flagged = [uniq[u] for u in sorted(np.flatnonzero(flag_at >= 0).tolist(), key=flag_at.__getitem__)]
        # the pinned set: keep the `cap` latest flags; only the oldest few of the pinned keys are looked at
        kept_now = set(flagged[max(0, len(flagged) - cap) :])  # more flags in one batch than room: the last
        out = [k for k in flagged if k not in kept_now and k in self._pinned]
        gone = set(out)
        excess = len(self._pinned) - len(out) + sum(k not in self._pinned for k in kept_now) - cap
        for k in self._pinned:  # oldest latest flag first: only as many as must go are looked at
            if excess <= 0:
                break
            if k not in kept_now and k not in gone:
                out.append(k)
                excess -= 1
        for k in out:  # back among the others, as if just seen
            self._rows[k] = self._pinned.pop(k)
        self._trim()
        pinned = np.fromiter((k in self._pinned or k in kept_now for k in uniq), bool, len(uniq))
        by_last = np.argsort(last)  # least recently seen first
        keep_o = by_last[~pinned[by_last]][-self.max_keys :]
        mask = None
        if pinned.sum() + len(keep_o) < len(uniq):
            by_last = by_last[pinned[by_last] | np.isin(by_last, keep_o)]
            mask = np.isin(inverse, by_last)
        pool = np.full(len(uniq), -1, np.int64)
        order = by_last.tolist()
        self._batch, self._fresh = {uniq[u] for u in order}, []
        try:
            for u in order:
                pool[u] = self._row_for(uniq[u], bool(pinned[u]), cap)
        finally:
            self._batch = set()
        fresh = np.asarray(self._fresh, np.int64)  # rows given to new keys start empty
        self._count[fresh] = 0
        for c in self._cols.values():
            c[fresh] = np.nan
        self._seen[pool[by_last]] = self._seq + np.arange(len(by_last))
        self._seq += len(by_last)
        for k in flagged:
            if k in self._pinned:
                self._pinned.move_to_end(k)  # the latest flag last
        self._trim()
        return pool, mask

    def _row_for(self, key: str, pin: bool, cap: int) -> int:
        row = self._pinned.get(key)
        if row is None:
            row = self._rows.pop(key, None)
            if row is None:
                row = self._forget_lru() if not pin and len(self._rows) >= self.max_keys else None
                row = self._take_row(cap) if row is None else row
                self._fresh.append(row)
            (self._pinned if pin else self._rows)[key] = row
            if len(self._rows) > self.max_keys:
                self._trim()
        return row

    def _forget_lru(self) -> int | None:
        """Forget the least recently seen other key not in this batch: its pool row (``None``: there is none)."""
        k = next(iter(self._rows), None)
        if k is not None and k in self._batch:
            k = next((k for k in self._rows if k not in self._batch), None)
        if k is None:
            return None
        self.evicted += 1
        return self._rows.pop(k)

    def _trim(self) -> None:
        """At most ``max_keys`` keys besides the pinned ones: the least recently seen are forgotten.

        Never a key of the batch being placed: those wait for the batch's end.
        """
        while len(self._rows) > self.max_keys:
            row = self._forget_lru()
            if row is None:
                return
            self._free.append(row)

    def _take_row(self, cap: int) -> int:
        if not self._free:
            if self._cap < self.max_keys + cap:
                self._grow(self.max_keys + cap)
            else:  # full: room comes from the least recently seen other key, else the oldest alerting one
                row = self._forget_lru()
                if row is None:
                    k = next(k for k in self._pinned if k not in self._batch)
                    row = self._pinned.pop(k)
                    self.evicted += 1
                return row
        return self._free.pop()

    def _grow(self, limit: int) -> None:
        new = min(limit, max(_CHUNK_KEYS, 2 * self._cap))
        add = new - self._cap
        self._count = np.concatenate([self._count, np.zeros(add, np.int64)])
        self._seen = np.concatenate([self._seen, np.zeros(add, np.int64)])
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
            row = self._rows.get(key, self._pinned.get(key))
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

        Each item is ``{key, points, last_ts_ms, flags, pinned}`` (``flags``: flagged points among those kept;
        ``pinned``: kept as an alerting key).
        """
        needle = q.lower() if q else None
        out = []
        with self._lock:
            flag_cols = [c for (kind, _, part), c in self._cols.items() if kind == "s" and part == "flag"]
            every = [(k, r, False) for k, r in self._rows.items()] + [(k, r, True) for k, r in self._pinned.items()]
            if needle is not None:
                every = [x for x in every if needle in x[0].lower()]
            seen = self._seen[[r for _, r, _ in every]] if every else np.zeros(0, np.int64)
            for i in np.argsort(-seen, kind="stable").tolist():
                key, row, pinned = every[i]
                count = int(self._count[row])
                m = min(count, self.points)
                idx = np.arange(count - m, count) % self.points
                flagged = np.zeros(m, bool)
                for c in flag_cols:
                    flagged |= c[row, idx] == 1.0
                out.append({"key": key, "points": m, "last_ts_ms": int(self._ts[row, idx].max()) if m else None,
                            "flags": int(flagged.sum()), "pinned": pinned})  # fmt: skip
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

    def stats(self) -> dict[str, int]:
        """Keys kept (``alert_keys`` of them pinned), the pinned capacity, keys forgotten, the pool's bytes."""
        with self._lock:
            arrays = [self._ts, self._count, self._seen, *self._cols.values()]
            nbytes = sum(a.nbytes for a in arrays)
            return {"alert_keys": len(self._pinned), "alert_capacity": self.pinned_capacity, "evicted": self.evicted,
                    "bytes": int(nbytes)}  # fmt: skip

    def __len__(self) -> int:
        with self._lock:
            return len(self._rows) + len(self._pinned)


def _num(x: Any) -> float | None:
    """A float for JSON: NaN and infinities become ``None``."""
    x = float(x)
    return x if math.isfinite(x) else None
