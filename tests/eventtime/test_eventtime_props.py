"""Property tests: vigil.eventtime against naive per-event reference implementations."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vigil.eventtime import (
    MAX_WATERMARK,
    NO_WATERMARK,
    BoundedOutOfOrderness,
    MultiPartitionWatermark,
    SessionWindows,
    SlidingWindows,
    TumblingWindows,
    WindowAggregator,
)

SETTINGS = settings(max_examples=150, deadline=None)

# ---------------------------------------------------------------------------------------------------
# strategies
# ---------------------------------------------------------------------------------------------------


@st.composite
def streams(draw: st.DrawFn, max_len: int = 40) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random keys 0..5, timestamps with bounded disorder (around a drifting base), integer values.

    Times are sometimes on a grid of 5 ms so that ties and events exactly one gap apart are common.
    """
    n = draw(st.integers(0, max_len))
    unit = draw(st.sampled_from([1, 5]))
    n_keys = draw(st.integers(1, 6))
    base = draw(st.integers(-100, 100))
    slots, ts, vals = [], [], []
    for _ in range(n):
        base += draw(st.integers(0, 4))
        slots.append(draw(st.integers(0, n_keys - 1)))
        ts.append(unit * (base + draw(st.integers(-8, 8))))
        vals.append(float(draw(st.integers(-50, 50))))
    return np.array(slots, np.int32), np.array(ts, np.int64), np.array(vals, np.float64)


@st.composite
def cuts(draw: st.DrawFn, n: int) -> list[tuple[int, int]]:
    """Random batch boundaries over ``n`` rows (empty batches allowed)."""
    points = sorted(draw(st.lists(st.integers(0, n), max_size=6)))
    edges = [0, *points, n]
    return list(zip(edges[:-1], edges[1:], strict=True))


tumbling = st.builds(TumblingWindows, st.integers(1, 50), st.integers(-20, 20))
sliding = st.integers(1, 50).flatmap(
    lambda size: st.builds(
        SlidingWindows,
        st.just(size),
        st.integers(1, size) | st.integers(size, size + 10),
        st.integers(-20, 20),
    )
)
sessions = st.builds(SessionWindows, st.integers(1, 30) | st.sampled_from([5, 10, 15]))
ASSIGNERS = {"tumbling": tumbling, "sliding": sliding, "session": sessions}
assigners = st.one_of(tumbling, sliding, sessions)

# ---------------------------------------------------------------------------------------------------
# naive references: one event at a time, plain Python
# ---------------------------------------------------------------------------------------------------


def ref_watermarks(ts: list[int], delay: int) -> list[int]:
    out, max_ts = [], None
    for t in ts:
        out.append(NO_WATERMARK if max_ts is None else max_ts - delay)
        max_ts = t if max_ts is None else max(max_ts, t)
    return out


def ref_windows(assigner: TumblingWindows | SlidingWindows, t: int) -> list[int]:
    """Every window start s (on the assigner's grid) with s <= t < s + size, by brute force."""
    if isinstance(assigner, TumblingWindows):
        step, size = assigner.size_ms, assigner.size_ms
    else:
        step, size = assigner.slide_ms, assigner.size_ms
    off = assigner.offset_ms
    k_lo = math.floor((t - size - off) / step) - 2
    k_hi = math.ceil((t - off) / step) + 2
    return [off + k * step for k in range(k_lo, k_hi + 1) if off + k * step <= t < off + k * step + size]


def ref_aggregate(assigner, lateness, slots, ts, vals, wms):
    """Windows fired (slot, start, end, values), late and partially late rows, events in arrival order."""
    open_: dict[tuple[int, int], tuple[int, list[float]]] = {}
    fired: list[tuple[int, int, int, list[float]]] = []
    late: list[int] = []
    partial: list[int] = []

    def fire(w: int) -> None:
        for key in sorted(open_):
            end, values = open_[key]
            if end + lateness <= w:
                fired.append((key[0], key[1], end, values))
                del open_[key]

    for i, (k, t, v, w) in enumerate(zip(slots.tolist(), ts.tolist(), vals.tolist(), wms, strict=True)):
        fire(w)
        if isinstance(assigner, SessionWindows):
            lo, hi, values = t, t + assigner.gap_ms, [v]
            merged_any, changed = False, True
            while changed:
                changed = False
                for key in list(open_):
                    end, vs = open_[key]
                    if key[0] == k and key[1] <= hi and end >= lo:
                        lo, hi = min(lo, key[1]), max(hi, end)
                        values = values + vs
                        del open_[key]
                        merged_any = changed = True
            if not merged_any and hi + lateness <= w:
                late.append(i)
            else:
                open_[(k, lo)] = (hi, values)
        else:
            starts = ref_windows(assigner, t)
            ok = [s for s in starts if not (s + assigner.size_ms + lateness <= w)]
            if starts and not ok:
                late.append(i)
            elif len(ok) < len(starts):
                partial.append(i)
            for s in ok:
                open_.setdefault((k, s), (s + assigner.size_ms, []))[1].append(v)
    fire(MAX_WATERMARK)
    return fired, late, partial


def ref_stats(values: list[float]) -> tuple[int, float, float, float, float, float]:
    a = np.array(values)
    std = float(np.std(a, ddof=1)) if len(a) >= 2 else math.nan
    return len(a), float(a.sum()), float(a.mean()), std, float(a.min()), float(a.max())


def rows_of(r) -> list[tuple]:
    return list(
        zip(
            r.slot.tolist(),
            r.start_ms.tolist(),
            r.end_ms.tolist(),
            r.count.tolist(),
            r.sum.tolist(),
            r.mean.tolist(),
            r.std.tolist(),
            r.min.tolist(),
            r.max.tolist(),
            strict=True,
        )
    )


def assert_close_rows(got: list[tuple], want: list[tuple]) -> None:
    assert [g[:4] for g in got] == [w[:4] for w in want]
    for g, w in zip(got, want, strict=True):
        for a, b in zip(g[4:], w[4:], strict=True):
            assert (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9), (g, w)


# ---------------------------------------------------------------------------------------------------
# (a) watermarks
# ---------------------------------------------------------------------------------------------------


@SETTINGS
@given(data=st.data(), stream=streams(), delay=st.integers(0, 15))
def test_watermarks_match_per_event_loop_across_splits_and_restore(data, stream, delay) -> None:
    _, ts, _ = stream
    strategy = BoundedOutOfOrderness(delay)
    batches = data.draw(cuts(len(ts)))
    restore_after = data.draw(st.integers(0, len(batches)))
    tracker = strategy.build()
    got: list[int] = []
    for b, (lo, hi) in enumerate(batches):
        if b == restore_after:
            tracker = strategy.build(json.loads(json.dumps(tracker.snapshot())))
        got += tracker.on_batch(ts[lo:hi], now_ms=0).tolist()
    want = ref_watermarks(ts.tolist(), delay)
    assert got == want
    assert tracker.watermark == (NO_WATERMARK if not len(ts) else int(ts.max()) - delay)


# ---------------------------------------------------------------------------------------------------
# (b) assigners
# ---------------------------------------------------------------------------------------------------


@SETTINGS
@given(stream=streams(), assigner=tumbling | sliding)
def test_assigners_match_naive_loop(stream, assigner) -> None:
    _, ts, _ = stream
    rows, starts = assigner.assign(ts)
    want = [(i, s) for i, t in enumerate(ts.tolist()) for s in ref_windows(assigner, t)]
    assert list(zip(rows.tolist(), starts.tolist(), strict=True)) == want
    assert rows.dtype == np.int64 and starts.dtype == np.int64


# ---------------------------------------------------------------------------------------------------
# (c) windowed aggregation
# ---------------------------------------------------------------------------------------------------


def check_emitted_on_time(r, prev_wm: int, wm: int, lateness: int) -> list[tuple]:
    """A window is emitted by the first advance whose watermark reaches its end + lateness."""
    for end in r.end_ms.tolist():
        assert prev_wm < end + lateness <= wm
    return rows_of(r)


def run_aggregator(assigner, lateness, emit, stream, delay, batches, restore_after, as_lists):
    slots, ts, vals = stream
    strategy = BoundedOutOfOrderness(delay)
    tracker = strategy.build()
    agg = WindowAggregator(assigner, allowed_lateness_ms=lateness, emit=emit)
    results, updates, late, partial = [], [], [], []
    prev_wm = NO_WATERMARK
    for b, (lo, hi) in enumerate(batches):
        if b == restore_after:
            snap = agg.snapshot()
            if as_lists:
                snap["state"] = {k: v.tolist() for k, v in snap["state"].items()}
            agg = WindowAggregator.from_snapshot(snap)
            tracker = strategy.build(tracker.snapshot())
        wm = tracker.on_batch(ts[lo:hi], now_ms=0)
        split = agg.add(slots[lo:hi], ts[lo:hi], vals[lo:hi], wm)
        late += (split.late + lo).tolist()
        partial += (split.partial + lo).tolist()
        if split.updated is not None:
            updates += rows_of(split.updated)
        results += check_emitted_on_time(agg.advance(tracker.watermark), prev_wm, tracker.watermark, lateness)
        prev_wm = tracker.watermark
    results += check_emitted_on_time(agg.advance(MAX_WATERMARK), prev_wm, MAX_WATERMARK, lateness)
    assert agg.state_size == 0
    return results, updates, late, partial


@pytest.mark.parametrize("kind", sorted(ASSIGNERS))
@settings(max_examples=120, deadline=None)
@given(
    data=st.data(),
    stream=streams(),
    delay=st.integers(0, 15),
    lateness=st.sampled_from([0, 5, 20]),
    emit=st.sampled_from(["final", "current"]),
    as_lists=st.booleans(),
)
def test_aggregator_matches_per_event_reference(kind, data, stream, delay, lateness, emit, as_lists) -> None:
    slots, ts, vals = stream
    assigner = data.draw(ASSIGNERS[kind])
    batches = data.draw(cuts(len(ts)))
    restore_after = data.draw(st.integers(0, len(batches)))
    got, updates, got_late, got_partial = run_aggregator(
        assigner, lateness, emit, stream, delay, batches, restore_after, as_lists
    )

    fired, want_late, want_partial = ref_aggregate(
        assigner, lateness, slots, ts, vals, ref_watermarks(ts.tolist(), delay)
    )
    want = [(k, s, e, *ref_stats(v)) for k, s, e, v in fired]
    assert sorted(got_late) == want_late
    assert sorted(got_partial) == want_partial
    assert_close_rows(sorted(got, key=lambda r: r[:4]), sorted(want, key=lambda r: r[:4]))
    if emit == "current":
        last = {u[:3]: u for u in updates}
        assert_close_rows(
            sorted(got, key=lambda r: r[:4]), sorted((last[r[:3]] for r in got), key=lambda r: r[:4])
        )
    else:
        assert updates == []


@SETTINGS
@given(stream=streams(), assigner=assigners, delay=st.integers(0, 15))
def test_aggregator_results_are_sorted_and_windows_are_well_formed(stream, assigner, delay) -> None:
    slots, ts, vals = stream
    tracker = BoundedOutOfOrderness(delay).build()
    agg = WindowAggregator(assigner)
    agg.add(slots, ts, vals, tracker.on_batch(ts, now_ms=0))
    r = agg.advance(MAX_WATERMARK)
    keys = list(zip(r.end_ms.tolist(), r.slot.tolist(), r.start_ms.tolist(), strict=True))
    assert keys == sorted(keys)
    assert (r.start_ms < r.end_ms).all() and (r.min <= r.mean + 1e-9).all() and (r.mean <= r.max + 1e-9).all()
    assert r.count.sum() >= len(ts) * 0 and (r.count >= 1).all()


# ---------------------------------------------------------------------------------------------------
# (d) multi-partition watermark
# ---------------------------------------------------------------------------------------------------


class RefMulti:
    """Per-event reference: min over active partitions, max over all when all are idle, never back."""

    def __init__(self, parts: list[int], delay: int, timeout: int) -> None:
        self.delay, self.timeout = delay, timeout
        self.max_ts: dict[int, int | None] = {p: None for p in parts}
        self.last: dict[int, int | None] = {p: None for p in parts}
        self.idle: dict[int, bool] = {p: False for p in parts}
        self.w = NO_WATERMARK

    def wm(self, p: int) -> int:
        m = self.max_ts[p]
        return NO_WATERMARK if m is None else m - self.delay

    def refresh(self) -> None:
        active = [self.wm(p) for p in self.max_ts if not self.idle[p]]
        low = min(active) if active else max(self.wm(p) for p in self.max_ts)
        self.w = max(self.w, low)

    def update(self, p: int, ts: list[int], now: int) -> list[int]:
        out = []
        for t in ts:
            out.append(self.w)
            m = self.max_ts[p]
            self.max_ts[p] = t if m is None else max(m, t)
            self.last[p], self.idle[p] = now, False
            self.refresh()
        return out

    def on_idle(self, now: int) -> int:
        for p in self.max_ts:
            if self.last[p] is None:
                self.last[p] = now
            if now - self.last[p] >= self.timeout:  # type: ignore[operator]
                self.idle[p] = True
        self.refresh()
        return self.w


ops = st.lists(
    st.one_of(
        st.tuples(st.just("update"), st.integers(0, 2), st.lists(st.integers(-100, 300), max_size=5)),
        st.tuples(st.just("idle"), st.just(0), st.just([])),
    ),
    max_size=20,
)


@SETTINGS
@given(
    ops=ops,
    delay=st.integers(0, 20),
    timeout=st.integers(1, 50),
    steps=st.lists(st.integers(0, 30), min_size=20, max_size=20),
    restore_at=st.integers(0, 20),
)
def test_multi_partition_watermark_matches_reference(ops, delay, timeout, steps, restore_at) -> None:
    strategy = BoundedOutOfOrderness(delay, idle_timeout_ms=timeout)
    mw = MultiPartitionWatermark(strategy, partitions=[0, 1, 2])
    ref = RefMulti([0, 1, 2], delay, timeout)
    now = 0
    for i, (op, p, ts) in enumerate(ops):
        now += steps[i]
        if i == restore_at:
            snap = json.loads(json.dumps(mw.snapshot()))
            mw = MultiPartitionWatermark(strategy)
            mw.restore(snap)
        if op == "update":
            got = mw.update(p, np.array(ts, np.int64), now_ms=now).tolist()
            assert got == ref.update(p, ts, now)
        else:
            assert mw.on_idle(now) == ref.on_idle(now)
        assert mw.watermark == ref.w
        assert mw.idle == all(ref.idle.values())
