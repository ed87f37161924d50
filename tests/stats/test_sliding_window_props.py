"""Property tests: exact sliding event-time windows (TimeWindowState, SlidingZScore, VelocityRule).

Each property runs the real (numba) implementation on random out-of-order multi-key streams and
compares it with a naive reference written below in plain Python: a dict of per-key lists, one
event at a time.

Values are multiples of 1/4 (plus a constant offset), so the running sums of the implementation are
exact and a window of equal values has a standard deviation of exactly 0 in both implementations;
means and deviations are compared with a tolerance of 1e-9 (relative and absolute), counts, flags and
alerts exactly.
"""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, reject, settings
from hypothesis import strategies as st

from vigil.detectors.velocity import VelocityRule
from vigil.detectors.zscore import SlidingZScore
from vigil.stats.timewindow import TimeWindowState

N_KEYS = 8
REL = ABS = 1e-9

# ---------------------------------------------------------------------------------------------------
# strategies
# ---------------------------------------------------------------------------------------------------


@st.composite
def streams(draw: st.DrawFn, max_len: int = 60) -> tuple[int, np.ndarray, np.ndarray]:
    """``(window_ms, slots, ts)``: keys 0..7, times drifting forward with bounded disorder.

    Times sit on a grid (1 ms, 5 ms or a quarter window) so ties and events exactly one window apart
    are common; the disorder reaches up to two windows back, so some rows are older than their key's
    window when they arrive.
    """
    window_ms = draw(st.integers(1, 20) | st.integers(1, 5000))
    n = draw(st.integers(0, max_len))
    n_keys = draw(st.integers(1, N_KEYS))
    unit = draw(st.sampled_from([1, 5, max(1, window_ms // 4)]))
    span = max(1, window_ms // unit)  # one window, in grid units
    step_max = draw(st.integers(0, span) | st.integers(0, max(1, span // 8)))  # sparse or dense windows
    disorder = draw(st.integers(0, 2 * span + 1))
    base = draw(st.integers(-(10**9), 10**9))
    rows = draw(
        st.lists(
            st.tuples(st.integers(0, n_keys - 1), st.integers(0, step_max), st.integers(0, disorder)),
            min_size=n,
            max_size=n,
        )
    )
    slots, ts = [], []
    for k, step, late in rows:
        base += step * unit
        slots.append(k)
        ts.append(base - late * unit)
    return window_ms, np.array(slots, np.int32), np.array(ts, np.int64)


def values(n: int, nan: bool = False) -> st.SearchStrategy[np.ndarray]:
    """Multiples of 1/4 around a constant offset, with occasional outliers (and NaNs if asked)."""
    usual = st.integers(-8, 8).map(lambda i: i / 4)
    outlier = st.integers(-400, 400).map(lambda i: i / 4)
    one = st.one_of(usual, usual, usual, outlier, *([st.just(math.nan)] if nan else []))
    offset = st.sampled_from([0.0, -2.5, 1e6])
    return st.tuples(offset, st.lists(one, min_size=n, max_size=n)).map(
        lambda p: np.array([p[0] + v for v in p[1]], np.float64)
    )


def rough_values(n: int, nan: bool = False) -> st.SearchStrategy[np.ndarray]:
    """Values whose sums round (for bit-for-bit comparisons between two runs of the implementation)."""
    one = st.floats(-1e3, 1e3, allow_nan=False) | st.sampled_from([0.1, 0.2, 0.3, 1e8 + 0.1])
    if nan:
        one = one | st.just(math.nan)
    return st.lists(one, min_size=n, max_size=n).map(lambda v: np.array(v, np.float64))


@st.composite
def cuts(draw: st.DrawFn, n: int) -> list[tuple[int, int]]:
    """Random batch boundaries over ``n`` rows (empty batches allowed)."""
    points = sorted(draw(st.lists(st.integers(0, n), max_size=6)))
    edges = [0, *points, n]
    return list(zip(edges[:-1], edges[1:], strict=True))


def key_sets() -> st.SearchStrategy[list[int]]:
    return st.lists(st.integers(0, N_KEYS - 1), max_size=3)


# ---------------------------------------------------------------------------------------------------
# naive references: one event at a time, a dict of per-key Python lists
# ---------------------------------------------------------------------------------------------------


class RefWindow:
    """Per key: the (ts, x) entries inside the window and the newest time seen."""

    def __init__(self, window_ms: int) -> None:
        self.window_ms = window_ms
        self.entries: dict[int, list[tuple[int, float]]] = {}
        self.newest: dict[int, int] = {}

    def evict(self, k: int, t: int) -> list[float]:
        newest = max(self.newest.get(k, t), t)
        self.newest[k] = newest
        lo = newest - self.window_ms
        self.entries[k] = [(s, v) for s, v in self.entries.get(k, []) if s > lo]
        return [v for _, v in self.entries[k]]

    def insert(self, k: int, t: int, v: float) -> None:
        if t > self.newest[k] - self.window_ms:
            self.entries[k].append((t, v))

    def reset(self, k: int) -> None:
        self.entries.pop(k, None)
        self.newest.pop(k, None)

    def count(self, k: int) -> int:
        return len(self.entries.get(k, []))


def ref_mean_std(vals: list[float]) -> tuple[float, float]:
    n = len(vals)
    if n == 0:
        return math.nan, math.nan
    mean = math.fsum(vals) / n
    if n == 1:
        return mean, math.nan
    return mean, math.sqrt(math.fsum((v - mean) ** 2 for v in vals) / (n - 1))


def ref_window_update(ref: RefWindow, slots, ts, x, learn) -> tuple[list[int], list[float], list[float]]:
    out_n, out_mean, out_std = [], [], []
    for k, t, v, le in zip(slots.tolist(), ts.tolist(), x.tolist(), learn.tolist(), strict=True):
        vals = ref.evict(k, t)
        mean, std = ref_mean_std(vals)
        out_n.append(len(vals))
        out_mean.append(mean)
        out_std.append(std)
        if le:
            ref.insert(k, t, v)
    return out_n, out_mean, out_std


class RefZScore:
    """The documented semantics of SlidingZScore (transform none), per event."""

    def __init__(self, window_ms, threshold, min_count, halflife, min_baseline, protect) -> None:
        self.win = RefWindow(window_ms)
        self.threshold = threshold
        self.min_count = min_count
        self.alpha = 0.0 if halflife is None else 1.0 - 2.0 ** (-1.0 / halflife)
        self.min_baseline = min_baseline
        self.protect = protect
        self.ew: dict[int, list[float]] = {}  # count, mean, variance

    def reset(self, k: int) -> None:
        self.win.reset(k)
        self.ew.pop(k, None)

    def process(self, k: int, t: int, v: float) -> tuple[float, int, int, float, float]:
        """(z, basis, count, mean, std) of one row, then learn it."""
        if math.isnan(v):
            return 0.0, 0, self.win.count(k), math.nan, math.nan
        vals = self.win.evict(k, t)
        n = len(vals)
        mean, std = ref_mean_std(vals)
        ew = self.ew.setdefault(k, [0.0, 0.0, 0.0])
        z, basis = 0.0, 0
        if n >= self.min_count and len(set(vals)) > 1:
            z, basis = (v - mean) / std, 1
        elif self.alpha > 0.0 and ew[0] >= self.min_baseline and ew[2] > 0.0:
            mean, std = ew[1], math.sqrt(ew[2])
            z, basis = (v - mean) / std, 2
        if basis and abs(abs(z) - self.threshold) <= 1e-9 * self.threshold:
            reject()  # |z| on the threshold: rounding may legitimately decide either way
        if self.protect and basis and abs(z) > self.threshold:
            return z, basis, n, mean, std
        self.win.insert(k, t, v)
        if self.alpha > 0.0:
            c = ew[0] + 1.0
            a = max(self.alpha, 1.0 / c)
            d = v - ew[1]
            inc = a * d
            ew[1] += inc
            ew[2] = (1.0 - a) * (ew[2] + d * inc)
            ew[0] = c
        return z, basis, n, mean, std


class RefVelocity:
    """Count in the window including this event; flag above max_count; fire once per burst.

    A row already older than its key's window (``ts <= newest - window``) is not kept, so it is not
    part of the count either: it sees the window's count as it is.
    """

    def __init__(self, window_ms: int, max_count: int) -> None:
        self.win = RefWindow(window_ms)
        self.max_count = max_count
        self.firing: dict[int, bool] = {}

    def reset(self, k: int) -> None:
        self.win.reset(k)
        self.firing.pop(k, None)

    def process(self, k: int, t: int) -> tuple[int, bool, bool]:
        n = len(self.win.evict(k, t))
        if n <= self.max_count:
            self.firing[k] = False
        self.win.insert(k, t, 1.0)
        c = self.win.count(k)  # n + 1, or n for a row too late to enter the window
        fire = c > self.max_count and not self.firing.get(k, False)
        if fire:
            self.firing[k] = True
        return c, c > self.max_count, fire


# ---------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------


def assert_close(got: np.ndarray, want: list[float], what: str) -> None:
    for i, (g, w) in enumerate(zip(got.tolist(), want, strict=True)):
        if math.isnan(w):
            assert math.isnan(g), f"{what}[{i}]: got {g!r}, want NaN"
        else:
            assert math.isclose(g, w, rel_tol=REL, abs_tol=ABS), f"{what}[{i}]: got {g!r}, want {w!r}"


def assert_same(a: tuple[np.ndarray, ...], b: tuple[np.ndarray, ...]) -> None:
    """Bitwise equality of tuples of arrays (NaN == NaN)."""
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.dtype == y.dtype
        assert x.tobytes() == y.tobytes()


def plain(snap: dict) -> dict:
    """A snapshot as JSON-like plain data (lists, ints, floats)."""
    return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in snap.items()}


def small_window(window_ms: int) -> TimeWindowState:
    """Tiny initial slot capacity and pool: every stream goes through slot growth and pool growth."""
    return TimeWindowState(window_ms, capacity=2, pool_size=8)


# ---------------------------------------------------------------------------------------------------
# 1. TimeWindowState
# ---------------------------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(data=st.data(), stream=streams())
def test_timewindow_matches_reference(data: st.DataObject, stream) -> None:
    """Count / mean / std per row equal the naive window's, across batches and key resets."""
    window_ms, slots, ts = stream
    n = len(slots)
    x = data.draw(values(n))
    learn = np.array(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)), np.bool_)
    if data.draw(st.booleans()):
        learn[:] = True
    batches = data.draw(cuts(n))
    resets = [data.draw(key_sets()) for _ in batches]

    w, ref = small_window(window_ms), RefWindow(window_ms)
    for (a, b), gone in zip(batches, resets, strict=True):
        got = w.update(slots[a:b], ts[a:b], x[a:b], learn[a:b])
        want = ref_window_update(ref, slots[a:b], ts[a:b], x[a:b], learn[a:b])
        assert got[0].tolist() == want[0]
        assert_close(got[1], want[1], "mean")
        assert_close(got[2], want[2], "std")
        if len(slots[a:b]):
            cnt = w.count(slots[a:b]).tolist()
            assert cnt == [ref.count(k) for k in slots[a:b].tolist()]
        w.reset_slots(np.array(gone, np.int32))
        for k in gone:
            ref.reset(k)
        assert w.buffered == sum(ref.count(k) for k in range(N_KEYS))


@settings(max_examples=150, deadline=None)
@given(data=st.data(), stream=streams())
def test_timewindow_splits_pool_and_snapshot_change_nothing(data: st.DataObject, stream) -> None:
    """One batch with a large pool == random batches with a tiny pool and a snapshot/restore midway."""
    window_ms, slots, ts = stream
    n = len(slots)
    x = data.draw(rough_values(n))
    learn = np.array(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)), np.bool_)
    whole = TimeWindowState(window_ms).update(slots, ts, x, learn)

    batches = data.draw(cuts(n))
    restore_after = data.draw(st.integers(0, len(batches) - 1))
    as_plain = data.draw(st.booleans())
    w = small_window(window_ms)
    parts = []
    for j, (a, b) in enumerate(batches):
        parts.append(w.update(slots[a:b], ts[a:b], x[a:b], learn[a:b]))
        if j == restore_after:
            snap = w.snapshot()
            w = TimeWindowState.from_snapshot(plain(snap) if as_plain else snap)
            assert w.buffered == int(np.sum(snap["cnt"]))
    split = tuple(np.concatenate([p[i] for p in parts]) for i in range(3))
    assert_same(whole, split)


@settings(max_examples=100, deadline=None)
@given(data=st.data(), stream=streams(max_len=40))
def test_timewindow_reset_slot_behaves_as_new(data: st.DataObject, stream) -> None:
    """After reset_slots, a key's results equal a fresh state's fed only that key's later rows."""
    window_ms, slots, ts = stream
    n = len(slots)
    x = data.draw(rough_values(n))
    cut = data.draw(st.integers(0, n))
    key = data.draw(st.integers(0, N_KEYS - 1))
    w = small_window(window_ms)
    w.update(slots[:cut], ts[:cut], x[:cut])
    w.reset_slots(np.array([key], np.int32))
    got = w.update(slots[cut:], ts[cut:], x[cut:])
    mine = slots[cut:] == key
    fresh = TimeWindowState(window_ms).update(slots[cut:][mine], ts[cut:][mine], x[cut:][mine])
    assert_same(tuple(g[mine] for g in got), fresh)


def test_timewindow_pool_reused_under_key_churn() -> None:
    """10,000 keys, each used briefly then reset: freed rings are reused, the pool stays small."""
    rng = np.random.default_rng(7)
    w = TimeWindowState(1000, capacity=2, pool_size=8)
    ref = RefWindow(1000)
    group = 100
    for first in range(0, 10_000, group):
        keys = np.arange(first, first + group, dtype=np.int32)
        reps = rng.integers(1, 12, size=group)  # up to 11 events: ring classes 4, 8 and 16
        slots = rng.permutation(np.repeat(keys, reps)).astype(np.int32)
        ts = np.sort(rng.integers(0, 2000, size=len(slots))).astype(np.int64)
        ts = ts - rng.integers(0, 50, size=len(slots))  # a little disorder
        x = rng.integers(-20, 20, size=len(slots)) / 4.0
        got = w.update(slots, ts, x)
        want = ref_window_update(ref, slots, ts, x, np.ones(len(slots), np.bool_))
        assert got[0].tolist() == want[0]
        assert_close(got[1], want[1], "mean")
        assert_close(got[2], want[2], "std")
        w.reset_slots(keys)
        for k in keys.tolist():
            ref.reset(k)
        assert w.buffered == 0
    # peak need: one group of 100 keys holding rings of up to 16 entries (plus the freed smaller ones)
    assert w.pool_ts.shape[0] <= 8192, w.pool_ts.shape
    assert w.pool_x.shape == w.pool_ts.shape
    assert w.capacity >= 10_000


# ---------------------------------------------------------------------------------------------------
# 2. SlidingZScore
# ---------------------------------------------------------------------------------------------------

zscore_params = st.fixed_dictionaries(
    {
        "threshold": st.sampled_from([0.5, 1.0, 1.5, 2.0, 3.0]),
        "min_count": st.integers(2, 5),
        "baseline_halflife": st.sampled_from([None, 1.0, 2.5, 50.0]),
        "min_baseline": st.integers(0, 4),
        "protect": st.booleans(),
    }
)


@settings(max_examples=200, deadline=None)
@given(data=st.data(), stream=streams(), params=zscore_params)
def test_zscore_matches_reference(data: st.DataObject, stream, params) -> None:
    """Score, flag, ready, basis, count, mean and std per row equal the naive detector's."""
    window_ms, slots, ts = stream
    n = len(slots)
    x = data.draw(values(n, nan=True))
    batches = data.draw(cuts(n))
    resets = [data.draw(key_sets()) for _ in batches]
    restore_after = data.draw(st.integers(-1, len(batches) - 1))

    det = SlidingZScore(field="v", window=window_ms, **params)
    det.win = small_window(window_ms)
    det.ew = np.zeros((det.win.capacity, 3), np.float64)
    ref = RefZScore(
        window_ms, params["threshold"], params["min_count"], params["baseline_halflife"],
        params["min_baseline"], params["protect"],
    )  # fmt: skip
    for j, ((a, b), gone) in enumerate(zip(batches, resets, strict=True)):
        v = det.process_many(slots[a:b], ts[a:b], {"v": x[a:b]})
        rows = zip(slots[a:b].tolist(), ts[a:b].tolist(), x[a:b].tolist(), strict=True)
        want = [ref.process(k, t, xv) for k, t, xv in rows]
        z = [r[0] for r in want]
        basis = [r[1] for r in want]
        assert v.stats["basis"].tolist() == basis
        assert v.ready.tolist() == [bb > 0 for bb in basis]
        assert_close(v.stats["z"], z, "z")
        assert_close(v.score, [abs(zz) for zz in z], "score")
        flags = [bb > 0 and abs(zz) > params["threshold"] for zz, bb in zip(z, basis, strict=True)]
        assert v.flag.tolist() == flags
        assert v.fire.tolist() == flags
        assert v.stats["count"].tolist() == [float(r[2]) for r in want]
        assert_close(v.stats["mean"], [r[3] for r in want], "mean")
        assert_close(v.stats["std"], [r[4] for r in want], "std")
        assert not np.any(v.score[~v.ready])
        if "value" in v.stats:  # the raw input, for the alert text
            assert_same((v.stats["value"],), (x[a:b],))
        det.reset_slots(np.array(gone, np.int32))
        for k in gone:
            ref.reset(k)
        if j == restore_after:
            det = SlidingZScore.from_snapshot(det.params(), det.snapshot())


@settings(max_examples=100, deadline=None)
@given(data=st.data(), stream=streams(max_len=40), params=zscore_params)
def test_zscore_splits_and_snapshot_change_nothing(data: st.DataObject, stream, params) -> None:
    """One batch == random batches with a snapshot/restore (as plain data) midway, bit for bit."""
    window_ms, slots, ts = stream
    n = len(slots)
    x = data.draw(rough_values(n, nan=True))
    whole = SlidingZScore(field="v", window=window_ms, **params).process_many(slots, ts, {"v": x})
    batches = data.draw(cuts(n))
    restore_after = data.draw(st.integers(0, len(batches) - 1))
    det = SlidingZScore(field="v", window=window_ms, **params)
    parts = []
    for j, (a, b) in enumerate(batches):
        parts.append(det.process_many(slots[a:b], ts[a:b], {"v": x[a:b]}))
        if j == restore_after:
            snap = det.snapshot()
            state = {"window": plain(snap["window"]), "ew": snap["ew"].tolist()}
            det = SlidingZScore.from_snapshot(det.params(), state)
    _assert_same_verdicts(whole, _concat(parts))


@settings(max_examples=100, deadline=None)
@given(data=st.data(), stream=streams(max_len=40), params=zscore_params)
def test_zscore_log_transform_is_log_of_input(data: st.DataObject, stream, params) -> None:
    """transform="log" == scoring log(x) (non-positive and NaN inputs missing), bit for bit."""
    window_ms, slots, ts = stream
    n = len(slots)
    pick = st.sampled_from([0.0, -1.0, math.nan, 0.5, 1.0, 2.0, 3.0, 10.0, 1e4])
    x = np.array(data.draw(st.lists(pick, min_size=n, max_size=n)), np.float64)
    logged = SlidingZScore(field="v", window=window_ms, transform="log", **params).process_many(slots, ts, {"v": x})
    with np.errstate(divide="ignore", invalid="ignore"):
        lx = np.where(x > 0, np.log(x), np.nan)
    plain_ = SlidingZScore(field="v", window=window_ms, **params).process_many(slots, ts, {"v": lx})
    unscorable = logged.stats.pop("unscorable")  # only the log transform has values it can't take
    assert_same((unscorable,), ((x <= 0).astype(np.float64),))  # NaN is missing, not unscorable
    _assert_same_verdicts(logged, plain_, skip=("value",))  # "value" reports the raw input
    if "value" in logged.stats:
        assert_same((logged.stats["value"],), (x,))
    assert not np.any(logged.ready[~(x > 0)])


def _concat(parts):
    from vigil.detectors.base import Verdicts

    return Verdicts.concat(parts)


def _assert_same_verdicts(a, b, skip: tuple[str, ...] = ()) -> None:
    cols = ("score", "calibrated", "flag", "fire", "ready")
    assert_same(tuple(getattr(a, c) for c in cols), tuple(getattr(b, c) for c in cols))
    assert sorted(a.stats) == sorted(b.stats)
    names = [k for k in sorted(a.stats) if k not in skip]
    assert_same(tuple(a.stats[k] for k in names), tuple(b.stats[k] for k in names))


# ---------------------------------------------------------------------------------------------------
# 3. VelocityRule
# ---------------------------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(data=st.data(), stream=streams(), max_count=st.integers(1, 5))
def test_velocity_matches_reference(data: st.DataObject, stream, max_count: int) -> None:
    """Count, flag and fire per row equal the naive rule's, across batches, resets and a restore."""
    window_ms, slots, ts = stream
    n = len(slots)
    batches = data.draw(cuts(n))
    resets = [data.draw(key_sets()) for _ in batches]
    restore_after = data.draw(st.integers(-1, len(batches) - 1))
    det = VelocityRule(window=window_ms, max_count=max_count)
    det.win = small_window(window_ms)
    det.firing = np.zeros(det.win.capacity, np.bool_)
    ref = RefVelocity(window_ms, max_count)
    for j, ((a, b), gone) in enumerate(zip(batches, resets, strict=True)):
        v = det.process_many(slots[a:b], ts[a:b], {})
        want = [ref.process(k, t) for k, t in zip(slots[a:b].tolist(), ts[a:b].tolist(), strict=True)]
        assert v.score.tolist() == [float(r[0]) for r in want]
        assert v.stats["count"].tolist() == [float(r[0]) for r in want]
        assert v.flag.tolist() == [r[1] for r in want]
        assert v.fire.tolist() == [r[2] for r in want]
        assert v.ready.all()
        assert np.all((v.calibrated > 0) == v.flag)
        det.reset_slots(np.array(gone, np.int32))
        for k in gone:
            ref.reset(k)
        if j == restore_after:
            snap = det.snapshot()
            state = {"window": plain(snap["window"]), "firing": snap["firing"].tolist()}
            det = VelocityRule.from_snapshot(det.params(), state)


# ---------------------------------------------------------------------------------------------------
# regression: a huge value that left the window must not ruin later deviations (sums are rebased)
# ---------------------------------------------------------------------------------------------------


def test_timewindow_std_accurate_after_large_value_left_the_window() -> None:
    """A huge value that passed through a busy key's window must not ruin its later deviations.

    The running sums are rebased (recomputed exactly) as soon as the squared deviations that went
    through them dwarf the window's own, so the value's rounding error leaves with it.
    """
    w = TimeWindowState(window_ms=3)
    x = np.array([1e9, 0.1, 0.2, 0.3, 0.1, 0.2, 0.3, 0.1, 0.2])
    n, mean, std = w.update(np.zeros(len(x), np.int32), np.arange(len(x), dtype=np.int64), x)
    # 1e9 leaves at row 3: from then on the window holds the two previous values only
    for i in range(3, len(x)):
        assert n[i] == 2
        assert_close(mean[i : i + 1], [float(np.mean(x[i - 2 : i]))], "mean")
        assert_close(std[i : i + 1], [float(np.std(x[i - 2 : i], ddof=1))], "std")


def test_timewindow_accurate_after_huge_value_leaves_a_busy_minute_window() -> None:
    """One event a second, a 60 s window: a 1e9 first amount must not hide a 10-sigma value later."""
    rng = np.random.default_rng(0)
    x = 100 + rng.standard_normal(6000)
    x[0] = 1e9
    w = TimeWindowState(window_ms=60_000)
    ts = np.arange(len(x), dtype=np.int64) * 1000
    n, mean, std = w.update(np.zeros(len(x), np.int32), ts, x)
    for i in (61, 62, 100, 5000):
        ref = x[i - 59 : i]
        assert n[i] == len(ref)
        assert_close(std[i : i + 1], [float(np.std(ref, ddof=1))], "std")
