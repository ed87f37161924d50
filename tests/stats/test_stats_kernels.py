"""The shared statistics kernels (vigil.stats.ew, vigil.stats.ring, vigil.stats.slots) against naive references."""

from __future__ import annotations

import math

import numba
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from vigil.stats.ew import EWMoments, ew_step, halflife_alpha, merge, west_learn, west_std
from vigil.stats.ring import SortedRings, rolling_moments_push
from vigil.stats.slots import SlotArrays, grow_rows

values = st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=60)
_learn = numba.njit(lambda s, v, d: west_learn(s, 0, v, d))
_std = numba.njit(lambda s: west_std(s, 0))
_push = numba.njit(lambda row, n, mu, m2, v: rolling_moments_push(row, n, mu, m2, v))


@settings(deadline=None)
@given(values, st.floats(0.01, 0.9))
def test_ew_step_is_the_mean_and_variance_while_weights_are_equal(xs, alpha):
    n = mean = var = 0.0
    for i, x in enumerate(xs):
        n, mean, var = ew_step(n, mean, var, x, alpha)
        if 1.0 / (i + 1) >= alpha:  # still in the 1/n start
            assert math.isclose(mean, float(np.mean(xs[: i + 1])), rel_tol=1e-9, abs_tol=1e-6)
            assert math.isclose(var, float(np.var(xs[: i + 1])), rel_tol=1e-7, abs_tol=1e-3)


@settings(deadline=None)
@given(values, st.floats(0.5, 1.0))
def test_west_form_matches_weighted_moments(xs, f):
    st_ = np.zeros((1, 5))
    learn, std = _learn, _std
    for x in xs:
        learn(st_, x, f)
    w = f ** np.arange(len(xs))[::-1]
    mean = float(np.sum(w * xs) / w.sum())
    assert math.isclose(st_[0, 3], mean, rel_tol=1e-9, abs_tol=1e-6)
    den = w.sum() ** 2 - (w**2).sum()
    if den > 1e-9 * w.sum() ** 2:
        ref = math.sqrt(np.sum(w * (np.asarray(xs) - mean) ** 2) / w.sum() * w.sum() ** 2 / den)
        assert math.isclose(std(st_), ref, rel_tol=1e-6, abs_tol=1e-3)


@settings(deadline=None)
@given(values, values)
def test_merge_of_equal_weight_summaries_is_exact(a, b):
    w, m, v = merge(np.array([len(a)]), np.array([np.mean(a)]), np.array([np.var(a)]),
                    np.array([len(b)]), np.array([np.mean(b)]), np.array([np.var(b)]))  # fmt: skip
    both = np.r_[a, b]
    assert w[0] == len(both)
    assert math.isclose(m[0], both.mean(), rel_tol=1e-9, abs_tol=1e-6)
    assert math.isclose(v[0], both.var(), rel_tol=1e-7, abs_tol=1e-3)


def test_ew_moments_keys_are_independent_and_merge():
    ew = EWMoments(halflife=1000)
    rng = np.random.default_rng(0)
    slots = rng.integers(0, 3, 300).astype(np.int32)
    x = rng.normal(10, 2, 300)
    ew.update(slots, x)
    for k in range(3):
        assert math.isclose(ew.st[k, 1], x[slots == k].mean(), rel_tol=1e-12)
    ew.merge_slots(0, 1)
    both = x[(slots == 0) | (slots == 1)]
    assert math.isclose(ew.st[0, 1], both.mean(), rel_tol=1e-9) and math.isclose(ew.st[0, 2], both.var(), rel_tol=1e-9)
    assert halflife_alpha(1) == 0.5


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(-100, 100, allow_nan=False), min_size=1, max_size=80), st.integers(1, 9))
def test_sorted_rings_median_and_scale_match_numpy(xs, window):
    r = SortedRings(window)
    n, med, scale = r.update(np.zeros(len(xs), np.int32), np.array(xs))
    for i in range(len(xs)):
        last = np.array(xs[max(0, i - window) : i])
        assert n[i] == len(last)
        if len(last):
            assert med[i] == np.median(last)
            mad = np.median(np.abs(last - np.median(last)))
            ref = mad / 0.6745 if mad > 0 else 1.2533141373155003 * np.mean(np.abs(last - np.median(last)))
            assert math.isclose(scale[i], ref, rel_tol=1e-9, abs_tol=1e-12)


@settings(deadline=None)
@given(st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=1, max_size=100), st.integers(2, 12))
def test_rolling_moments_match_the_window(xs, width):
    push = _push
    row = np.zeros(width)
    mu = m2 = 0.0
    for n, x in enumerate(xs):
        mu, m2 = push(row, n, mu, m2, x)
        last = np.array(xs[max(0, n + 1 - width) : n + 1])
        assert math.isclose(mu, last.mean(), rel_tol=1e-9, abs_tol=1e-6)
        assert math.isclose(m2, ((last - last.mean()) ** 2).sum(), rel_tol=1e-6, abs_tol=1e-3)


class _Holder(SlotArrays):
    _slot_arrays = ("a", "b")

    def __init__(self):
        self.a = np.zeros((2, 3))
        self.b = np.full(2, -1, np.int64)

    def _grow_slots(self, top):
        self.a, self.b = grow_rows(self.a, top), grow_rows(self.b, top, fill=-1)

    def reset_slots(self, slots):
        slots = slots[slots < len(self.b)]
        self.a[slots], self.b[slots] = 0.0, -1


def test_slot_arrays_export_import_grow_and_reset():
    h = _Holder()
    h.a[1] = [1.0, 2.0, 3.0]
    h.b[1] = 7
    out = h.export_slots(np.array([1, 5]))  # slot 5 was never seen: a fresh slot's state
    assert out[0]["a"].tolist() == [1.0, 2.0, 3.0] and out[0]["b"] == 7 and out[1]["b"] == -1
    other = _Holder()
    other.import_slots(np.array([9]), [out[0]])
    assert other.a[9].tolist() == [1.0, 2.0, 3.0] and other.b[9] == 7
    other.import_slots(np.array([9]), [None])
    assert other.b[9] == -1 and not other.a[9].any()
    try:
        other.import_slots(np.array([0]), [{"a": np.zeros(4), "b": 1}])
    except ValueError as exc:
        assert "shape" in str(exc)
    else:
        raise AssertionError("a slice of another shape was accepted")
