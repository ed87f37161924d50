"""LevelRarity, the NAB detector (bundled config ``nab.yaml``): conformance, causality, determinism, NAB score."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from vigil.config.detector import bundled_config, load_detector_config
from vigil.detectors import LevelRarity, registry
from vigil.testing.detectors import check_detector, check_quality_floor, yield_checks

NAB = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "nab"
SCORER = Path(__file__).resolve().parents[3] / "shared" / "bench" / "nab" / "nab_score.py"
needs_nab = pytest.mark.skipif(not (NAB / "labels" / "combined_windows.json").is_file(), reason="NAB data absent")


def nab_factory():
    factory, _ = load_detector_config(bundled_config("nab"))
    return factory


def read_nab(name: str) -> tuple[np.ndarray, np.ndarray]:
    """(ts_ms, value) of one NAB file, event times made non-decreasing as `vigil bench nab` does."""
    raw = np.genfromtxt(NAB / "data" / name, delimiter=",", skip_header=1, dtype=str)
    ts = np.array(raw[:, 0], dtype="datetime64[ms]").astype(np.int64)
    return np.maximum.accumulate(ts), raw[:, 1].astype(np.float64)


def run(det, ts: np.ndarray, x: np.ndarray):
    return det.process_many(np.zeros(len(x), np.int32), ts, {"value": x})


def test_registered_and_bundled_config_uses_it():
    assert registry()["level_rarity"] is LevelRarity
    factory = nab_factory()
    assert factory.kind == "level_rarity"
    assert isinstance(factory(), LevelRarity)


@pytest.mark.parametrize("params", LevelRarity._test_params())
def test_conformance(params):
    """The shared conformance suite (also run by tests/test_conformance.py over ``_test_params()``)."""
    check_detector(lambda: LevelRarity(**params))


def test_conformance_with_the_nab_params():
    """Every conformance check but the quality floor with the bundled NAB params (shorter warm-up).

    The quality floor ranks single-row spikes by their own row's score; with 6- and 2-row blocks most spike rows
    end no block and score 0, by design (the NAB windows are hundreds of rows wide).
    """
    p = {**nab_factory().params, "warmup": 20, "suppress": 3}
    for check in yield_checks(LevelRarity(**p)):
        if check is not check_quality_floor:
            check(lambda: LevelRarity(**p))


def test_calibrated_is_increasing_and_unsaturated():
    rng = np.random.default_rng(3)
    x = np.r_[10 + rng.standard_normal(2000), 10 + 50 * rng.standard_normal(200)]
    v = run(nab_factory()(), np.arange(len(x), dtype=np.int64) * 300_000, x)
    order = np.argsort(v.score, kind="stable")
    assert np.all(np.diff(v.calibrated[order]) >= 0)
    assert v.calibrated.max() < 1.0 and np.all(v.calibrated[v.score > 0] > 0)
    assert not v.ready[:150].any() and v.ready[150:].all()
    assert np.array_equal(v.flag, v.ready & (v.score >= nab_factory()().threshold))


@needs_nab
@pytest.mark.parametrize("name", ["realKnownCause/nyc_taxi.csv", "realTweets/Twitter_volume_AAPL.csv"])
def test_causal_on_nab_prefixes(name):
    """Scoring a prefix gives exactly the head of the full run (no look at the file's future or length)."""
    ts, x = read_nab(name)
    full = run(nab_factory()(), ts, x)
    for k in (1, 151, 1000, len(x) // 2):
        head = run(nab_factory()(), ts[:k], x[:k])
        for attr in ("score", "calibrated", "flag", "ready"):
            assert np.array_equal(getattr(head, attr), getattr(full, attr)[:k]), (name, k, attr)


@needs_nab
def test_deterministic_and_batching_invariant_on_nab():
    ts, x = read_nab("realKnownCause/machine_temperature_system_failure.csv")
    a = run(nab_factory()(), ts, x)
    b = run(nab_factory()(), ts, x)
    assert np.array_equal(a.score, b.score) and np.array_equal(a.calibrated, b.calibrated)
    det = nab_factory()()
    parts = [det.process_many(np.zeros(j - i, np.int32), ts[i:j], {"value": x[i:j]})
             for i, j in zip(range(0, len(x), 997), [*range(997, len(x), 997), len(x)])]  # fmt: skip
    assert np.array_equal(np.concatenate([p.score for p in parts]), a.score)


@needs_nab
@pytest.mark.skipif(not SCORER.is_file(), reason="NAB scorer absent")
def test_nab_score_regression():
    """The bundled config on all 58 files (about 5 s): the scores reported in nab.yaml, to 0.01."""
    spec = importlib.util.spec_from_file_location("nab_score", SCORER)
    nab = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(nab)
    corpus = nab.load_corpus(str(NAB / "data"), str(NAB / "labels" / "combined_windows.json"))
    factory = nab_factory()
    scores = {}
    for name, df in corpus.items():
        ts = np.maximum.accumulate(df.timestamps.astype("datetime64[ms]").astype(np.int64))
        scores[name] = run(factory(), ts, df.values).calibrated
    res = nab.score(scores, corpus)
    got = [round(res[p]["score"], 2) for p in ("standard", "reward_low_FP_rate", "reward_low_FN_rate")]
    assert got == pytest.approx(EXPECTED, abs=0.011)


EXPECTED = [75.72, 67.22, 80.65]  # standard, reward_low_FP_rate, reward_low_FN_rate (as in nab.yaml)
