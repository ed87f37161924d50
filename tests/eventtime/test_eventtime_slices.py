"""Per-key slices of WindowAggregator: a key's open windows moved mid-stream continue exactly elsewhere."""

from __future__ import annotations

import numpy as np
import pytest

from vigil.eventtime import MAX_WATERMARK, SessionWindows, SlidingWindows, TumblingWindows, WindowAggregator
from vigil.state import codec

ASSIGNERS = {
    "tumbling": lambda: TumblingWindows(2_000),
    "sliding": lambda: SlidingWindows(3_000, 1_000),
    "session": lambda: SessionWindows(1_500),
}


def stream(seed: int = 0, n: int = 900, keys: int = 5):
    """Out-of-order multi-key rows with a bounded-out-of-orderness watermark (some rows late)."""
    rng = np.random.default_rng(seed)
    slots = rng.integers(0, keys, n).astype(np.int32)
    arrival = np.cumsum(rng.integers(0, 300, n)).astype(np.int64)
    ts = arrival - np.where(rng.random(n) < 0.2, rng.integers(0, 4_000, n), 0)
    x = rng.normal(10, 3, n)
    wm = np.maximum.accumulate(np.r_[np.int64(-(2**62)), ts[:-1] - 1_000])  # watermark in force before each row
    return slots, ts, x, wm


def run(agg, slots, ts, x, wm, bounds, only=None, at=None):
    """Feed batches (rows of key ``only`` alone, renumbered to slot ``at``); windows and late rows per batch."""
    out, late = [], []
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        rows = np.arange(a, b) if only is None else np.arange(a, b)[slots[a:b] == only]
        s = slots[rows] if at is None else np.full(len(rows), at, np.int32)
        split = agg.add(s, ts[rows], x[rows], wm[rows])
        late.extend(rows[split.late].tolist())
        out.append(agg.advance(int(wm[b]) if b < len(wm) else MAX_WATERMARK))
    return out, late


def windows_of(results, slot):
    rows = []
    for r in results:
        for i in np.flatnonzero(r.slot == slot).tolist():
            rows.append((int(r.start_ms[i]), int(r.end_ms[i]), int(r.count[i]), float(r.sum[i]), float(r.min[i]),
                         float(r.max[i]), float(r.std[i]) if r.count[i] > 1 else None))
    return rows


@pytest.mark.parametrize("emit", ["final", "current"])
@pytest.mark.parametrize("kind", sorted(ASSIGNERS))
def test_a_keys_slice_continues_in_a_fresh_aggregator_at_another_slot(kind, emit):
    slots, ts, x, wm = stream()
    bounds = [0, 150, 300, 451, 600, 750, len(slots)]
    whole, whole_late = run(WindowAggregator(ASSIGNERS[kind](), 500, emit), slots, ts, x, wm, bounds)
    agg = WindowAggregator(ASSIGNERS[kind](), 500, emit)
    first, _ = run(agg, slots, ts, x, wm, bounds[:4])
    for key in (0, 3):
        state = agg.export_slots(np.array([key], np.int32))
        blob = codec.encode("window/slots", 1, {}, state)  # plain data: through the snapshot codec
        moved = WindowAggregator(ASSIGNERS[kind](), 500, emit)
        moved.import_slots(np.array([key + 7], np.int32), codec.decode(blob)["state"])
        rest, rest_late = run(moved, slots, ts, x, wm, bounds[3:], only=key, at=key + 7)
        assert windows_of(rest, key + 7) == windows_of(whole[3:], key)
        assert rest_late == [i for i in whole_late if i >= bounds[3] and slots[i] == key]
        assert windows_of(first, key) + windows_of(rest, key + 7) == windows_of(whole, key)


@pytest.mark.parametrize("kind", sorted(ASSIGNERS))
def test_import_over_a_busy_slot_replaces_its_windows_and_none_clears_them(kind):
    slots, ts, x, wm = stream(seed=1)
    agg = WindowAggregator(ASSIGNERS[kind]())
    agg.add(slots[:300], ts[:300], x[:300], wm[:300])
    one, two = agg.export_slots(np.array([1, 2], np.int32))
    assert len(one["start_ms"]) and len(two["start_ms"])
    agg.import_slots(np.array([2, 1], np.int32), [one, None])
    again = agg.export_slots(np.array([1, 2], np.int32))
    assert len(again[0]["start_ms"]) == 0
    assert codec.encode("w", 1, {}, again[1]) == codec.encode("w", 1, {}, one)
    with pytest.raises(ValueError):
        agg.import_slots(np.array([1], np.int32), [])
