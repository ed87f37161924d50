"""Trusted columns in memory replayed as a stream, as fast as possible or paced at a rate of events per second.

This is the producer of demos and benchmarks (the synthetic generators' output, a loaded data set).
Its columns are not validated — use :class:`~vigil.io.memory.MemorySource` for rows that may be bad.

Pacing is on the wall clock: event ``i`` is due at ``start + i / rate``. Each row carries
``emit_ns``, the wall-clock time at which it was due — the moment the "producer" emitted it — so
the engine can measure the honest latency from emission to alert (queueing included: if the
engine falls behind, the latency shows it).

A read returns when ``max_items`` rows are due, or ``timeout_ms`` after the oldest waiting row was
due, whichever comes first: micro-batches flush on size or on a short time bound.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from vigil.io.base import Records


class ReplayReader:
    """Reader of :class:`ReplaySource` (one partition; position = next row index)."""

    def __init__(self, src: ReplaySource, resume: int | None) -> None:
        self.src = src
        self.pos = int(resume or 0)
        self.n = len(src.ts_ms)
        self.start_ns: int | None = None
        self._closed = False

    def _due_ns(self, i: int) -> int:
        assert self.start_ns is not None and self.src.rate
        return self.start_ns + int(i * 1e9 / self.src.rate)

    def read_batch(self, max_items: int, timeout_ms: int) -> Records | None:
        """Up to ``max_items`` rows that are due (all remaining rows, at once, when unpaced)."""
        if self.pos >= self.n:
            return None
        now = self.src.clock_ns()
        if self.src.rate is None:
            hi = min(self.n, self.pos + max_items)
            emit = np.full(hi - self.pos, now, np.int64)
        else:
            if self.start_ns is None:
                self.start_ns = now - int(self.pos * 1e9 / self.src.rate)
            # flush when max_items are due or timeout_ms after the oldest row was due
            last = min(self.n, self.pos + max_items) - 1
            flush_at = min(self._due_ns(self.pos) + timeout_ms * 1_000_000, self._due_ns(last))
            deadline = now + timeout_ms * 1_000_000
            wake = min(flush_at, deadline)
            if wake > now:
                time.sleep((wake - now) / 1e9)
                now = self.src.clock_ns()
            due = int((now - self.start_ns) * self.src.rate / 1e9) + 1
            hi = min(self.n, self.pos + max_items, max(due, self.pos))
            if hi <= self.pos:
                return None
            emit = self.start_ns + (np.arange(self.pos, hi, dtype=np.float64) * (1e9 / self.src.rate)).astype(np.int64)
        sl = slice(self.pos, hi)
        self.pos = hi
        s = self.src
        extra = {k: v[sl] for k, v in s.extra.items()}
        extra["emit_ns"] = emit
        return Records(s.keys[sl], s.ts_ms[sl], {k: v[sl] for k, v in s.cols.items()}, extra)

    def position(self) -> int:
        """The next row to read (resume point after the last returned row)."""
        return self.pos

    @property
    def at_end(self) -> bool:
        """All rows returned."""
        return self.pos >= self.n

    def close(self) -> None:
        """Nothing to release."""
        self._closed = True


class ReplaySource:
    """Replay in-memory columns as a stream.

    Args:
        keys: key per row (object array of str, or integer ids).
        ts_ms: event time per row.
        cols: numeric columns.
        extra: passthrough columns (ids, labels ...).
        rate: events per second of wall clock; ``None`` replays as fast as possible.
        name: source name.

    Examples:
        >>> src = ReplaySource(np.array(["a", "b"], object), np.array([1, 2]), {"v": np.array([1.0, 2.0])})
        >>> r = src.open("0")
        >>> rec = r.read_batch(10, 5)
        >>> rec.keys.tolist(), r.position(), r.at_end
        (['a', 'b'], 2, True)
    """

    def __init__(
        self,
        keys: np.ndarray,
        ts_ms: np.ndarray,
        cols: dict[str, np.ndarray],
        extra: dict[str, np.ndarray] | None = None,
        *,
        rate: float | None = None,
        name: str = "columns",
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        if rate is not None and rate <= 0:
            raise ValueError(f"`rate` must be > 0 events/s; got {rate!r}")
        keys = np.asarray(keys)
        # integer ids stay an integer column (the key index looks them up vectorized); anything else is text
        self.keys = keys if keys.dtype.kind in "iu" else keys.astype(object)
        self.ts_ms = np.asarray(ts_ms, np.int64)
        self.cols = {k: np.asarray(v, np.float64) for k, v in cols.items()}
        self.extra = dict(extra or {})
        self.rate = rate
        self.name = name
        # the same wall clock as the engine, which subtracts emit_ns from it to measure latency
        self.clock_ns = clock_ns

    def partitions(self) -> list[str]:
        """One partition."""
        return ["0"]

    def open(self, partition: str, resume: Any = None) -> ReplayReader:
        """Open the only partition, resuming at row ``resume``."""
        return ReplayReader(self, resume)


