"""EWZScore, RobustZScore, CUSUM and PageHinkley against naive per-event references, and their behaviour."""

import math
import random
from collections import deque

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from vigil.detectors import CUSUM, EWZScore, PageHinkley, RobustZScore

INF = float("inf")

# ---------------------------------------------------------------- random multi-key streams

values = st.one_of(
    st.floats(-1e3, 1e3, allow_nan=False),
    st.integers(-3, 3).map(float),  # ties: zero MAD, zero variance
    st.sampled_from([math.nan, INF, -INF, 1e6]),
)
rows = st.tuples(st.integers(0, 3), st.integers(-500, 3000), values)
streams = st.lists(rows, min_size=1, max_size=250)
SETTINGS = settings(max_examples=40, deadline=None)


def columns(stream):
    slots = np.array([r[0] for r in stream], np.int32)
    ts = np.cumsum([r[1] for r in stream]).astype(np.int64)  # mostly increasing, sometimes out of order
    x = np.array([r[2] for r in stream], np.float64)
    return slots, ts, x


def run_split(det, slots, ts, x, cut):
    """Run in two batches (the split must not matter) and return (score, flag, ready)."""
    a = det.process_many(slots[:cut], ts[:cut], {"value": x[:cut]})
    b = det.process_many(slots[cut:], ts[cut:], {"value": x[cut:]})
    return (np.concatenate([a.score, b.score]), np.concatenate([a.flag, b.flag]), np.concatenate([a.ready, b.ready]))


def assert_matches(got, want):
    score, flag, ready = got
    w_score = np.array([r[0] for r in want])
    np.testing.assert_allclose(score, w_score, rtol=1e-9, atol=1e-12)
    assert flag.tolist() == [r[1] for r in want]
    assert ready.tolist() == [r[2] for r in want]


# ---------------------------------------------------------------- naive references (plain loops, dict per key)


def ref_ewzscore(slots, ts, x, halflife, halflife_ms, threshold, min_count, protect):
    decay = 2.0 ** (-1.0 / (halflife or 50.0))
    state = {}
    out = []
    for k, t, v in zip(slots.tolist(), ts.tolist(), x.tolist()):
        s = state.setdefault(k, {"n": 0, "W": 0.0, "W2": 0.0, "mean": 0.0, "var": 0.0, "last": 0})
        if not math.isfinite(v):
            out.append((0.0, False, False))
            continue
        den = s["W"] * s["W"] - s["W2"]
        std = math.sqrt(s["var"] * s["W"] * s["W"] / den) if den > 0 else 0.0
        ready = s["n"] >= min_count and std > 0
        z = (v - s["mean"]) / std if ready else 0.0
        flag = ready and abs(z) > threshold
        out.append((abs(z), flag, ready))
        if protect and flag:
            continue
        if halflife_ms:
            f = 0.0 if s["n"] == 0 else 2.0 ** (-max(float(t - s["last"]), 0.0) / halflife_ms)
            s["last"] = t if s["n"] == 0 else max(s["last"], t)
        else:
            f = decay
        s["W"] = f * s["W"] + 1.0
        s["W2"] = f * f * s["W2"] + 1.0
        w = 1.0 / s["W"]
        d = v - s["mean"]
        s["mean"] += w * d
        s["var"] = (1.0 - w) * (s["var"] + w * d * d)
        s["n"] += 1
    return out


def ref_robust(x_slots, x, window, threshold, min_count):
    wins = {}
    out = []
    for k, v in zip(x_slots.tolist(), x.tolist()):
        win = wins.setdefault(k, deque(maxlen=window))
        if not math.isfinite(v):
            out.append((0.0, False, False))
            continue
        score, flag, ready = 0.0, False, False
        n = len(win)
        if n >= min_count:
            s = sorted(win)
            med = s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2.0
            dev = sorted(abs(u - med) for u in s)
            mad = dev[n // 2] if n % 2 else (dev[n // 2 - 1] + dev[n // 2]) / 2.0
            if mad > 0:
                scale = mad / 0.6745
            else:
                total = 0.0
                for u in s:
                    total += abs(u - med)
                scale = math.sqrt(math.pi / 2) * (total / n)
            if scale > 0:
                score = abs((v - med) / scale)
                ready, flag = True, score > threshold
        out.append((score, flag, ready))
        win.append(v)
    return out


def ref_cusum(slots, x, target, k, h, halflife, min_count):
    decay = 2.0 ** (-1.0 / halflife)
    fresh = {"n": 0, "W": 0.0, "W2": 0.0, "mean": 0.0, "var": 0.0, "sp": 0.0, "sn": 0.0}
    state = {}
    out = []
    for key, v in zip(slots.tolist(), x.tolist()):
        s = state.setdefault(key, dict(fresh))
        if not math.isfinite(v):
            out.append((0.0, False, False))
            continue
        den = s["W"] * s["W"] - s["W2"]
        std = math.sqrt(s["var"] * s["W"] * s["W"] / den) if den > 0 else 0.0
        if s["n"] >= min_count and std > 0:
            z = (v - (s["mean"] if target is None else target)) / std
            s["sp"] = max(0.0, s["sp"] + z - k)
            s["sn"] = max(0.0, s["sn"] - z - k)
            score = max(s["sp"], s["sn"])
            out.append((score, score > h, True))
            if score > h:
                state[key] = dict(fresh)
                continue
        else:
            out.append((0.0, False, False))
        s["W"] = decay * s["W"] + 1.0
        s["W2"] = decay * decay * s["W2"] + 1.0
        w = 1.0 / s["W"]
        d = v - s["mean"]
        s["mean"] += w * d
        s["var"] = (1.0 - w) * (s["var"] + w * d * d)
        s["n"] += 1
    return out


class RiverPageHinkley:
    """river.drift.PageHinkley(mode="both"), transcribed: reset at the update after a drift."""

    def __init__(self, min_instances, delta, threshold, alpha):
        self.min_instances, self.delta, self.threshold, self.alpha = min_instances, delta, threshold, alpha
        self.drift_detected = False
        self._reset()

    def _reset(self):
        self.drift_detected = False
        self.n, self.mean = 0.0, 0.0
        self.sum_inc, self.sum_dec = 0.0, 0.0
        self.min_inc, self.max_dec = INF, -1.0
        self.stat = 0.0

    def update(self, x):
        if self.drift_detected:
            self._reset()
        self.n += 1.0
        self.mean += (1.0 / self.n) * (x - self.mean)
        dev = x - self.mean
        self.sum_inc = self.alpha * self.sum_inc + dev - self.delta
        self.sum_dec = self.alpha * self.sum_dec + dev + self.delta
        self.min_inc = min(self.min_inc, self.sum_inc)
        self.max_dec = max(self.max_dec, self.sum_dec)
        self.stat = 0.0
        if self.n >= self.min_instances:
            t_inc, t_dec = self.sum_inc - self.min_inc, self.max_dec - self.sum_dec
            self.stat = max(t_inc, t_dec)
            self.drift_detected = t_inc > self.threshold or t_dec > self.threshold


def ref_page_hinkley(slots, x, delta, threshold, alpha, min_instances):
    dets = {}
    out = []
    for k, v in zip(slots.tolist(), x.tolist()):
        if not math.isfinite(v):
            out.append((0.0, False, False))
            continue
        ph = dets.setdefault(k, RiverPageHinkley(min_instances, delta, threshold, alpha))
        ph.update(v)
        out.append((ph.stat, ph.drift_detected, ph.n >= min_instances))
    return out


# ---------------------------------------------------------------- kernels == references


@SETTINGS
@given(streams, st.data())
def test_ewzscore_matches_reference(stream, data):
    slots, ts, x = columns(stream)
    timed = data.draw(st.booleans())
    halflife = None if timed else data.draw(st.sampled_from([None, 2.0, 15.0]))
    halflife_time = data.draw(st.sampled_from(["1s", "20s", 700])) if timed else None
    threshold, min_count = data.draw(st.sampled_from([1.0, 3.0])), data.draw(st.sampled_from([2, 5]))
    protect = data.draw(st.booleans())
    det = EWZScore(
        field="value",
        halflife=halflife,
        halflife_time=halflife_time,
        threshold=threshold,
        min_count=min_count,
        protect=protect,
    )
    want = ref_ewzscore(slots, ts, x, halflife, det.halflife_ms, threshold, min_count, protect)
    assert_matches(run_split(det, slots, ts, x, data.draw(st.integers(0, len(stream)))), want)


@SETTINGS
@given(streams, st.data())
def test_robust_zscore_matches_reference(stream, data):
    slots, ts, x = columns(stream)
    window = data.draw(st.sampled_from([2, 5, 8, 31]))
    min_count = data.draw(st.integers(2, window))
    threshold = data.draw(st.sampled_from([1.0, 3.5]))
    det = RobustZScore(field="value", window=window, threshold=threshold, min_count=min_count)
    want = ref_robust(slots, x, window, threshold, min_count)
    assert_matches(run_split(det, slots, ts, x, data.draw(st.integers(0, len(stream)))), want)


@SETTINGS
@given(streams, st.data())
def test_cusum_matches_reference(stream, data):
    slots, ts, x = columns(stream)
    target = data.draw(st.sampled_from([None, None, 0.0, 5.0]))
    k, h = data.draw(st.sampled_from([0.0, 0.5, 1.0])), data.draw(st.sampled_from([1.0, 5.0]))
    halflife, min_count = data.draw(st.sampled_from([3.0, 50.0])), data.draw(st.sampled_from([2, 6]))
    det = CUSUM(field="value", target=target, k=k, h=h, halflife=halflife, min_count=min_count)
    want = ref_cusum(slots, x, target, k, h, halflife, min_count)
    assert_matches(run_split(det, slots, ts, x, data.draw(st.integers(0, len(stream)))), want)


@SETTINGS
@given(streams, st.data())
def test_page_hinkley_matches_river_semantics(stream, data):
    slots, ts, x = columns(stream)
    delta, threshold = data.draw(st.sampled_from([0.005, 1.0])), data.draw(st.sampled_from([5.0, 50.0, 500.0]))
    alpha, min_instances = data.draw(st.sampled_from([1 - 0.0001, 0.9, 1.0])), data.draw(st.sampled_from([1, 3, 30]))
    det = PageHinkley(field="value", delta=delta, threshold=threshold, alpha=alpha, min_instances=min_instances)
    want = ref_page_hinkley(slots, x, delta, threshold, alpha, min_instances)
    assert_matches(run_split(det, slots, ts, x, data.draw(st.integers(0, len(stream)))), want)


# ---------------------------------------------------------------- behaviour


def test_ewzscore_time_halflife_forgets_by_event_time():
    """With halflife_time, an old level weighs half after one half-life of event time, whatever the event count."""
    det = EWZScore(field="value", halflife_time="10s", min_count=5, protect=False)
    n = 400
    v = np.where(np.arange(n) < 300, 0.0, 10.0)
    one_per_s = det.process_many(np.zeros(n, np.int32), np.arange(n) * 1000, {"value": v})
    assert abs(one_per_s.stats["mean"][310] - 5.0) < 0.3  # 10 events = 10 s after the step
    det2 = EWZScore(field="value", halflife_time="10s", min_count=5, protect=False)
    ten_per_s = det2.process_many(np.zeros(n, np.int32), np.arange(n) * 100, {"value": v})
    assert abs(ten_per_s.stats["mean"][399] - 5.0) < 0.3  # 100 events, but only 10 s after the step


def test_robust_zscore_is_unmoved_by_gross_outliers_where_ew_zscore_is():
    rng = np.random.default_rng(7)
    n = 3000
    v = rng.standard_normal(n)
    v[rng.random(n) < 0.10] = 50.0  # 10 % gross outliers
    probes = np.arange(200, n, 50)
    v[probes] = 6.0  # a 6 sd anomaly
    slots, ts = np.zeros(n, np.int32), np.arange(n, dtype=np.int64) * 1000
    robust = RobustZScore(field="value", window=100, threshold=3.5, min_count=20).process_many(slots, ts, {"value": v})
    ew = EWZScore(field="value", halflife=50, threshold=3.5, protect=False).process_many(slots, ts, {"value": v})
    assert robust.flag[probes].mean() > 0.9
    assert ew.flag[probes].mean() < 0.1
    assert np.abs(robust.stats["median"][probes]).max() < 0.6 < 4 < ew.stats["mean"][probes].mean()
    assert 0.7 < np.median(robust.stats["scale"][probes]) < 1.6


def _shifted_streams(keys=10, stable=300, shifted=150, seed=3):
    rng = np.random.default_rng(seed)
    n = stable + shifted
    v = 10.0 + 2.0 * rng.standard_normal((n, keys))
    v[stable:] += 2.0  # +1 sd
    return np.tile(np.arange(keys, dtype=np.int32), n), np.repeat(np.arange(n) * 1000, keys), v.ravel()


def test_cusum_detects_a_one_sd_shift_within_a_few_events():
    slots, ts, v = _shifted_streams()
    out = CUSUM(field="value").process_many(slots, ts, {"value": v})  # textbook k=0.5, h=5
    flag = out.flag.reshape(-1, 10)
    delays = [int(np.argmax(flag[300:, j])) for j in range(10) if flag[300:, j].any()]
    assert len(delays) >= 9 and np.median(delays) <= 15
    assert flag[:300].sum() <= 3000 / 200, "in-control run length far below the textbook ~465 events"
    assert (out.fire == out.flag).all()


def test_cusum_with_a_wider_interval_stays_quiet_and_fires_once_per_change():
    slots, ts, v = _shifted_streams()
    out = CUSUM(field="value", h=8).process_many(slots, ts, {"value": v})
    flag = out.flag.reshape(-1, 10)
    assert flag[:300].sum() == 0, "false alarm on a stable stream"
    assert (flag[300:].sum(axis=0) == 1).all(), "each key's shift fires exactly once"
    assert np.argmax(flag[300:], axis=0).max() <= 60
    assert "shifted up" in CUSUM(field="value", h=8).describe({k: c[out.flag][0] for k, c in out.stats.items()})


def test_page_hinkley_reproduces_rivers_documented_detection():
    """river's docstring example: the stream changes at 1000, the drift is detected at index 1006 only."""
    rng = random.Random(12345)
    data = np.array(rng.choices([0, 1], k=1000) + rng.choices(range(4, 8), k=1000), np.float64)
    out = PageHinkley(field="err").process_many(np.zeros(len(data), np.int32), np.arange(len(data)), {"err": data})
    assert np.flatnonzero(out.flag).tolist() == [1006]


def test_page_hinkley_detects_a_gradual_drift_down():
    rng = np.random.default_rng(5)
    n = 600
    v = 100.0 + rng.standard_normal(n) - np.where(np.arange(n) > 300, 0.05 * (np.arange(n) - 300), 0.0)
    out = PageHinkley(field="v", delta=0.1, threshold=50).process_many(np.zeros(n, np.int32), np.arange(n), {"v": v})
    hits = np.flatnonzero(out.flag)
    assert len(hits) and 300 < hits[0] < 450 and out.stats["down"][hits[0]] > out.stats["up"][hits[0]]
