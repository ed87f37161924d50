"""Watermarks: how far event time has progressed, per row of a micro-batch.

A watermark ``W`` is a promise about the stream: *no event with* ``ts_ms < W`` *is expected any more*.
An event with ``ts_ms < W`` is late (see :func:`vigil.eventtime.late.split_late`), and a window
``[start_ms, end_ms)`` is complete once ``end_ms <= W``.

Off-by-one, compared with Flink: Flink's ``BoundedOutOfOrdernessWatermarks`` emits
``max_ts - max_delay - 1`` and means "no more events with ``ts <= W``"; a window fires when
``end - 1 <= W``. Vigil emits ``max_ts - max_delay_ms`` and means "no more events with ``ts < W``";
a window fires when ``end_ms <= W``. The two conventions accept, reject and fire exactly the same
events and windows -- Vigil's watermark is simply Flink's plus one, which keeps every comparison
``<`` / ``<=`` on half-open intervals without a ``- 1``.

Before any event the watermark is :data:`NO_WATERMARK` (the minimum int64): nothing is late yet.
Arithmetic on watermarks saturates at that value instead of wrapping around.
"""

from __future__ import annotations

from collections.abc import Container, Hashable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from vigil.errors import ConfigError
from vigil.types import Int64Array

NO_WATERMARK: int = int(np.iinfo(np.int64).min)
"""The watermark before any event: the minimum int64 (nothing is late)."""

MAX_WATERMARK: int = int(np.iinfo(np.int64).max)
"""The end of time: advancing to it closes every window (end of stream)."""


def sub_ms(value: int, delta_ms: int) -> int:
    """``value - delta_ms`` for a non-negative delta, saturating at :data:`NO_WATERMARK`.

    Examples:
        >>> sub_ms(1_000, 200), sub_ms(NO_WATERMARK, 200) == NO_WATERMARK
        (800, True)
    """
    return max(int(value) - int(delta_ms), NO_WATERMARK)


def sub_ms_array(values: Int64Array, delta_ms: int) -> Int64Array:
    """Element-wise :func:`sub_ms` over an int64 array (saturating, never wrapping).

    Examples:
        >>> sub_ms_array(np.array([NO_WATERMARK, 500]), 100).tolist() == [NO_WATERMARK, 400]
        True
    """
    values = np.asarray(values, np.int64)
    if delta_ms == 0:
        return values.copy()
    floor = NO_WATERMARK + int(delta_ms)
    with np.errstate(over="ignore"):
        return np.where(values >= floor, values - np.int64(delta_ms), np.int64(NO_WATERMARK))


@dataclass(frozen=True, slots=True)
class BoundedOutOfOrderness:
    """Watermark strategy for streams whose events arrive at most ``max_delay_ms`` out of order.

    The watermark is ``max event time seen - max_delay_ms`` (see the module docstring for the
    off-by-one choice). With ``idle_timeout_ms``, a source that sees no event for that long in
    *processing* time is marked idle so that it stops holding back a multi-partition watermark.

    Args:
        max_delay_ms: bound on out-of-orderness, in event-time milliseconds (>= 0).
        idle_timeout_ms: processing-time milliseconds without events before the tracker is idle;
            ``None`` never goes idle.

    Examples:
        >>> tracker = BoundedOutOfOrderness(max_delay_ms=100).build()
        >>> tracker.on_batch(np.array([1_000, 1_300, 1_050]), now_ms=0).tolist() == [NO_WATERMARK, 900, 1200]
        True
        >>> tracker.watermark
        1200
    """

    max_delay_ms: int
    idle_timeout_ms: int | None = None

    def __post_init__(self) -> None:
        if self.max_delay_ms < 0:
            raise ConfigError("must be >= 0", field="max_delay_ms", value=self.max_delay_ms, hint="e.g. 5000")
        if self.idle_timeout_ms is not None and self.idle_timeout_ms <= 0:
            raise ConfigError(
                "must be > 0 or None", field="idle_timeout_ms", value=self.idle_timeout_ms, hint="e.g. 60000"
            )

    def build(self, resume_state: dict[str, Any] | None = None) -> WatermarkTracker:
        """A new tracker, or one resumed from :meth:`WatermarkTracker.snapshot` output."""
        tracker = WatermarkTracker(self)
        if resume_state is not None:
            tracker.restore(resume_state)
        return tracker


class WatermarkTracker:
    """The watermark of one stream (or one partition), advanced batch by batch.

    Build it with :meth:`BoundedOutOfOrderness.build`. The watermark never goes back.

    Examples:
        >>> t = BoundedOutOfOrderness(max_delay_ms=10, idle_timeout_ms=1_000).build()
        >>> t.on_batch(np.array([100, 90, 120]), now_ms=5).tolist() == [NO_WATERMARK, 90, 90]
        True
        >>> t.on_idle(now_ms=500), t.idle
        (110, False)
        >>> t.on_idle(now_ms=1_005), t.idle
        (110, True)
        >>> t2 = BoundedOutOfOrderness(max_delay_ms=10).build(t.snapshot())
        >>> t2.watermark, t2.idle
        (110, True)
    """

    def __init__(self, strategy: BoundedOutOfOrderness) -> None:
        self.strategy = strategy
        self._max_ts_ms = NO_WATERMARK
        self._last_activity_ms: int | None = None
        self._idle = False

    @property
    def max_ts_ms(self) -> int:
        """The largest event time seen (``NO_WATERMARK`` before any event)."""
        return self._max_ts_ms

    @property
    def watermark(self) -> int:
        """The current watermark: ``max_ts_ms - max_delay_ms``, or ``NO_WATERMARK`` before any event."""
        return sub_ms(self._max_ts_ms, self.strategy.max_delay_ms)

    @property
    def idle(self) -> bool:
        """True once no event arrived for ``idle_timeout_ms`` of processing time (reset by the next event)."""
        return self._idle

    def on_batch(self, ts_ms: Int64Array, now_ms: int) -> Int64Array:
        """Advance over a batch; return the watermark in force *before* each row.

        Row ``i`` is judged against the watermark computed from rows ``< i`` and earlier batches, so
        splitting a stream into batches differently gives the same per-row watermarks.

        Args:
            ts_ms: event times of the batch, in arrival order.
            now_ms: processing time of the arrival (for idleness).
        """
        ts = np.asarray(ts_ms, np.int64)
        n = ts.shape[0]
        if n == 0:
            return np.empty(0, np.int64)
        prior = self._max_ts_ms
        seen = np.empty(n, np.int64)
        seen[0] = prior
        if n > 1:
            np.maximum(np.maximum.accumulate(ts[:-1]), prior, out=seen[1:])
        self._max_ts_ms = max(prior, int(ts.max()))
        self._last_activity_ms = int(now_ms)
        self._idle = False
        return sub_ms_array(seen, self.strategy.max_delay_ms)

    def on_idle(self, now_ms: int, backlog: bool = False) -> int:
        """Check processing-time idleness at ``now_ms``; return the current watermark.

        A tracker that never saw an event starts its idle clock at the first call. With ``backlog``
        (the source knows records are waiting that it has not read yet) the clock restarts: a
        partition that is behind is slow, not idle, and must keep holding the watermark back.
        """
        if self._last_activity_ms is None or backlog:
            self._last_activity_ms = int(now_ms)
            self._idle = False
        timeout = self.strategy.idle_timeout_ms
        if timeout is not None and int(now_ms) - self._last_activity_ms >= timeout:
            self._idle = True
        return self.watermark

    def snapshot(self) -> dict[str, Any]:
        """Plain-data state, resumable with ``strategy.build(resume_state=...)``."""
        return {"max_ts_ms": self._max_ts_ms, "last_activity_ms": self._last_activity_ms, "idle": self._idle}

    def restore(self, state: dict[str, Any]) -> None:
        """Load :meth:`snapshot` output into this tracker."""
        self._max_ts_ms = int(state["max_ts_ms"])
        last = state.get("last_activity_ms")
        self._last_activity_ms = None if last is None else int(last)
        self._idle = bool(state.get("idle", False))


class MultiPartitionWatermark:
    """The watermark of a stream read from several partitions, each with its own tracker.

    The stream's watermark is the minimum over the *active* (non-idle) partitions, so that a slow
    partition holds it back but an idle one does not. When every partition is idle it is the maximum
    of their watermarks (as Flink's ``StatusWatermarkValve`` does: nothing is pending anywhere).
    Partitions named up front hold the watermark at ``NO_WATERMARK`` until they send events or go
    idle; unknown partitions are added on their first update. The combined watermark never goes back
    (a partition waking up from idleness with older data does not move it backwards).

    Args:
        strategy: the watermark strategy of every partition.
        partitions: partitions known up front.

    Examples:
        >>> mw = MultiPartitionWatermark(BoundedOutOfOrderness(0, idle_timeout_ms=100), partitions=[0, 1])
        >>> mw.update(0, np.array([50, 60]), now_ms=0).tolist() == [NO_WATERMARK, NO_WATERMARK]
        True
        >>> mw.update(1, np.array([10]), now_ms=0).tolist() == [NO_WATERMARK], mw.watermark
        (True, 10)
        >>> mw.on_idle(now_ms=50), mw.update(0, np.array([70]), now_ms=150).tolist()
        (10, [10])
        >>> mw.on_idle(now_ms=150)    # partition 1 idle since 0: it stops holding the watermark back
        70
    """

    def __init__(self, strategy: BoundedOutOfOrderness, partitions: Iterable[Hashable] = ()) -> None:
        self.strategy = strategy
        self._trackers: dict[Hashable, WatermarkTracker] = {p: strategy.build() for p in partitions}
        self._watermark = NO_WATERMARK

    @property
    def partitions(self) -> list[Hashable]:
        """The partitions seen or declared so far."""
        return list(self._trackers)

    def tracker(self, partition: Hashable) -> WatermarkTracker:
        """The tracker of one partition (created if new)."""
        t = self._trackers.get(partition)
        if t is None:
            t = self._trackers[partition] = self.strategy.build()
        return t

    @property
    def watermark(self) -> int:
        """The combined watermark."""
        return self._watermark

    @property
    def idle(self) -> bool:
        """True when every partition is idle."""
        return bool(self._trackers) and all(t.idle for t in self._trackers.values())

    def _combine(self, exclude: Hashable | None = None) -> tuple[int, bool]:
        """Min watermark over active partitions except ``exclude`` (``MAX_WATERMARK`` if none), any active."""
        active = [t.watermark for p, t in self._trackers.items() if p != exclude and not t.idle]
        return (min(active), True) if active else (MAX_WATERMARK, False)

    def _refresh(self) -> int:
        low, any_active = self._combine()
        if not any_active:
            low = max((t.watermark for t in self._trackers.values()), default=NO_WATERMARK)
        self._watermark = max(self._watermark, low)
        return self._watermark

    def update(self, partition: Hashable, ts_ms: Int64Array, now_ms: int) -> Int64Array:
        """Advance ``partition`` over a batch; return the combined watermark before each row."""
        tracker = self.tracker(partition)
        others, _ = self._combine(exclude=partition)
        own = tracker.on_batch(ts_ms, now_ms)
        if own.shape[0] == 0:
            return own
        # The receiving partition is active from its first row on; the others are fixed during the call.
        # ``own`` never decreases, so neither does ``before``.
        before = np.minimum(own, np.int64(others))
        np.maximum(before, np.int64(self._watermark), out=before)
        self._refresh()
        return before

    def on_idle(self, now_ms: int, backlog: Container[Hashable] = ()) -> int:
        """Check idleness of every partition at processing time ``now_ms``; return the combined watermark.

        Partitions in ``backlog`` have records waiting to be read, so they never count as idle.
        """
        for p, t in self._trackers.items():
            t.on_idle(now_ms, p in backlog)
        return self._refresh()

    def snapshot(self) -> dict[str, Any]:
        """Plain data: the combined watermark and ``[partition, tracker state]`` pairs."""
        return {
            "watermark": self._watermark,
            "partitions": [[p, t.snapshot()] for p, t in self._trackers.items()],
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Load :meth:`snapshot` output (replaces every partition's state)."""
        self._trackers = {}
        for p, s in state["partitions"]:
            self._trackers[p if not isinstance(p, list) else tuple(p)] = self.strategy.build(s)
        self._watermark = int(state["watermark"])
