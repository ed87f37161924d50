"""Holt-Winters, forecast-residual detectors and the anomaly-likelihood wrapper."""

import math

import numpy as np
import pytest

from vigil.detectors import registry
from vigil.detectors.forecast import EWForecaster, ForecastResidual, make_forecaster
from vigil.detectors.holtwinters import HoltWinters, HoltWintersForecaster
from vigil.detectors.likelihood import AnomalyLikelihood, Calibrated
from vigil.testing.detectors import check_detector

NOISE = 0.3


def seasonal_stream(keys=6, per_key=1200, period=24, seed=0, noise=NOISE):
    """Interleaved keys (per-key order kept), sin of `period` with a per-key phase, a trend and noise."""
    rng = np.random.default_rng(seed)
    slots = np.repeat(np.arange(keys, dtype=np.int32), per_key)
    rng.shuffle(slots)
    t = np.zeros(len(slots), np.int64)
    for k in range(keys):
        t[slots == k] = np.arange(per_key)
    phase = rng.uniform(0, period, keys)[slots]
    value = (
        50 + 5 * slots + 4 * np.sin(2 * np.pi * (t + phase) / period) + 0.01 * t + noise * rng.standard_normal(len(t))
    )
    return slots, t, value


def auc(score, labels):
    order = np.argsort(score, kind="stable")
    ranks = np.empty(len(score))
    ranks[order] = np.arange(1, len(score) + 1)
    pos = labels.sum()
    return (ranks[labels == 1].sum() - pos * (pos + 1) / 2) / (pos * (len(labels) - pos))


@pytest.mark.parametrize("period", [24, None])
def test_holt_winters_forecasts_seasonal_series(period):
    slots, t, x = seasonal_stream()
    det = HoltWinters(field="v", period=period, max_period=48)
    v = det.process_many(slots, t * 1000, {"v": x})
    late = t >= 300
    resid = v.stats["residual"][late]
    assert np.isfinite(resid).all()
    ratio = resid.std() / NOISE
    assert 0.9 < ratio < 1.2, ratio
    assert abs(resid.mean()) < 0.1 * NOISE
    assert v.ready[late].all()
    assert v.flag[late].mean() < 0.002  # threshold 4 on clean data
    if period is None:
        assert det.hw.periods(np.arange(6, dtype=np.int32)).tolist() == [24] * 6


def test_period_learning_rule():
    fc = HoltWintersForecaster(max_period=30)
    rng = np.random.default_rng(5)
    n = fc.warmup_len
    streams = {
        0: np.sin(2 * np.pi * np.arange(n) / 7) + 0.2 * rng.standard_normal(n),  # period 7, not its multiples
        1: rng.standard_normal(n),  # white noise: no season
        2: np.cumsum(rng.standard_normal(n)),  # random walk: decaying autocorrelation, no season
        3: 3.0 * np.arange(n),  # a straight line
    }
    for k, x in streams.items():
        fc.predict_learn_many(np.full(n, k, np.int32), np.arange(n), x)
    assert fc.periods(np.arange(4, dtype=np.int32)).tolist() == [7, 1, 1, 1]


def test_holt_winters_detects_spikes():
    slots, t, x = seasonal_stream(seed=1)
    rng = np.random.default_rng(2)
    labels = np.zeros(len(x), np.int8)
    spikes = rng.choice(np.flatnonzero(t >= 100), size=len(x) // 100, replace=False)
    x = x.copy()
    x[spikes] += rng.choice([-1.0, 1.0], len(spikes)) * rng.uniform(5, 8, len(spikes)) * NOISE
    labels[spikes] = 1
    for period in (24, None):
        v = HoltWinters(field="v", period=period).process_many(slots, t * 1000, {"v": x})
        r = v.ready
        assert auc(v.score[r], labels[r]) > 0.95
        assert v.flag[spikes].mean() > 0.7
        assert v.flag[r & (labels == 0)].mean() < 0.005


# --- a naive per-event reference of the recursion, warm-up, period rule and residual scoring ---


def ref_period(buf, max_period, min_autocorr):
    w = len(buf)
    t = np.arange(w)
    tbar, ybar = (w - 1) / 2, sum(buf) / w
    sxx = sum((i - tbar) ** 2 for i in t)
    slope = sum((i - tbar) * (buf[i] - ybar) for i in t) / sxx
    y = [buf[i] - ybar - slope * (i - tbar) for i in t]
    c0 = sum(v * v for v in y)
    if c0 <= 1e-12 * sum(v * v for v in buf):
        return 1
    r = {lag: sum(y[i] * y[i + lag] for i in range(w - lag)) / c0 for lag in range(1, max_period + 2)}
    best = max(r[lag] for lag in range(2, max_period + 1))
    if best < min_autocorr:
        return 1
    for lag in range(2, max_period + 1):
        if r[lag] >= 0.9 * best and r[lag] > r[lag - 1] and r[lag] >= r[lag + 1]:
            return lag
    return 1


def ref_init(buf, p):
    kp = len(buf) // p
    s0 = len(buf) - kp * p
    means = [sum(buf[s0 + k * p : s0 + (k + 1) * p]) / p for k in range(kp)]
    trend = 0.0
    if kp >= 2:
        kbar, mbar = (kp - 1) / 2, sum(means) / kp
        trend = sum((k - kbar) * (means[k] - mbar) for k in range(kp)) / sum((k - kbar) ** 2 for k in range(kp)) / p
    c = (p - 1) / 2
    season = [0.0] * p
    for j in range(p):
        season[(s0 + j) % p] = sum(buf[s0 + k * p + j] - means[k] - trend * (j - c) for k in range(kp)) / kp
    avg = sum(season) / p
    return means[-1] + trend * c, trend, [s - avg for s in season]


def reference_scores(
    slots, x, period, alpha, beta, gamma, warmup_periods, max_period, min_autocorr, halflife, min_res, threshold
):
    a_res = 1 - 2 ** (-1 / halflife)
    warm = warmup_periods * period if period else (warmup_periods + 1) * max_period
    keys = {}
    scores, ready = [], []
    for k, v in zip(slots.tolist(), x.tolist()):
        s = keys.setdefault(k, {"buf": [], "hw": None, "n": 0, "res": [0, 0.0, 0.0]})
        yhat = math.nan
        if s["hw"] is None:
            if math.isfinite(v):
                s["buf"].append(v)
                s["n"] += 1
                if s["n"] == warm:
                    p = period or ref_period(s["buf"], max_period, min_autocorr)
                    s["hw"] = [*ref_init(s["buf"], p), p]
        else:
            level, trend, season, p = s["hw"]
            h = s["n"] % p
            yhat = level + trend + season[h]
            if math.isfinite(v):
                nl = alpha * (v - season[h]) + (1 - alpha) * (level + trend)
                trend = beta * (nl - level) + (1 - beta) * trend
                if p > 1:
                    season[h] = gamma * (v - nl) + (1 - gamma) * season[h]
                s["hw"] = [nl, trend, season, p]
                s["n"] += 1
        z, ok = 0.0, False
        r = v - yhat
        if math.isfinite(r):
            cnt, mean, var = s["res"]
            if cnt >= min_res and var > 0:
                z, ok = (r - mean) / math.sqrt(var), True
            if not abs(z) > threshold:
                cnt += 1
                w = max(a_res, 1 / cnt)
                mean, var = mean + w * (r - mean), (1 - w) * (var + (r - mean) * w * (r - mean))
                s["res"] = [cnt, mean, var]
        scores.append(abs(z))
        ready.append(ok)
    return np.array(scores), np.array(ready)


@pytest.mark.parametrize(
    "params",
    [
        {"period": 5, "alpha": 0.3, "beta": 0.05, "gamma": 0.2, "warmup_periods": 2},
        {"period": None, "alpha": 0.2, "beta": 0.02, "gamma": 0.3, "warmup_periods": 2, "max_period": 8},
        {"period": 1, "alpha": 0.5, "beta": 0.1, "gamma": 0.0, "warmup_periods": 3},
    ],
)
def test_holt_winters_matches_naive_reference(params):
    rng = np.random.default_rng(7)
    n = 900
    slots = rng.integers(0, 4, n).astype(np.int32)
    x = 10 + 3 * np.sin(np.arange(n) * 2 * np.pi / 6) + rng.standard_normal(n) + 8 * (rng.random(n) < 0.02)
    x[rng.random(n) < 0.05] = np.nan
    x[rng.random(n) < 0.01] = np.inf
    full = {
        "max_period": 48,
        "min_autocorr": 0.3,
        "residual_halflife": 20.0,
        "min_residuals": 5,
        "threshold": 3.0,
        **params,
    }
    det = HoltWinters(field="v", **full)
    v = det.process_many(slots, np.arange(n, dtype=np.int64), {"v": x})
    want, want_ready = reference_scores(
        slots,
        x,
        full["period"],
        full["alpha"],
        full["beta"],
        full["gamma"],
        full["warmup_periods"],
        full["max_period"],
        full["min_autocorr"],
        full["residual_halflife"],
        full["min_residuals"],
        full["threshold"],
    )
    assert want_ready.sum() > 500
    assert np.array_equal(v.ready, want_ready)
    np.testing.assert_allclose(v.score, want, rtol=0, atol=1e-9)


def test_nonfinite_input_leaves_state_untouched():
    slots, t, x = seasonal_stream(keys=2, per_key=200)
    det = HoltWinters(field="v", period=24)
    det.process_many(slots, t, {"v": x})
    before = det.snapshot()
    v = det.process_many(np.array([0, 1, 0], np.int32), np.array([1, 2, 3]), {"v": np.array([np.nan, np.inf, -np.inf])})
    assert not v.ready.any() and not v.flag.any() and (v.score == 0).all()
    after = det.snapshot()
    for name in ("st", "season", "buf"):
        assert np.array_equal(before["forecaster"][name], after["forecaster"][name])
    assert np.array_equal(before["residuals"], after["residuals"])


def test_ew_forecaster_and_generic_detector():
    assert isinstance(make_forecaster({"kind": "holt_winters", "params": {"period": 3}}), HoltWintersForecaster)
    with pytest.raises(ValueError, match="forecaster.kind"):
        make_forecaster({"kind": "arima"})
    det = ForecastResidual(field="v", forecaster=EWForecaster(halflife=5))
    assert det.params()["forecaster"] == {"kind": "ew", "params": {"halflife": 5.0}}
    assert HoltWinters(period=7).params()["period"] == 7
    with pytest.raises(ValueError, match="alpha"):
        HoltWinters(alpha=0)


# --- anomaly likelihood ---


def test_anomaly_likelihood_flags_sustained_increase():
    rng = np.random.default_rng(3)
    n, change = 3000, 2000
    raw = np.abs(rng.standard_normal(n))
    raw[change:] *= 1.8  # a moderate, lasting rise: single scores stay unremarkable
    lik = AnomalyLikelihood(short_window=10, long_window=1000, min_history=100)
    out = lik.update_many(np.zeros(n, np.int32), raw, np.ones(n, bool), nines_threshold=4.0)
    nines = out["nines"]
    assert not (nines[:change] >= 4).any()
    hits = np.flatnonzero(nines[change:] >= 4)
    assert len(hits) and hits[0] < 50
    assert ((out["likelihood"] >= 0) & (out["likelihood"] <= 1)).all()


def test_calibrated_holt_winters_flags_variance_increase():
    slots, t, x = seasonal_stream(keys=3, per_key=2000, seed=4)
    rng = np.random.default_rng(9)
    change = (slots == 0) & (t >= 1500)
    x = x + np.where(change, 2.0 * NOISE * rng.standard_normal(len(x)), 0.0)  # noise sd 0.3 -> ~0.67 on key 0
    det = Calibrated(HoltWinters(field="v", period=24), short_window=10, long_window=1000, threshold=0.99999)
    v = det.process_many(slots, t, {"v": x})
    key0 = slots == 0
    assert not (v.flag & ~change).any()
    first = np.flatnonzero(v.flag & change)
    assert len(first)
    assert t[first[0]] - 1500 < 30
    assert v.fire.sum() < v.flag.sum()  # runs fire once
    assert (v.calibrated[v.ready] >= 0).all() and (v.calibrated <= 1).all()
    inner = v.stats["inner_score"][change & key0]
    assert (inner[:30] > det.inner.threshold).sum() <= 2  # the inner detector alone sees (almost) nothing
    assert "likelihood" in det.describe({k: float(a[first[0]]) for k, a in v.stats.items()})


def test_calibrated_params_rebuild_via_registry():
    det = Calibrated({"kind": "holt_winters", "params": {"period": 4}}, threshold=0.999)
    assert isinstance(det.inner, HoltWinters)
    assert det.threshold == pytest.approx(3.0)
    assert type(det)(**det.params()).params() == det.params()
    assert registry()["calibrated"] is Calibrated
    with pytest.raises(ValueError, match="inner.kind"):
        Calibrated({"kind": "nope"})


@pytest.mark.parametrize(
    "factory",
    [
        lambda: HoltWinters(field="value", max_period=8, gamma=0.2),
        lambda: ForecastResidual(field="value", forecaster={"kind": "holt_winters", "params": {"period": 3}}),
        lambda: Calibrated(HoltWinters(field="value", period=3), short_window=2, long_window=60, min_history=15),
    ],
)
def test_conformance(factory):
    check_detector(factory)
