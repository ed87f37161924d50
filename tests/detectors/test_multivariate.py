"""The calibration contract, the linear algebra kernels, the Mahalanobis / streaming-PCA detector, bench metrics."""

from __future__ import annotations

import numpy as np
import pytest

from vigil.cli.bench_metrics import auc_pr, auc_roc, best_f1, point_adjust, series_metrics
from vigil.detectors import Mahalanobis, TailCalibrated
from vigil.detectors.calibration import TailCalibrator, to_calibrated
from vigil.stats.linalg import spd_inverse, sym_eigh
from vigil.testing.contract import check_calibration_contract, check_relearns_after_step

# --- linear algebra against numpy's LAPACK -------------------------------------------------------------------


@pytest.mark.parametrize("d", [1, 2, 5, 30])
def test_spd_inverse_matches_numpy(d: int) -> None:
    rng = np.random.default_rng(d)
    B = rng.standard_normal((d + 3, d))
    A = B.T @ B + 0.1 * np.eye(d)
    out, L = np.zeros((d, d)), np.zeros((d, d))
    assert spd_inverse(A, out, L)
    np.testing.assert_allclose(out, np.linalg.inv(A), rtol=1e-8, atol=1e-10)


def test_spd_inverse_refuses_indefinite() -> None:
    out, L = np.full((2, 2), 7.0), np.zeros((2, 2))
    assert not spd_inverse(np.array([[1.0, 2.0], [2.0, 1.0]]), out, L)
    assert (out == 7.0).all()


@pytest.mark.parametrize("d", [1, 3, 8, 30])
def test_sym_eigh_matches_numpy(d: int) -> None:
    rng = np.random.default_rng(10 + d)
    B = rng.standard_normal((d, d))
    A = B + B.T
    w, V = np.zeros(d), np.zeros((d, d))
    sym_eigh(A, w, V)
    ref = np.linalg.eigvalsh(A)[::-1]
    np.testing.assert_allclose(w, ref, rtol=1e-8, atol=1e-9)
    np.testing.assert_allclose(A @ V, V * w, atol=1e-8)
    np.testing.assert_allclose(V.T @ V, np.eye(d), atol=1e-9)


# --- the calibration contract --------------------------------------------------------------------------------


@pytest.mark.parametrize("dist", ["exponential", "chisquare", "lognormal", "uniform"])
@pytest.mark.parametrize("t", [0.9, 0.99, 0.999])
def test_alarm_fraction_is_one_minus_threshold_on_stationary_noise(dist: str, t: float) -> None:
    """Whatever the raw score's distribution, calibrated >= t on about 1 - t of stationary rows."""
    rng = np.random.default_rng(3)
    n = 200_000
    raw = {
        "exponential": lambda: rng.exponential(2.0, n),
        "chisquare": lambda: rng.chisquare(30, n),
        "lognormal": lambda: rng.lognormal(0.0, 1.0, n),
        "uniform": lambda: rng.random(n),
    }[dist]()
    cal = TailCalibrator(history=2000, tail_rows=50, min_history=500)
    lp, ready = cal.calibrate_many(np.zeros(n, np.int32), raw)
    c, _ = to_calibrated(lp[ready])
    frac = float(np.mean(c >= t))
    # the empirical body is exact up to sampling; the exponential far tail is conservative for light tails
    assert frac <= (1 - t) * 1.35 + 2e-4, frac
    if t <= 0.99 or dist in ("exponential", "chisquare"):
        assert frac >= (1 - t) * 0.65, frac


def test_far_tail_resolves_beyond_the_history() -> None:
    rng = np.random.default_rng(0)
    history = rng.exponential(1.0, 1000)
    probe = np.array([8.0, 20.0, 60.0])
    # the exponential tail (max_shape 0): each further step adds nines in proportion
    cal = TailCalibrator(history=1000, tail_rows=50, min_history=100, max_shape=0.0)
    cal.calibrate_many(np.zeros(1000, np.int32), history)
    lp, ready = cal.calibrate_many(np.zeros(3, np.int32), probe, learn=np.zeros(3, bool))
    c, s = to_calibrated(lp)
    assert ready.all() and (np.diff(s) > 5).all()  # no saturation: each further step adds nines
    assert s[2] > 20 and c[2] == 1.0  # calibrated rounds to 1, the surprise keeps the magnitude
    # the default generalised Pareto tail errs heavy (fewer alarms) but still resolves every step
    cal = TailCalibrator(history=1000, tail_rows=50, min_history=100)
    cal.calibrate_many(np.zeros(1000, np.int32), history)
    lp, _ = cal.calibrate_many(np.zeros(3, np.int32), probe, learn=np.zeros(3, bool))
    assert (np.diff(-lp) > 1).all() and -lp[0] > 2


def test_tail_scale_floor_keeps_a_constant_history_finite() -> None:
    cal = TailCalibrator(history=200, tail_rows=20, min_history=50, tail_scale_min=2.0)
    cal.calibrate_many(np.zeros(200, np.int32), np.zeros(200))
    lp, _ = cal.calibrate_many(np.zeros(2, np.int32), np.array([0.5, 20.0]), learn=np.zeros(2, bool))
    s = -lp
    assert 1.0 < s[0] < 1.5 and 5 < s[1] < 6


def test_calibrator_per_key_and_snapshot() -> None:
    rng = np.random.default_rng(1)
    slots = rng.integers(0, 3, 3000).astype(np.int32)
    raw = rng.exponential(1.0 + slots)  # keys differ in scale
    a = TailCalibrator(history=300, tail_rows=20, min_history=50)
    whole, _ = a.calibrate_many(slots, raw)
    b = TailCalibrator(history=300, tail_rows=20, min_history=50)
    first, _ = b.calibrate_many(slots[:1000], raw[:1000])
    c = TailCalibrator(history=300, tail_rows=20, min_history=50)
    c.restore(b.snapshot())
    second, _ = c.calibrate_many(slots[1000:], raw[1000:])
    np.testing.assert_array_equal(whole, np.r_[first, second])


# --- the detector ---------------------------------------------------------------------------------------------


def _run(det: Mahalanobis, x: np.ndarray, field: str = "value") -> object:
    n = len(x)
    return det.process_many(np.zeros(n, np.int32), np.arange(n, dtype=np.int64) * 1000, {field: x})


@pytest.mark.parametrize("components", [0, 3])
def test_stationary_alarm_fraction(components: int) -> None:
    rng = np.random.default_rng(2)
    x = rng.standard_normal(40_000)
    det = Mahalanobis(window=8, components=components, threshold=0.99, warmup=200, min_history=500)
    v = _run(det, x)
    frac = float(v.flag[v.ready].mean())
    assert 0.005 < frac < 0.015, frac


def test_level_shift_is_relearned() -> None:
    """After a sustained step, flags stop within about `relearn_after` rows (and never stop without it)."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal(12_000)
    x[6000:] += 8.0
    kw = {"window": 4, "warmup": 200, "min_history": 300}
    on = _run(Mahalanobis(relearn_after=500, **kw), x)
    off = _run(Mahalanobis(relearn_after=0, **kw), x)
    assert on.flag[6000:6010].all() and off.flag[6000:6010].all()
    assert off.flag[8000:].mean() > 0.99  # frozen: a protected baseline never learns the new level
    assert on.stats["relearned"][6000:7000].sum() == 1
    assert on.flag[7000:].mean() < 0.02


def test_contributions_add_up_and_point_at_the_field() -> None:
    rng = np.random.default_rng(5)
    n = 4000
    X = {f: rng.standard_normal(n) for f in ("a", "b", "c")}
    X["b"][3500] += 9.0
    det = Mahalanobis(fields=["a", "b", "c"], window=2, warmup=100, min_history=200)
    v = det.process_many(np.zeros(n, np.int32), np.arange(n), X)
    total = v.stats["contrib_a"] + v.stats["contrib_b"] + v.stats["contrib_c"]
    np.testing.assert_allclose(total[v.ready], v.score[v.ready], rtol=1e-9, atol=1e-9)
    ((top, *_),) = det.explain_many(X, v, np.array([3500]))
    assert top.feature == "b" and top.value == X["b"][3500]
    assert v.flag[3500] and "b (" in det.describe({k: s[3500] for k, s in v.stats.items()})


def test_keys_are_independent() -> None:
    rng = np.random.default_rng(6)
    n = 3000
    x0, x1 = rng.standard_normal(n), 100 + 10 * rng.standard_normal(n)
    both = Mahalanobis(window=3, warmup=50, min_history=100)
    slots = np.r_[np.zeros(n), np.ones(n)].astype(np.int32)
    order = np.argsort(np.r_[np.arange(n), np.arange(n)], kind="stable")  # interleave the keys
    v = both.process_many(slots[order], np.arange(2 * n), {"value": np.r_[x0, x1][order]})
    alone = _run(Mahalanobis(window=3, warmup=50, min_history=100), x1)
    np.testing.assert_array_equal(v.score[slots[order] == 1], alone.score)


def test_constant_training_signal_with_floor() -> None:
    """A key constant while learning: min_std keeps a tiny wobble unremarkable and a real move extreme."""
    x = np.r_[np.ones(2000), 1.0 + 0.001 * np.sin(np.arange(500)), np.full(5, 0.5)]
    v = _run(Mahalanobis(window=2, min_std=0.01, warmup=100, min_history=100), x)
    assert not v.flag[2000:2500].any() and v.flag[-5:].all()
    assert np.isfinite(v.score).all()


def test_validation_names_the_param() -> None:
    with pytest.raises(ValueError, match="`window`"):
        Mahalanobis(window=0)
    with pytest.raises(ValueError, match="`hold_threshold`"):
        Mahalanobis(threshold=0.99, hold_threshold=0.999)
    with pytest.raises(ValueError, match="`components`"):
        Mahalanobis(window=2, components=2)


# --- bench metrics against scikit-learn ----------------------------------------------------------------------


def test_metrics_match_sklearn() -> None:
    from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

    rng = np.random.default_rng(7)
    for _ in range(5):
        s = np.round(rng.random(700), 2)
        y = rng.random(700) < 0.15
        assert auc_pr(s, y) == pytest.approx(average_precision_score(y, s))
        assert auc_roc(s, y) == pytest.approx(roc_auc_score(y, s))
        f1, _, _, t = best_f1(s, y)
        assert f1 == pytest.approx(max(f1_score(y, s >= u) for u in np.unique(s)))
        assert f1 == pytest.approx(f1_score(y, s >= t))


def test_point_adjustment_inflates_random_scores() -> None:
    rng = np.random.default_rng(8)
    y = np.zeros(10_000, bool)
    y[2000:2500] = y[7000:7300] = True
    m = series_metrics(rng.random(len(y)), y)
    assert m["f1_pa"] > 0.9 and m["f1_nopa"] < 0.2
    assert point_adjust(np.array([0.0, 0.2, 0.9]), np.array([0, 1, 1], bool)).tolist() == [0.0, 0.9, 0.9]


# --- the contract checks on the detectors that follow it -----------------------------------------------------


@pytest.mark.parametrize(
    "factory",
    [
        lambda: Mahalanobis(window=4, warmup=200, min_history=500),
        lambda: Mahalanobis(window=8, components=2, warmup=200, min_history=500),
        lambda: TailCalibrated(
            {"kind": "ew_zscore", "params": {"field": "value", "halflife": 200, "protect": False}}, min_history=500
        ),
    ],
    ids=["mahalanobis", "streaming_pca", "tail_calibrated(ew_zscore)"],
)
def test_contract(factory) -> None:
    check_calibration_contract(factory)
    check_relearns_after_step(factory)
