"""explain_many: the features behind flagged rows (the Explainer protocol of vigil.dataflow.outputs)."""

from __future__ import annotations

import numpy as np
import pytest

import vigil.detectors.iforest_explain as iforest_explain
from vigil.dataflow.outputs import CollectingOutputs, Explainer, verdict_alerts
from vigil.detectors import (
    CUSUM,
    Calibrated,
    Ensemble,
    EWZScore,
    ExpressionRule,
    ForecastResidual,
    HalfSpaceTrees,
    IsolationForestDetector,
    LevelRarity,
    PageHinkley,
    RobustZScore,
    SlidingZScore,
    ThresholdRule,
    VelocityRule,
)
from vigil.detectors.iforest import fit_isolation_forest
from vigil.types import Batch, Contribution

ZEROS = np.zeros


def calm_then(value: float, n: int = 60, seed: int = 0) -> np.ndarray:
    x = 10 + np.random.default_rng(seed).standard_normal(n)
    x[-1] = value
    return x


def run(det, x: dict[str, np.ndarray]):
    n = len(next(iter(x.values())))
    return det.process_many(ZEROS(n, np.int32), np.arange(n, dtype=np.int64) * 1000, x)


@pytest.mark.parametrize(
    ("det", "expected_stat"),
    [
        (SlidingZScore(field="v", window="120s", min_count=5, baseline_halflife=None), "mean"),
        (EWZScore(field="v", halflife=30, min_count=5), "mean"),
        (RobustZScore(field="v", window=30, min_count=5), "median"),
        (ForecastResidual(field="v", forecaster={"kind": "ew", "params": {"halflife": 10}}, min_residuals=5), "forecast"),
    ],
)
@pytest.mark.parametrize("spike", [30.0, -10.0])
def test_single_field_detectors_give_the_signed_z_value_and_expectation(det, expected_stat, spike):
    x = calm_then(spike)
    v = run(det, {"v": x})
    assert v.flag[-1]
    [[c]] = det.explain_many({"v": x}, v, np.array([len(x) - 1]))
    assert c.feature == "v" and c.value == spike and c.flag is True
    assert np.sign(c.score) == np.sign(spike - 10) and abs(c.score) == pytest.approx(v.score[-1])
    assert c.expected == pytest.approx(v.stats[expected_stat][-1])


def test_change_detectors_say_the_direction():
    x = np.r_[10 + np.tile([-1.0, 1.0], 20), np.full(15, 7.0)]
    cusum = CUSUM(field="v", h=5, halflife=50, min_count=10)
    v = run(cusum, {"v": x})
    [[c]] = cusum.explain_many({"v": x}, v, np.flatnonzero(v.flag)[:1])
    assert c.score < -5 and c.expected == pytest.approx(10.0, abs=0.5)
    ph = PageHinkley(field="v", delta=0.1, threshold=10, min_instances=10)
    up = np.r_[np.tile([0.0, 1.0], 30), np.full(20, 5.0)]
    v = run(ph, {"v": up})
    [[c]] = ph.explain_many({"v": up}, v, np.flatnonzero(v.flag)[:1])
    assert c.score > 10


def test_rules_explain_the_bound_crossed_and_the_count():
    rule = ThresholdRule(field="amount", above=1000, below=0)
    x = np.array([50.0, 1500.0, -2.0])
    v = run(rule, {"amount": x})
    ex = rule.explain_many({"amount": x}, v, np.array([1, 2]))
    assert ex == [[Contribution("amount", 0.5, 1500.0, 1000.0, True)], [Contribution("amount", -2.0, -2.0, 0.0, True)]]
    vel = VelocityRule(window="60s", max_count=3)
    v = vel.process_many(ZEROS(5, np.int32), np.arange(5) * 1000, {})
    assert vel.explain_many({}, v, np.array([3])) == [[Contribution("count", 4.0, 4.0, 3.0, True)]]
    assert not isinstance(ExpressionRule(expr="v > 1"), Explainer)  # a boolean rule has nothing to attribute


def test_level_rarity_scores_the_field_by_its_rarity():
    det = LevelRarity(warmup=20, bins=4, blocks=[1], scale_weights=[1.0], context_hours=0, suppress=5)
    x = 10 + np.random.default_rng(0).standard_normal(300)
    x[250] = 25.0
    v = det.process_many(ZEROS(300, np.int32), np.arange(300) * 60_000, {"value": x})
    [[c]] = det.explain_many({"value": x}, v, np.array([250]))
    assert (c.feature, c.value, c.expected) == ("value", 25.0, None) and c.score == pytest.approx(v.score[250])


def test_ensemble_explains_per_member_most_anomalous_first():
    ens = Ensemble([
        {"name": "z", "kind": "ew_zscore", "params": {"field": "amount", "halflife": 20, "min_count": 5}},
        {"name": "cap", "kind": "threshold_rule", "params": {"field": "amount", "above": 1000}},
    ], threshold=0.999)  # fmt: skip
    x = np.array([10, 11, 9, 10, 11, 10, 9, 30, 2000.0])
    v = run(ens, {"amount": x})
    [last] = ens.explain_many({"amount": x}, v, np.array([8]))
    assert [c.feature for c in last] == ["z", "cap"] and all(c.value == 2000.0 for c in last)
    assert last[0].expected == pytest.approx(v.stats["z.mean"][8]) and last[1].expected == 1000.0
    assert last[0].score == pytest.approx(v.stats["member_z"][8]) and last[0].flag is True


def test_calibrated_explains_through_its_inner_detector():
    det = Calibrated({"kind": "ew_zscore", "params": {"field": "v", "min_count": 5}}, short_window=1,
                     long_window=100, min_history=20, threshold=0.9999)  # fmt: skip
    x = calm_then(30.0)
    v = run(det, {"v": x})
    [[c]] = det.explain_many({"v": x}, v, np.array([59]))
    assert c.feature == "v" and c.score == pytest.approx(v.stats["z"][59])


@pytest.mark.parametrize("limits", [None, {"a": [0.0, 40.0], "b": [-10.0, 20.0]}])
def test_half_space_trees_attribute_to_the_field_that_isolates(limits):
    rng = np.random.default_rng(0)
    a, b = 20 + rng.standard_normal(600), 5 + rng.standard_normal(600)
    a[500] = 35.0
    det = HalfSpaceTrees(fields=["a", "b"], n_trees=20, height=6, window_size=50, limits=limits, threshold=0.5)
    v = run(det, {"a": a, "b": b})
    assert v.flag[500]
    [ex] = det.explain_many({"a": a, "b": b}, v, np.array([500]))
    assert ex[0].feature == "a" and ex[0].score > 0.9 and ex[0].value == 35.0
    assert sum(c.score for c in ex) == pytest.approx(1.0)
    assert np.isnan(v.stats["attr_a"][~v.flag]).all()  # computed for flagged rows only
    one = HalfSpaceTrees(fields="a", n_trees=5, height=4, window_size=20)
    v1 = run(one, {"a": a})
    assert one.explain_many({"a": a}, v1, np.array([500])) == [[Contribution("a", 1.0, 35.0)]]


def test_isolation_forest_attributes_by_isolation_bits_with_a_z_fallback(monkeypatch):
    rng = np.random.default_rng(0)
    art = fit_isolation_forest(rng.standard_normal((2000, 3)), ["a", "b", "c"], n_estimators=50)
    det = IsolationForestDetector(art)
    X = {"a": np.array([6.0, 0.0]), "b": np.array([0.2, -5.0]), "c": np.array([0.0, np.nan])}
    v = run(det, X)
    ex = det.explain_many(X, v, np.array([0, 1]))
    assert [e[0].feature for e in ex] == ["a", "b"] and all(e[0].score > 0.8 for e in ex)
    assert ex[0][0].expected == pytest.approx(art["train"]["mean"][0]) and ex[1][2].value is None
    monkeypatch.setattr(iforest_explain, "_TREES", {art["onnx_sha256"]: None})  # trees unreadable
    ex = det.explain_many(X, v, np.array([0]))
    assert ex[0][0].feature == "a" and ex[0][0].score > 5  # the z against training


def test_alerts_carry_the_contributions():
    det = SlidingZScore(field="amount", window="60s", min_count=3, baseline_halflife=None)
    b = Batch(ZEROS(5, np.int32), np.arange(5) * 1000, {"amount": np.array([10, 11, 9, 10, 90.0])})
    v = det.process_many(b.slots, b.ts_ms, b.cols)
    [alert] = verdict_alerts(CollectingOutputs("fraud"), "amount_z", det, "warning", b, np.array(["u1"] * 5), v)
    assert [alert.contributions] == det.explain_many(b.cols, v, np.array([4]))
    assert alert.contributions[0].feature == "amount" and alert.contributions[0].expected == 10.0


def test_registry_model_explains_with_the_model_or_the_fallback_z():
    from vigil.models.serving import RegistryModelDetector, _test_registry

    root = _test_registry()
    x = np.r_[np.full(30, 30.0) + np.random.default_rng(1).standard_normal(30), 400.0]
    served = RegistryModelDetector("conformance", root, check_interval_s=0)
    v = run(served, {"value": x})
    assert v.flag[-1] and v.stats["model_fallback"][-1] == 0.0
    assert served.explain_many({"value": x}, v, np.array([30])) == [[Contribution("value", 1.0, 400.0, pytest.approx(
        served._model.artifact["train"]["mean"][0]))]]  # fmt: skip
    ewz = {"kind": "ew_zscore", "params": {"field": "value", "halflife": 20, "threshold": 3, "min_count": 5}}
    fallback = RegistryModelDetector("absent", root, fields=["value"], fallback=[ewz], check_interval_s=0)
    v = run(fallback, {"value": x})
    [[c]] = fallback.explain_many({"value": x}, v, np.array([30]))
    assert c.feature == "value" and c.score == pytest.approx(v.stats["z_value"][30]) and c.value == 400.0
