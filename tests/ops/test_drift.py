"""PSI drift monitoring: bins from training, stable vs shifted inputs, the ring buffer, the training metadata."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vigil.errors import ConfigError
from vigil.models.registry import ModelRegistry
from vigil.models.training import train_isolation_forest
from vigil.ops.drift import DEFAULT_PSI_THRESHOLD, DriftMonitor, bin_fractions, psi, quantile_bins


def _stats(**cols):
    out = {}
    for name, values in cols.items():
        edges, fractions = quantile_bins(values)
        out[name] = {"bin_edges": edges, "bin_fractions": fractions}
    return out


def test_same_distribution_is_stable_and_a_shift_is_significant():
    rng = np.random.default_rng(1)
    stats = _stats(a=rng.normal(50, 5, 20_000), b=rng.exponential(2.0, 20_000))
    mon = DriftMonitor(stats, window=5000)
    mon.update({"a": rng.normal(50, 5, 5000), "b": rng.exponential(2.0, 5000)})
    same = mon.scores()
    assert same["a"] < 0.02 and same["b"] < 0.02, same
    mon.update({"a": rng.normal(56, 5, 5000), "b": rng.exponential(2.0, 5000)})  # a moves by 1.2 sd
    moved = mon.scores()
    assert moved["a"] > DEFAULT_PSI_THRESHOLD and moved["b"] < 0.02, moved
    mon.update({"a": rng.normal(50, 15, 5000)})  # same mean, triple spread: also drift
    assert mon.scores()["a"] > DEFAULT_PSI_THRESHOLD


def test_bins_round_trip_through_json():
    rng = np.random.default_rng(2)
    x = rng.lognormal(0, 1, 10_000)
    edges, fractions = quantile_bins(x, bins=10)
    assert len(edges) == 11 and len(fractions) == 10
    assert edges[0] == x.min() and edges[-1] == x.max() and edges == sorted(edges)
    assert np.allclose(fractions, 0.1, atol=0.001) and abs(sum(fractions) - 1) < 1e-9
    back = json.loads(json.dumps({"x": {"bin_edges": edges, "bin_fractions": fractions}}))
    assert np.allclose(bin_fractions(x, back["x"]["bin_edges"]), fractions)  # same rule at training and serving
    mon = DriftMonitor(back, window=len(x), min_samples=1)
    mon.update({"x": x})
    assert mon.scores()["x"] == pytest.approx(0.0, abs=1e-12)


def test_values_outside_the_training_range_land_in_the_outer_bins():
    edges, fractions = quantile_bins(np.arange(100.0), bins=4)
    assert bin_fractions(np.array([-1e9, 1e9, 50.0, 60.0, np.nan, np.inf]), edges).tolist() == [0.25, 0.0, 0.5, 0.25]
    mon = DriftMonitor({"x": {"bin_edges": edges, "bin_fractions": fractions}}, window=100, min_samples=10)
    mon.update({"x": np.full(100, 1e6)})  # everything above the training max: all in the last bin
    assert mon.scores()["x"] > 1.0 and np.isfinite(mon.scores()["x"])


def test_ring_keeps_the_last_window_values_and_waits_for_min_samples():
    stats = _stats(x=np.arange(1000.0))
    mon = DriftMonitor(stats, window=100, min_samples=50)
    mon.update({"x": np.arange(30.0)})
    assert mon.scores() == {} and mon.counts() == {"x": 30}
    mon.update({"x": np.array([np.nan] * 10)})  # non-finite values are not kept
    assert mon.counts() == {"x": 30}
    for start in range(0, 1000, 70):  # wraps around several times
        mon.update({"x": np.arange(start, start + 70, dtype=float) % 1000})
    assert mon.counts() == {"x": 100}
    assert sorted(mon._rings["x"].values().tolist()) == sorted(float(v % 1000) for v in range(950, 1050))
    mon.update({"other": np.ones(5)})  # columns it does not monitor are ignored
    assert mon.features == ["x"]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 200), min_size=1, max_size=400), st.integers(1, 130))
def test_ring_equals_the_tail_of_everything_added(chunks_seed, window):
    rng = np.random.default_rng(len(chunks_seed))
    mon = DriftMonitor(_stats(x=np.arange(10.0)), window=window, min_samples=1)
    seen: list[float] = []
    for n in chunks_seed[:20]:
        chunk = rng.normal(size=n)
        mon.update({"x": chunk})
        seen += chunk.tolist()
    assert sorted(mon._rings["x"].values().tolist()) == sorted(seen[-window:])


def test_psi_is_symmetric_in_its_reading_and_zero_only_for_equal_shares():
    assert psi([0.25] * 4, [0.25] * 4) == 0.0
    assert psi([0.1, 0.9], [0.9, 0.1]) == pytest.approx(psi([0.9, 0.1], [0.1, 0.9]))
    assert 0.1 < psi([0.5, 0.5], [0.7, 0.3]) < 0.25  # the "moderate" band
    assert np.isfinite(psi([0.5, 0.5, 0.0], [0.0, 0.5, 0.5]))  # empty bins are floored


def test_models_without_bins_are_not_monitored_and_bad_stats_name_the_field():
    assert DriftMonitor({"a": {"mean": 1.0, "std": 2.0}}).features == []
    with pytest.raises(ConfigError, match="training_stats.a"):
        DriftMonitor({"a": {"bin_edges": [0, 1, 2], "bin_fractions": [1.0]}})
    with pytest.raises(ConfigError, match="`window`"):
        DriftMonitor({}, window=0)
    with pytest.raises(ConfigError, match="`min_samples`"):
        DriftMonitor({}, window=10, min_samples=11)
    assert quantile_bins(np.array([np.nan])) == ([], [])
    assert quantile_bins(np.full(10, 3.0)) == ([3.0, 3.0], [1.0])


def test_training_stores_bins_in_the_model_metadata(tmp_path):
    rng = np.random.default_rng(3)
    cols = {"ts": np.arange(2000) * 1000 + 1_700_000_000_000, "cpu": rng.normal(40, 8, 2000),
            "mem": rng.uniform(0, 100, 2000)}
    version, _ = train_isolation_forest(cols, features=["cpu", "mem"], name="srv", registry_root=tmp_path,
                                        n_estimators=10, time_column="ts")
    meta = ModelRegistry(tmp_path).meta("srv", version)  # read back from meta.json
    ts = meta["training_stats"]
    assert set(ts["cpu"]) >= {"mean", "std", "min", "max", "bin_edges", "bin_fractions"}
    assert len(ts["cpu"]["bin_edges"]) == 11 and ts["cpu"]["bin_edges"][0] == ts["cpu"]["min"]
    fit = cols["cpu"][: meta["n_rows"]]  # bins are of the rows the model was fitted on (not the holdout)
    assert np.allclose(bin_fractions(fit, ts["cpu"]["bin_edges"]), ts["cpu"]["bin_fractions"])
    mon = DriftMonitor(ts, window=2000)
    mon.update({"cpu": rng.normal(40, 8, 2000), "mem": rng.uniform(0, 100, 2000)})
    assert max(mon.scores().values()) < 0.05
    mon.update({"cpu": rng.normal(70, 8, 2000)})
    assert mon.scores()["cpu"] > DEFAULT_PSI_THRESHOLD and mon.scores()["mem"] < 0.05
