"""Model-backed and rule detectors: Isolation Forest (ONNX), threshold / expression rules, ensembles."""

import math

import numpy as np
import pytest

from vigil.cli.bench_detectors import roc_auc
from vigil.detectors import Ensemble, EWZScore, ExpressionRule, ThresholdRule, VelocityRule
from vigil.detectors.rules import UnsafeExpression, compile_expression

pytest.importorskip("onnxruntime")
pytest.importorskip("skl2onnx")
from sklearn.ensemble import IsolationForest  # noqa: E402

from vigil.detectors.iforest import IsolationForestDetector, fit_isolation_forest, load_model, save_model  # noqa: E402

FIELDS = ["amount", "log_amount", "gap_s"]


def three_field_rows(n, rng):
    amount = rng.lognormal(3.0, 0.5, n)
    return np.column_stack([amount, np.log1p(amount) + 0.05 * rng.standard_normal(n), rng.exponential(30.0, n)])


@pytest.fixture(scope="module")
def forest():
    rng = np.random.default_rng(11)
    X = three_field_rows(3000, rng)
    return X, fit_isolation_forest(X, FIELDS, n_estimators=50, seed=3)


def test_artifact_round_trip(forest, tmp_path):
    X, art = forest
    path = str(tmp_path / "if.vigil")
    save_model(art, path)
    back = load_model(path)
    assert back == art
    rows = {f: X[:200, j] for j, f in enumerate(FIELDS)}
    a = IsolationForestDetector(art).process_many(np.zeros(200, np.int32), np.arange(200), rows)
    b = IsolationForestDetector(path).process_many(np.zeros(200, np.int32), np.arange(200), rows)
    assert np.array_equal(a.score, b.score) and np.array_equal(a.calibrated, b.calibrated)
    assert art["train"]["n_rows"] == 3000 and np.allclose(art["train"]["mean"], X.mean(axis=0))


def test_corrupt_or_foreign_artifact_is_refused(forest, tmp_path):
    _, art = forest
    with pytest.raises(ValueError, match="sha256"):
        IsolationForestDetector({**art, "onnx": art["onnx"][:-1] + b"x"})
    with pytest.raises(ValueError, match="not a vigil.iforest artifact"):
        IsolationForestDetector({"format": "other"})


def test_onnx_scores_equal_sklearn_score_samples(forest):
    X, art = forest
    model = IsolationForest(n_estimators=50, random_state=3, n_jobs=1).fit(X.astype(np.float32))
    Y = three_field_rows(2000, np.random.default_rng(12)) * np.random.default_rng(13).uniform(0.3, 3.0, (2000, 3))
    det = IsolationForestDetector(art, batch_size=333)
    v = det.process_many(np.zeros(2000, np.int32), np.arange(2000), {f: Y[:, j] for j, f in enumerate(FIELDS)})
    ref = -model.score_samples(Y.astype(np.float32))
    np.testing.assert_allclose(v.score, ref, rtol=0, atol=2e-6)
    assert np.all(np.diff(v.calibrated[np.argsort(v.score)]) >= 0), "calibration is monotone in the score"


def test_flags_injected_outliers_in_three_field_stream(forest):
    _, art = forest
    rng = np.random.default_rng(21)
    n = 5000
    Y = three_field_rows(n, rng)
    y = np.zeros(n, np.int8)
    idx = rng.choice(n, 50, replace=False)
    Y[idx[:25], 0] *= 15.0  # huge amounts (log_amount not updated: an inconsistent pair)
    Y[idx[25:], 2] = rng.uniform(400, 900, 25)  # long silences
    y[idx] = 1
    det = IsolationForestDetector(art, threshold=0.97)
    v = det.process_many(
        rng.integers(0, 50, n).astype(np.int32), np.arange(n), {f: Y[:, j] for j, f in enumerate(FIELDS)}
    )
    assert roc_auc(v.score, y) > 0.9
    # one odd feature among typical ones isolates only moderately (IF is axis-aligned): calibrated ~0.97-0.995
    assert v.flag[idx].mean() > 0.9 and v.flag[y == 0].mean() < 0.04


def test_missing_values_impute_or_skip(forest):
    _, art = forest
    det = IsolationForestDetector(art)
    cols = {
        "amount": np.array([20.0, np.nan, np.nan]),
        "log_amount": np.array([3.0, 3.0, np.nan]),
        "gap_s": np.array([30.0, np.nan, np.nan]),
    }
    v = det.process_many(np.zeros(3, np.int32), np.arange(3), cols)
    assert v.ready.tolist() == [True, True, False]
    assert v.stats["imputed"].tolist() == [0.0, 2.0, 0.0]
    assert math.isnan(v.stats["z_amount"][1]) and v.score[2] == 0.0
    assert "amount" in det.describe({k: c[0] for k, c in v.stats.items()} | {"calibrated": 0.5})


def test_incompatible_fields_fail_at_construction(forest):
    _, art = forest
    with pytest.raises(ValueError, match=r"missing \['gap_s'\]"):
        IsolationForestDetector(art, fields=["amount", "log_amount"])
    with pytest.raises(ValueError, match=r"unknown \['colour'\]"):
        IsolationForestDetector(art, fields=["amount", "log_amount", "gap_s", "colour"])
    det = IsolationForestDetector(art, fields=["gap_s", "amount", "log_amount"])  # any order: fed in model order
    assert det.fields == tuple(FIELDS)
    with pytest.raises(ValueError, match="lacks the model's fields"):
        det.process_many(np.zeros(1, np.int32), np.zeros(1, np.int64), {"amount": np.ones(1)})


# ---- rules --------------------------------------------------------------------------------------------------

EXPRS = [
    "amount > 1000 and amount / 100 > 3",
    "-a ** 2 + b // 3 % 2 >= -4",
    "0 < a < 5 or not b > 1",
    "max(a, b, 3) - min(a, b) > abs(a - b)",
    "sqrt(abs(a)) + log(b + 10) > 2.5",
    "a * 2 != b and (a >= 1 or b <= 2) and 1e3 > a",
]


@pytest.mark.parametrize("expr", EXPRS)
def test_expressions_evaluate_like_python(expr):
    rng = np.random.default_rng(4)
    a = np.round(rng.uniform(-6, 8, 300), 1)
    b = np.round(rng.uniform(1, 9, 300), 1)
    amount = rng.uniform(0, 3000, 300)
    fn, names = compile_expression(expr)
    got = fn({"a": a, "b": b, "amount": amount}) != 0
    env = {"abs": abs, "min": min, "max": max, "log": math.log, "sqrt": math.sqrt, "__builtins__": {}}
    want = [bool(eval(expr, env, {"a": a[i], "b": b[i], "amount": amount[i]})) for i in range(300)]  # reference
    assert got.tolist() == want
    rule = ExpressionRule(expr=expr)
    v = rule.process_many(np.zeros(300, np.int32), np.arange(300), {"a": a, "b": b, "amount": amount})
    assert v.flag.tolist() == want and set(rule.fields) == set(names)
    assert np.array_equal(v.score, np.asarray(want, float))


@pytest.mark.parametrize(("expr", "node"), [
    ("__import__('os')", "Call"),
    ("__import__('os').system('ls')", "Call"),
    ("amount.real > 1", "Attribute"),
    ("(lambda: 1)() > 0", "Call"),
    ("lambda x: x", "Lambda"),
    ("amount[0] > 1", "Subscript"),
    ("amount > 'x'", "Constant"),
    ("open('f') or 1", "Call"),
    ("max(amount, b, key=abs) > 1", "Call"),
    ("a if b else amount", "IfExp"),
    ("[a, b]", "List"),
    ("(a := 3) > 1", "NamedExpr"),
    ("abs > 1", "Name"),
    ("True and a", "Constant"),
    ("a in b", "Compare"),
])  # fmt: skip
def test_unsafe_expressions_are_rejected(expr, node):
    with pytest.raises(UnsafeExpression, match=rf"`expr`: {node} .* is not allowed"):
        ExpressionRule(expr=expr)


def test_expression_rule_bad_syntax_and_fields():
    with pytest.raises(ValueError, match="not a valid expression"):
        ExpressionRule(expr="a >")
    with pytest.raises(ValueError, match=r"missing \['b'\]"):
        ExpressionRule(expr="a > b", fields=["a"])
    rule = ExpressionRule(expr="a > 1", fields=["a", "b"])  # extra fields: rows missing them are not judged
    v = rule.process_many(np.zeros(2, np.int32), np.arange(2), {"a": np.array([2.0, 2.0]), "b": np.array([0, np.nan])})
    assert v.flag.tolist() == [True, False] and v.ready.tolist() == [True, False]


def test_threshold_rule_scores_relative_excess():
    rule = ThresholdRule(field="x", above=100.0, below=-10.0)
    v = rule.process_many(np.zeros(5, np.int32), np.arange(5), {"x": np.array([0, 150, -30, np.nan, np.inf])})
    assert v.flag.tolist() == [False, True, True, False, True]
    assert v.score[:3].tolist() == [0.0, 0.5, 2.0] and np.isfinite(v.score).all()
    assert (v.calibrated[v.flag] > 0.99).all() and v.calibrated[0] == 0.0
    assert rule.describe({"value": 150.0}) == "x 150 is above the limit 100"
    with pytest.raises(ValueError, match="`below` must be <= `above`"):
        ThresholdRule(field="x", above=1, below=2)


# ---- ensembles ----------------------------------------------------------------------------------------------

Z = {"name": "z", "kind": "ew_zscore", "params": {"field": "amount", "halflife": 50, "threshold": 4, "min_count": 10}}
CAP = {"name": "cap", "kind": "threshold_rule", "params": {"field": "amount", "above": 150.0}}
VEL = {"name": "vel", "kind": "velocity", "params": {"window": "60s", "max_count": 8}}


def keyed_stream(n=20_000, keys=20, seed=9):
    """Per-key amounts with 0.4 % value spikes (x5) and three bursts of 15 events in 10 s for one key each."""
    rng = np.random.default_rng(seed)
    slots = rng.integers(0, keys, n).astype(np.int32)
    gaps = rng.exponential(1500.0, n)  # ~1.5 s apart: a key every ~30 s
    amount = (20.0 + 3.0 * slots) * np.exp(0.1 * rng.standard_normal(n))
    spike = np.zeros(n, bool)
    spike[rng.choice(np.arange(2000, n), n // 250, replace=False)] = True
    amount[spike] *= 5.0
    burst_rows = []
    for at, key in ((n * 3 // 10, 3), (n * 6 // 10, 7), (n * 9 // 10, 11)):
        slots[at : at + 15] = key
        gaps[at + 1 : at + 15] = 600.0
        spike[at : at + 15] = False
        amount[at : at + 15] = 20.0 + 3.0 * key
        burst_rows.append(np.arange(at, at + 15))
    ts = np.cumsum(gaps).astype(np.int64)
    return slots, ts, {"amount": amount}, spike, burst_rows


def test_members_contributions_are_visible_and_equal_standalone_runs():
    slots, ts, X, *_ = keyed_stream(n=3000)
    ens = Ensemble([Z, CAP], combine="max")
    v = ens.process_many(slots, ts, X)
    z = EWZScore(**Z["params"]).process_many(slots, ts, X)
    cap = ThresholdRule(**CAP["params"]).process_many(slots, ts, X)
    assert np.array_equal(v.stats["member_z"], np.where(z.ready, z.calibrated, 0.0))
    assert np.array_equal(v.stats["member_cap"], cap.calibrated)
    assert np.array_equal(v.stats["z.z"], z.stats["z"]) and "cap.value" in v.stats
    assert v.ready.all()  # the rule is always ready: any ready member makes the row ready
    top = int(np.argmax(v.score))
    assert ens.describe({k: c[top] for k, c in v.stats.items()}).startswith("ensemble (max: z ")


def test_max_mean_rank_combinations():
    slots, ts, X, *_ = keyed_stream(n=3000)
    z = EWZScore(**Z["params"]).process_many(slots, ts, X)
    cap = ThresholdRule(**CAP["params"]).process_many(slots, ts, X)
    cz, cc = np.where(z.ready, z.calibrated, 0.0), cap.calibrated
    vmax = Ensemble([Z, CAP], combine="max").process_many(slots, ts, X)
    assert np.array_equal(vmax.score, np.maximum(cz, cc))
    vmean = Ensemble([Z, CAP], combine="mean").process_many(slots, ts, X)
    want = np.where(z.ready, (cz + cc) / 2, cc)  # a member that is not ready does not vote
    np.testing.assert_allclose(vmean.score, want, rtol=0, atol=1e-15)
    assert np.array_equal(vmax.flag, vmax.score >= 0.999)
    # rank: each member's mid-rank percentile among its last `rank_window` ready calibrated scores; then max
    W, H = 100, 10
    vrank = Ensemble([Z, CAP], combine="rank", rank_window=W, rank_min_history=H, threshold=0.99).process_many(
        slots, ts, X
    )
    for name, cal, ready in (("z", cz, z.ready), ("cap", cc, cap.ready)):
        hist, ref = [], np.zeros(len(cal))
        for i in np.flatnonzero(ready):
            h = np.array(hist[-W:])
            if len(h) >= H:
                ref[i] = ((h < cal[i]).sum() + 0.5 * (h == cal[i]).sum()) / len(h)
            hist.append(cal[i])
        np.testing.assert_allclose(vrank.stats[f"rank_{name}"], ref, rtol=0, atol=1e-12)
    assert np.array_equal(vrank.score, np.maximum(vrank.stats["rank_z"], vrank.stats["rank_cap"]))
    with pytest.raises(ValueError, match="names must be unique"):
        Ensemble([Z, Z])
    with pytest.raises(ValueError, match=r"`members\[1\].kind` must be a registered detector"):
        Ensemble([Z, {"name": "x", "kind": "nope"}])
    with pytest.raises(ValueError, match=r"`members\[0\]` \(z, ew_zscore\)"):
        Ensemble([{**Z, "params": {"field": "amount", "threshold": -1}}])


def test_zscore_plus_velocity_ensemble_detects_both_kinds():
    slots, ts, X, spike, bursts = keyed_stream()
    ens = Ensemble([Z, VEL], combine="rank", threshold=0.995, rank_window=2000)
    v = ens.process_many(slots, ts, X)
    assert v.flag[spike].mean() > 0.9, "value spikes missed"
    for rows in bursts:
        assert v.fire[rows].sum() == 1, "a burst fires exactly once"
    # each member alone misses the other kind
    z = EWZScore(**Z["params"]).process_many(slots, ts, X)
    vel = VelocityRule(**VEL["params"]).process_many(slots, ts, X)
    assert not any(z.flag[r].any() for r in bursts) and vel.flag[spike].mean() < 0.05
    normal = ~spike
    for rows in bursts:
        normal[rows] = False
    assert v.flag[normal].mean() < 0.01
