"""Self-watch rules on fake runner state with a manual clock: one alert per episode, resolution, gauges.

The last tests run the real embedded runner: self-alerts reach the pipeline's alert sinks.
"""

from __future__ import annotations

import numpy as np
import pytest

from vigil.dataflow.pipeline import Pipeline
from vigil.detectors import VelocityRule
from vigil.engine.runner import EmbeddedRunner
from vigil.errors import ConfigError
from vigil.io.memory import MemorySource
from vigil.io.schema import Schema
from vigil.io.sinks import MemorySink
from vigil.ops.metrics import PipelineMetrics
from vigil.ops.selfwatch import RULES, Sample, SelfWatch, SelfWatchConfig
from vigil.testing.clock import ManualClock


def Clock(t=1_700_000_000.0):  # noqa: N802 - reads like the class it makes
    return ManualClock(t)


def _only(rule: str, **limits) -> SelfWatchConfig:
    """A config with only `rule` on (and nothing quiet)."""
    off = {"stalled_watermark_s": None, "growing_lag_samples": None, "failing_checkpoints": None,
           "dead_letter_fraction": None, "model_fallback": False, "stale_model_max_age_s": None,
           "input_drift_psi": None}
    cfg = {**off, **limits, "quiet": ()}
    w = SelfWatchConfig(**cfg)
    assert w.enabled() == [rule]
    return w


def _run(watch: SelfWatch, clock: Clock, samples: list[Sample], step_s: float = 1.0):
    """Evaluate each sample one step apart; return (firing keys, resolved keys, gauge) after each."""
    out = []
    for s in samples:
        clock.t += step_s
        alerts = watch.evaluate(s)
        out.append(([a.key for a in alerts if a.stats["resolved"] == 0.0],
                    [a.key for a in alerts if a.stats["resolved"] == 1.0], watch.gauges()[watch.rules[0]]))
    return out


def test_stalled_watermark_fires_once_while_events_arrive_and_resolves_when_it_moves():
    clock = Clock()
    w = SelfWatch("p", _only("stalled_watermark", stalled_watermark_s=10), clock=clock)
    # watermark stuck at 5000 while events keep coming
    samples = [Sample(events_in=100 * i, watermark_ms=5000) for i in range(1, 16)]
    res = _run(w, clock, samples)
    fired = [i for i, (f, _, _) in enumerate(res) if f]
    assert fired == [10] and res[10][0] == ["p/stalled_watermark"]  # 10 s after it stopped moving, once
    assert [g for *_, g in res] == [0] * 10 + [1] * 5
    alert = w.active["p/stalled_watermark"][1]
    assert alert.detector == "vigil_self" and alert.severity == "warning" and "idle timeout" in alert.message
    assert alert.score >= 10 and alert.threshold == 10
    res = _run(w, clock, [Sample(events_in=2000, watermark_ms=9000)])
    assert res == [([], ["p/stalled_watermark"], 0)]
    assert w.episodes[0].duration_s == pytest.approx(5.0)


def test_stalled_watermark_is_quiet_when_no_events_arrive():
    clock = Clock()
    w = SelfWatch("p", _only("stalled_watermark", stalled_watermark_s=5), clock=clock)
    res = _run(w, clock, [Sample(events_in=100, watermark_ms=5000)] * 20)  # a quiet stream: nothing to move it
    assert all(not f for f, _, _ in res)
    # events moved the watermark, then the stream went quiet: not a stall either
    w2 = SelfWatch("p", _only("stalled_watermark", stalled_watermark_s=5), clock=clock)
    res = _run(w2, clock, [Sample(events_in=i, watermark_ms=i) for i in range(1, 4)]
               + [Sample(events_in=3, watermark_ms=3)] * 10)
    assert all(not f for f, _, _ in res)


def test_growing_lag_needs_k_increases_above_the_floor_and_has_hysteresis():
    clock = Clock()
    w = SelfWatch("p", _only("growing_lag", growing_lag_samples=3, growing_lag_floor=1000), clock=clock)
    lags = [500, 800, 1200, 1500, 1900, 2500, 2400, 2600, 900, 1100, 1300, 1500]
    res = _run(w, clock, [Sample(lag={"0": n // 2, "1": n - n // 2}) for n in lags])
    firing = [f for f, _, _ in res]
    # fires at 1500 (3 increases: 500→800→1200→1500); a dip to 2400 is still higher than 3 samples before
    assert firing[3] == ["p/growing_lag"] and not any(firing[:3]) and not any(firing[4:8])
    assert [g for *_, g in res][:8] == [0, 0, 0, 1, 1, 1, 1, 1]
    assert res[8][1] == ["p/growing_lag"]  # below the floor: resolved
    assert firing[11] == ["p/growing_lag"]  # a new episode: 900→1100→1300→1500
    assert len(w.episodes) == 2 and w.episodes[0].ended_s is not None
    # a source without lag (not Kafka) never fires
    assert _run(w, clock, [Sample(lag=None)])[0][0] == []


def test_growing_lag_stays_quiet_below_the_floor():
    clock = Clock()
    w = SelfWatch("p", _only("growing_lag", growing_lag_samples=2, growing_lag_floor=10_000), clock=clock)
    res = _run(w, clock, [Sample(lag={"0": n}) for n in range(100, 2000, 100)])
    assert all(not f for f, _, _ in res)


def test_failing_checkpoints_in_a_row():
    clock = Clock()
    w = SelfWatch("p", _only("failing_checkpoints", failing_checkpoints=3), clock=clock)
    res = _run(w, clock, [Sample(checkpoint_failures_in_row=n) for n in (1, 2, 0, 1, 2, 3, 4, 5, 0)])
    assert [f for f, _, _ in res] == [[]] * 5 + [["p/failing_checkpoints"]] + [[]] * 3
    assert res[-1][1] == ["p/failing_checkpoints"] and res[-1][2] == 0
    a = w.episodes[0]
    assert a.rule == "failing_checkpoints" and a.duration_s == pytest.approx(3.0)


def test_dead_letter_rate_over_a_sliding_interval():
    clock = Clock()
    w = SelfWatch("p", _only("dead_letter_rate", dead_letter_fraction=0.1, dead_letter_interval_s=10,
                             dead_letter_min_records=50), clock=clock)
    samples = []
    ev = dl = 0
    for i in range(40):
        ev += 100
        dl += 30 if 10 <= i < 20 else 1  # a bad producer for 10 s: 30 of 130 records unreadable
        samples.append(Sample(events_in=ev, dead_letters=dl))
    res = _run(w, clock, samples)
    firing = [i for i, (f, _, _) in enumerate(res) if f]
    resolved = [i for i, (_, r, _) in enumerate(res) if r]
    assert len(firing) == 1 and 10 <= firing[0] <= 14 and len(resolved) == 1 and 20 < resolved[0] <= 32
    alert_msg = [a for a in w.episodes][0]
    assert alert_msg.rule == "dead_letter_rate"
    # too few records to judge: 1 of 2 is not a rate
    w2 = SelfWatch("p", _only("dead_letter_rate", dead_letter_fraction=0.1), clock=clock)
    assert all(not f for f, _, _ in _run(w2, clock, [Sample(events_in=1, dead_letters=i) for i in range(5)]))


def test_model_fallback_per_step_and_quiet_by_default():
    clock = Clock()
    w = SelfWatch("p", _only("model_fallback", model_fallback=True), clock=clock)
    bad = {"healthy": False, "version": None, "reason": "PROMOTED is missing", "since": 0.0}
    good = {"healthy": True, "version": "v2", "reason": "serving", "since": 0.0}
    res = _run(w, clock, [Sample(model_health={"iso": good, "other": good}),
                          Sample(model_health={"iso": bad, "other": good}),
                          Sample(model_health={"iso": bad, "other": good}),
                          Sample(model_health={"iso": good, "other": good})])
    assert res == [([], [], 0), (["p/model_fallback/iso"], [], 1), ([], [], 1), ([], ["p/model_fallback/iso"], 0)]
    fired = [e for e in w.episodes][0]
    assert fired.key == "p/model_fallback/iso"
    # by default the rule keeps its gauge but sends nothing: the runner raises its own model_health alert
    w2 = SelfWatch("p", clock=clock)
    assert w2.evaluate(Sample(model_health={"iso": bad})) == [] and w2.gauges()["model_fallback"] == 1


def test_stale_model_message_says_to_retrain():
    clock = Clock()
    w = SelfWatch("p", _only("stale_model", stale_model_max_age_s=7 * 86_400), clock=clock)
    res = _run(w, clock, [Sample(model_age_s={"iso": 6 * 86_400.0}), Sample(model_age_s={"iso": 8 * 86_400.0}),
                          Sample(model_age_s={"iso": 9 * 86_400.0}), Sample(model_age_s={"iso": 60.0})])
    assert [f for f, _, _ in res] == [[], ["p/stale_model/iso"], [], []] and res[3][1] == ["p/stale_model/iso"]
    alert = w.evaluate(Sample(model_age_s={"iso": 8 * 86_400.0}))[0]
    assert alert.severity == "info" and "vigil train" in alert.message and "8.0 days" in alert.message


def test_input_drift_per_feature():
    clock = Clock()
    w = SelfWatch("p", _only("input_drift", input_drift_psi=0.25), clock=clock)
    res = _run(w, clock, [Sample(drift={"cpu": 0.05, "mem": 0.02}), Sample(drift={"cpu": 0.4, "mem": 0.3}),
                          Sample(drift={"cpu": 0.5, "mem": 0.1}), Sample(drift={"cpu": 0.1, "mem": 0.1})])
    assert sorted(res[1][0]) == ["p/input_drift/cpu", "p/input_drift/mem"]
    assert res[2] == ([], ["p/input_drift/mem"], 1) and res[3] == ([], ["p/input_drift/cpu"], 0)
    alert = [a for a in w.evaluate(Sample(drift={"cpu": 0.3}))][0]
    assert "PSI 0.30 > 0.25" in alert.message and "retrain" in alert.message


def test_alert_ids_are_distinct_per_episode_and_resolution_can_be_silenced():
    clock = Clock()
    w = SelfWatch("p", _only("failing_checkpoints", failing_checkpoints=1), clock=clock)
    ids = []
    for n in (1, 0, 1, 0):
        clock.t += 1
        ids += [a.id for a in w.evaluate(Sample(checkpoint_failures_in_row=n))]
    assert len(ids) == len(set(ids)) == 4
    quiet = SelfWatch("p", SelfWatchConfig(**{**vars(_only("failing_checkpoints", failing_checkpoints=1)),
                                              "notify_resolved": False}), clock=clock)
    assert len(quiet.evaluate(Sample(checkpoint_failures_in_row=1))) == 1
    clock.t += 1
    assert quiet.evaluate(Sample(checkpoint_failures_in_row=0)) == [] and quiet.episodes[0].ended_s == clock.t


def test_every_rule_on_by_default_and_config_errors_name_the_field():
    assert SelfWatchConfig().enabled() == list(RULES)
    assert set(SelfWatch("p").gauges()) == set(RULES)
    with pytest.raises(ConfigError, match="`stalled_watermark_s` must be a number > 0"):
        SelfWatchConfig(stalled_watermark_s=0)
    with pytest.raises(ConfigError, match="`dead_letter_fraction`"):
        SelfWatchConfig(dead_letter_fraction=1.5)
    with pytest.raises(ConfigError, match="`quiet` names no self-watch rule; got 'nope'"):
        SelfWatchConfig(quiet=("nope",))
    with pytest.raises(ConfigError, match="`stale_model_max_days` is not a self-watch setting"):
        SelfWatchConfig.from_dict({"stale_model_max_days": 3})
    assert SelfWatchConfig.from_dict({"failing_checkpoints": None}).enabled() == [
        r for r in RULES if r != "failing_checkpoints"]


# ---- through the runner --------------------------------------------------------------------------------


def test_self_alerts_reach_the_alert_sinks_through_the_runner(tmp_path):
    """A producer that sends garbage: the dead-letter rule fires and its alert goes to the alert sink."""
    rows = []
    for i in range(3000):
        bad = i % 3 == 0  # a third of the records are unreadable
        rows.append({"user": f"u{i % 7}", "ts": 1_700_000_000_000 + i * 10, "amount": "n/a" if bad else 1.0})
    schema = Schema(key="user", time="ts", fields=("amount",))
    alerts = MemorySink()
    p = (Pipeline("garbage").source(MemorySource(rows, batch_size=100, schema=schema))
         .detect("burst", VelocityRule(window="60s", max_count=10_000)).alerts_to(alerts))
    runner = EmbeddedRunner(p, out_dir=str(tmp_path))
    cfg = SelfWatchConfig(dead_letter_fraction=0.2, dead_letter_min_records=100)
    m = PipelineMetrics(runner, selfwatch=cfg, interval_s=0.0)  # evaluate at every batch
    st = runner.run()
    assert st.dead_letters == 1000
    own = [a for a in alerts.items if a.detector == "vigil_self"]
    assert [a.key for a in own] == ["garbage/dead_letter_rate"], [a.key for a in own]
    assert own[0].severity == "warning" and "dead-letter output" in own[0].message
    assert m.selfwatch is not None and m.selfwatch.gauges()["dead_letter_rate"] == 1
    assert st.alerts == 0  # self-alerts are not counted as the pipeline's detections


def test_without_metrics_the_runner_raises_no_self_alerts(tmp_path):
    rows = [{"user": "u", "ts": 1_700_000_000_000 + i, "amount": "bad"} for i in range(500)]
    alerts = MemorySink()
    p = (Pipeline("plain").source(MemorySource(rows, schema=Schema(key="user", time="ts", fields=("amount",))))
         .detect("burst", VelocityRule()).alerts_to(alerts))
    runner = EmbeddedRunner(p, out_dir=str(tmp_path))
    assert runner.metrics is None
    st = runner.run()
    assert st.dead_letters == 500 and alerts.items == []
    assert np.isfinite(st.elapsed_s)


def test_a_failing_self_watch_never_stops_the_pipeline(tmp_path, caplog):
    rows = [{"user": "u", "ts": 1_700_000_000_000 + i, "amount": 1.0} for i in range(300)]
    p = (Pipeline("sturdy").source(MemorySource(rows, batch_size=50, schema=Schema(key="user", time="ts",
                                                                                  fields=("amount",))))
         .detect("burst", VelocityRule()).alerts_to(MemorySink()))
    runner = EmbeddedRunner(p, out_dir=str(tmp_path))
    m = PipelineMetrics(runner, interval_s=0.0)

    def broken(sample):
        raise RuntimeError("a bug in a rule")

    m.selfwatch.evaluate = broken
    st = runner.run()
    assert st.events == 300 and "self-monitoring failed" in caplog.text
