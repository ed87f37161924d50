"""Detector behaviour a user relies on, beyond the conformance suite."""

import numpy as np

from vigil.detectors import SlidingZScore, VelocityRule


def test_infinite_input_is_ignored_not_poisoning_the_baseline():
    det = SlidingZScore(field="v", window="10s", min_count=5, baseline_halflife=20)
    n = 40
    v = 10 + np.sin(np.arange(n))
    v[20] = np.inf
    v[30] = 100.0
    out = det.process_many(np.zeros(n, np.int32), np.arange(n) * 1000, {"v": v})
    assert not out.ready[20] and out.score[20] == 0
    assert out.flag[30] and np.isfinite(out.score).all()


def test_window_falls_back_to_baseline_when_too_few_events():
    det = SlidingZScore(field="v", window="60s", min_count=10, baseline_halflife=50, min_baseline=5)
    ts = np.arange(12) * 3_600_000  # one event an hour: the 1-minute window is always empty
    v = np.array([10, 11, 9, 10, 11, 9, 10, 11, 9, 10, 11, 60.0])
    out = det.process_many(np.zeros(12, np.int32), ts, {"v": v})
    assert (out.stats["basis"][5:] == 2).all() and out.flag[-1] and not out.flag[:-1].any()
    assert "long baseline" in det.describe({k: c[-1] for k, c in out.stats.items()})


def test_velocity_fires_once_per_burst_and_again_after_calm():
    rule = VelocityRule(window="60s", max_count=3)
    ts = np.array([0, 1000, 2000, 3000, 4000, 5000, 200_000, 201_000, 202_000, 203_000])
    out = rule.process_many(np.zeros(len(ts), np.int32), ts, {})
    assert out.fire.tolist() == [False, False, False, True, False, False, False, False, False, True]
    assert out.flag.sum() == 4
