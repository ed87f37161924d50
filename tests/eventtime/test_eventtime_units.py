"""Readable examples of vigil.eventtime semantics."""

from __future__ import annotations

import numpy as np
import pytest

from vigil.errors import ConfigError, SnapshotError
from vigil.eventtime import (
    MAX_WATERMARK,
    NO_WATERMARK,
    BoundedOutOfOrderness,
    LateCounter,
    MultiPartitionWatermark,
    SessionWindows,
    SlidingWindows,
    TumblingWindows,
    WindowAggregator,
    split_late,
)

S = 1000  # one second in ms


def i32(*xs: int) -> np.ndarray:
    return np.array(xs, np.int32)


def i64(*xs: int) -> np.ndarray:
    return np.array(xs, np.int64)


def test_late_event_with_and_without_allowed_lateness() -> None:
    """Flink-style: 10 s tumbling windows, 2 s bounded out-of-orderness; an 8 s event after 12 s."""
    ts = i64(1 * S, 9 * S, 12 * S, 8 * S)
    values = np.array([1.0, 2.0, 3.0, 4.0])
    strategy = BoundedOutOfOrderness(max_delay_ms=2 * S)

    tracker = strategy.build()
    before = tracker.on_batch(ts, now_ms=0)
    assert before.tolist() == [NO_WATERMARK, -1 * S, 7 * S, 10 * S]
    agg = WindowAggregator(TumblingWindows(10 * S))
    split = agg.add(i32(0, 0, 0, 0), ts, values, before)
    assert split.late.tolist() == [3]  # watermark 10 s closed [0 s, 10 s): the 8 s event is late
    assert split_late(ts, before).tolist() == [False, False, False, True]
    r = agg.advance(tracker.watermark)
    assert (r.start_ms.tolist(), r.count.tolist(), r.sum.tolist()) == ([0], [2], [3.0])

    # With 1 s of allowed lateness the window is still open at watermark 10 s and takes the 8 s event.
    tracker = strategy.build()
    agg = WindowAggregator(TumblingWindows(10 * S), allowed_lateness_ms=1 * S)
    split = agg.add(i32(0, 0, 0, 0), ts, values, tracker.on_batch(ts, now_ms=0))
    assert split.late.tolist() == []
    assert len(agg.advance(tracker.watermark)) == 0  # fires at 11 s, not yet
    r = agg.advance(11 * S)
    assert (r.count.tolist(), r.sum.tolist()) == ([3], [7.0])


def test_idle_partition_does_not_hold_the_watermark_back() -> None:
    mw = MultiPartitionWatermark(BoundedOutOfOrderness(0, idle_timeout_ms=5 * S), partitions=["a", "b"])
    mw.update("a", i64(100 * S), now_ms=0)
    mw.update("b", i64(10 * S), now_ms=0)
    assert mw.watermark == 10 * S  # "b" is behind
    mw.update("a", i64(200 * S), now_ms=6 * S)
    assert mw.on_idle(now_ms=6 * S) == 200 * S  # "b" silent for 6 s > 5 s: idle, ignored
    mw.update("b", i64(20 * S), now_ms=7 * S)  # "b" wakes up with old data ...
    assert mw.watermark == 200 * S  # ... but the watermark never goes back
    assert mw.on_idle(now_ms=20 * S) == 200 * S and mw.idle  # all idle: max of them


def test_a_partition_with_unread_records_is_behind_not_idle() -> None:
    mw = MultiPartitionWatermark(BoundedOutOfOrderness(0, idle_timeout_ms=5 * S), partitions=["a", "b"])
    mw.update("a", i64(100 * S), now_ms=0)
    mw.update("b", i64(10 * S), now_ms=0)
    mw.update("a", i64(200 * S), now_ms=6 * S)
    # "b" has sent nothing for 6 s, but its source says records are waiting: it holds the watermark
    assert mw.on_idle(now_ms=6 * S, backlog={"b"}) == 10 * S and not mw.tracker("b").idle
    assert mw.on_idle(now_ms=10 * S) == 10 * S  # its idle clock restarted at 6 s
    assert mw.on_idle(now_ms=11 * S) == 200 * S  # caught up and silent for 5 s: idle now


def test_unknown_partitions_join_on_first_update() -> None:
    mw = MultiPartitionWatermark(BoundedOutOfOrderness(0))
    assert mw.update(0, i64(50), now_ms=0).tolist() == [NO_WATERMARK]
    assert mw.watermark == 50
    mw.update(1, i64(70), now_ms=0)
    assert mw.watermark == 50 and sorted(mw.partitions) == [0, 1]  # type: ignore[type-var]


def test_bridging_event_merges_two_sessions() -> None:
    agg = WindowAggregator(SessionWindows(gap_ms=10))
    wm = i64(0, 0, 0)
    agg.add(i32(7, 7, 7), i64(0, 5, 22), np.array([1.0, 2.0, 3.0]), wm)
    assert agg.state_size == 2  # [0, 15) and [22, 32)
    agg.add(i32(7), i64(13), np.array([4.0]), i64(0))  # [13, 23) overlaps both: one session
    assert agg.state_size == 1
    r = agg.advance(MAX_WATERMARK)
    assert (r.start_ms.tolist(), r.end_ms.tolist(), r.count.tolist(), r.sum.tolist()) == (
        [0],
        [32],
        [4],
        [10.0],
    )
    assert r.std[0] == pytest.approx(np.std([1, 2, 3, 4], ddof=1))


def test_session_events_exactly_one_gap_apart_merge() -> None:
    agg = WindowAggregator(SessionWindows(gap_ms=10))
    agg.add(i32(0, 0, 0), i64(0, 10, 21), np.ones(3), i64(0, 0, 0))
    r = agg.advance(MAX_WATERMARK)
    assert list(zip(r.start_ms.tolist(), r.end_ms.tolist(), strict=True)) == [(0, 20), (21, 31)]


def test_sliding_row_partially_late() -> None:
    agg = WindowAggregator(SlidingWindows(size_ms=10, slide_ms=5))
    # ts 7 is in [0, 10) and [5, 15); with watermark 12, [0, 10) is closed but [5, 15) is open.
    split = agg.add(i32(0), i64(7), np.array([1.0]), i64(12))
    assert split.late.tolist() == [] and split.partial.tolist() == [0]
    r = agg.advance(MAX_WATERMARK)
    assert r.start_ms.tolist() == [5]


def test_emit_current_reports_touched_windows() -> None:
    agg = WindowAggregator(TumblingWindows(10), emit="current")
    up = agg.add(i32(1, 2, 1), i64(1, 2, 3), np.array([1.0, 5.0, 3.0]), i64(0, 0, 0)).updated
    assert up is not None
    assert (up.slot.tolist(), up.count.tolist(), up.mean.tolist()) == ([1, 2], [2, 1], [2.0, 5.0])
    up = agg.add(i32(2), i64(4), np.array([7.0]), i64(0)).updated
    assert up is not None and (up.slot.tolist(), up.count.tolist()) == ([2], [2])
    assert np.isnan(agg.advance(10).std).tolist() == [False, False]


def test_reset_slots_forgets_expired_keys() -> None:
    for assigner in (TumblingWindows(10), SessionWindows(5)):
        agg = WindowAggregator(assigner)
        agg.add(i32(0, 1, 2), i64(1, 1, 1), np.ones(3), i64(0, 0, 0))
        agg.reset_slots(i32(1))
        assert agg.advance(MAX_WATERMARK).slot.tolist() == [0, 2]


def test_results_sorted_by_end_then_slot_then_start() -> None:
    agg = WindowAggregator(SlidingWindows(20, 10))
    agg.add(i32(3, 1, 2), i64(25, 5, 12), np.ones(3), i64(0, 0, 0))
    r = agg.advance(MAX_WATERMARK)
    keys = list(zip(r.end_ms.tolist(), r.slot.tolist(), r.start_ms.tolist(), strict=True))
    assert keys == sorted(keys) and len(keys) == 6


def test_negative_timestamps_and_offsets() -> None:
    _, starts = TumblingWindows(10, offset_ms=3).assign(i64(-8, -7, 2, 3))
    assert starts.tolist() == [-17, -7, -7, 3]


def test_snapshot_round_trip_keeps_open_windows() -> None:
    agg = WindowAggregator(TumblingWindows(10), allowed_lateness_ms=5)
    agg.add(i32(0, 0), i64(1, 2), np.array([1.0, 2.0]), i64(0, 0))
    again = WindowAggregator.from_snapshot(agg.snapshot())
    again.add(i32(0), i64(3), np.array([3.0]), i64(0))
    r = again.advance(15)
    assert (r.count.tolist(), r.mean.tolist(), r.std.tolist()) == ([3], [2.0], [1.0])
    with pytest.raises(SnapshotError):
        WindowAggregator.from_snapshot({"kind": "other", "version": 1})


def test_config_errors_name_the_field() -> None:
    with pytest.raises(ConfigError, match="`size_ms` must be > 0"):
        TumblingWindows(0)
    with pytest.raises(ConfigError, match="`max_delay_ms`"):
        BoundedOutOfOrderness(-1)
    with pytest.raises(ConfigError, match="`emit`"):
        WindowAggregator(TumblingWindows(10), emit="sometimes")  # type: ignore[arg-type]


def test_late_counter_counts_every_policy() -> None:
    counter = LateCounter()
    counter.add(split_late(i64(1, 50, 2), 10))
    assert counter.count == 2
