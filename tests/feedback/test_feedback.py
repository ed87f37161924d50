"""Feedback loop: learned suppression (bounds, reversibility, TP protection, k-of-n recount), retraining, demo."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vigil.apps.servers.retrain import WindowRows, retrain
from vigil.feedback import FeedbackTuner, Label, Suppressions, labels_from_store
from vigil.feedback.suppression import DAY_MS
from vigil.types import Alert, Contribution

BASE = {"k_of_n": {"cpu": 4.0, "mem": 4.0, "disk_io": 4.0, "net_out": 6.0}}


def kofn(key: str, z: dict[str, float], *, ts: int = 1_000, k: int = 2, model_vote: bool = False,
         base: dict[str, float] | None = None) -> Alert:  # fmt: skip
    """A k_of_n alert as the server pipeline makes it: a metric flags when |z| is beyond its base bar."""
    bars = base or BASE["k_of_n"]
    metrics = {m: {"value": 1.0, "z": z.get(m, 0.0), "calibrated": 0.5, "flag": abs(z.get(m, 0.0)) > bars[m],
                   "missing": False} for m in bars}  # fmt: skip
    votes = sum(v["flag"] for v in metrics.values()) + int(model_vote)
    stats = {"window_start_ms": ts - 60_000, "window_end_ms": ts, "k": k, "n": len(bars) + 1, "votes": votes,
             "metrics": metrics, "model_score": 0.5, "model_calibrated": 0.5}  # fmt: skip
    contributions = [Contribution(m, v["z"], v["value"], flag=v["flag"]) for m, v in metrics.items()]
    return Alert(f"{key}@{ts}", key, str(ts), "k_of_n", float(votes), float(k), ts, ts, stats=stats,
                 contributions=contributions)


def fp(alert: Alert, at: int | None = None, id: str = "") -> Label:
    return Label(alert, "false_positive", at_ms=alert.event_ts_ms if at is None else at, by="ana", id=id)


def tp(alert: Alert) -> Label:
    return Label(alert, "true_positive", at_ms=alert.event_ts_ms, by="ana")


@pytest.fixture
def tuner(tmp_path):
    return FeedbackTuner(tmp_path / "sup", base=BASE, max_factor=2.0, headroom=1.2, ttl_ms=DAY_MS)


# ---- bounds -----------------------------------------------------------------------------------------------------


def test_bar_is_just_above_the_labelled_score_and_capped_at_the_factor(tuner):
    s = tuner.learn([fp(kofn("h1", {"cpu": 5.0, "disk_io": 11.0}))], who="ana", why="backup")
    cpu, dio = s.entries[("k_of_n", "h1", "cpu")], s.entries[("k_of_n", "h1", "disk_io")]
    assert cpu.bar == pytest.approx(6.0) and not cpu.capped  # 1.2 x 5
    assert dio.bar == pytest.approx(8.0) and dio.capped and dio.factor == pytest.approx(2.0)  # not 13.2
    assert ("k_of_n", "h1", "mem") not in s.entries  # did not vote: nothing learned


def test_single_detector_alert_uses_its_own_threshold_as_base(tuner):
    a = Alert("a1", "u1", "e1", "amount_z", 30.0, 5.0, 1_000, 1_000)
    s = tuner.learn([fp(a)], who="ana")
    assert s.bar("amount_z", "u1", "", at_ms=2_000) == pytest.approx(10.0)


def test_a_false_positive_below_the_base_teaches_nothing(tuner):
    a = Alert("a1", "u1", "e1", "amount_z", 2.0, 5.0, 1_000, 1_000)  # e.g. a rule-fired alert with a low score
    assert len(tuner.learn([fp(a)], who="ana")) == 0


def test_at_most_max_entries_most_labelled_first(tmp_path):
    t = FeedbackTuner(tmp_path, base=BASE, max_entries=2)
    labels = [fp(kofn("h1", {"cpu": 5.0}), id="1"), fp(kofn("h1", {"cpu": 5.5}, ts=2_000), id="2"),
              fp(kofn("h2", {"cpu": 5.0}), id="3"), fp(kofn("h3", {"cpu": 5.0}), id="4")]  # fmt: skip
    s = t.learn(labels, who="ana")
    assert len(s) == 2 and ("k_of_n", "h1", "cpu") in s.entries
    assert s.entries[("k_of_n", "h1", "cpu")].n_labels == 2
    assert sum("over max_entries" in c for c in t.entries()[-1]["changes"]) == 1


def test_adjustments_expire_after_the_ttl_unless_reconfirmed(tuner):
    s = tuner.learn([fp(kofn("h1", {"cpu": 5.0, "mem": 5.0}), at=0)], who="ana")
    job = kofn("h1", {"cpu": 5.5, "mem": 5.5}, ts=DAY_MS // 2)
    assert len(s.filter([job])[1]) == 1
    later = kofn("h1", {"cpu": 5.5, "mem": 5.5}, ts=DAY_MS + 1)
    assert s.filter([later])[1] == []  # expired: the alert stands
    # a new label on h1's cpu re-confirms that adjustment; mem's expires at the next learn
    s2 = tuner.learn([fp(kofn("h1", {"cpu": 5.0}, ts=DAY_MS - 10), at=DAY_MS - 10)], who="ana", now_ms=DAY_MS + 5)
    assert s2.entries[("k_of_n", "h1", "cpu")].expires_ms == 2 * DAY_MS - 10
    assert ("k_of_n", "h1", "mem") not in s2.entries
    assert any(c.startswith("- expired") for c in tuner.entries()[-1]["changes"])


def test_bounds_are_validated(tmp_path):
    from vigil.errors import ConfigError

    with pytest.raises(ConfigError, match="max_factor"):
        FeedbackTuner(tmp_path, max_factor=1.0)
    with pytest.raises(ConfigError, match="base"):
        FeedbackTuner(tmp_path, base={}).learn([fp(kofn("h1", {"cpu": 5.0}))], who="ana")


# ---- reversibility ----------------------------------------------------------------------------------------------


def test_every_set_is_a_version_with_who_and_why_and_rollback_and_clear_restore(tuner, tmp_path):
    v1 = tuner.learn([fp(kofn("h1", {"cpu": 5.0, "mem": 5.0}), id="7")], who="ana", why="hourly backup")
    v2 = tuner.learn([fp(kofn("h2", {"cpu": 5.0, "mem": 5.0}))], who="bo", why="report job")
    assert (v1.version, v2.version) == ("v0001", "v0002")
    assert {e.key for e in v2} == {"h1", "h2"}
    hist = tuner.entries()
    assert [(e["who"], e["why"], e["action"]) for e in hist] == [("ana", "hourly backup", "learn"),
                                                                 ("bo", "report job", "learn")]  # fmt: skip
    assert tuner.load("v0001").meta["labels"][0]["id"] == "7"  # the labels it came from
    back = tuner.rollback(who="ana", why="h2 was a real problem")
    assert back.version == "v0001" and {e.key for e in tuner.current()} == {"h1"}
    cleared = tuner.clear(who="ana", why="reset")
    assert len(cleared) == 0 and len(tuner.current()) == 0
    assert tuner.rollback(who="ana").version == "v0001"
    assert [e["action"] for e in tuner.entries()] == ["learn", "learn", "rollback", "clear", "rollback"]
    # a fresh tuner on the same folder sees the same set
    again = FeedbackTuner(tmp_path / "sup", base=BASE).current()
    assert again.version == "v0001" and again.to_dict()["entries"] == tuner.current().to_dict()["entries"]


def test_suppressions_round_trip_through_plain_data(tuner):
    s = tuner.learn([fp(kofn("h1", {"cpu": 5.0, "mem": 5.0}))], who="ana")
    doc = json.loads(json.dumps(s.to_dict()))
    assert Suppressions.from_dict(doc).to_dict() == s.to_dict()


# ---- true positives are protected -------------------------------------------------------------------------------


def test_no_adjustment_where_a_true_positive_scored_near_it(tuner):
    labels = [fp(kofn("h1", {"cpu": 5.0, "mem": 5.0})), tp(kofn("h1", {"cpu": 7.0, "disk_io": 9.0}, ts=5_000)),
              tp(kofn("h1", {"mem": 40.0, "disk_io": 9.0}, ts=6_000))]  # fmt: skip
    s = tuner.learn(labels, who="ana")
    assert ("k_of_n", "h1", "cpu") not in s.entries  # bar 6, and a true positive scored 7 <= 1.5 x 6
    assert ("k_of_n", "h1", "mem") in s.entries  # the true positive's mem was 40: far from the bar
    assert any("protected" in c for c in tuner.entries()[-1]["changes"])
    incident = kofn("h1", {"cpu": 5.5, "disk_io": 5.0}, ts=9_000)
    assert s.filter([incident])[1] == []  # cpu keeps its vote: 2 of 2
    job = kofn("h1", {"cpu": 5.5, "mem": 5.5}, ts=9_100)
    assert s.filter([job])[1][0].under == ("mem",)  # only mem loses its vote


def test_a_later_true_positive_removes_an_existing_adjustment(tuner):
    tuner.learn([fp(kofn("h1", {"cpu": 5.0, "mem": 5.0}))], who="ana")
    s = tuner.learn([tp(kofn("h1", {"cpu": 6.5, "disk_io": 9.0}, ts=5_000))], who="ana")
    assert {e.feature for e in s} == {"mem"}


# ---- applying: the k-of-n recount -------------------------------------------------------------------------------


def test_filter_recounts_kofn_votes_with_the_per_host_bars(tuner):
    s = tuner.learn([fp(kofn("h1", {"cpu": 5.0, "disk_io": 6.0}))], who="ana")  # bars cpu 6, disk_io 7.2
    same = kofn("h1", {"cpu": 5.8, "disk_io": 7.0}, ts=9_000)  # both under: 0 of 2
    one = kofn("h1", {"cpu": 5.8, "disk_io": 7.5}, ts=9_100)  # cpu under, disk_io above: 1 of 2
    stronger = kofn("h1", {"cpu": 6.5, "disk_io": 7.5}, ts=9_200)  # both above their bars: 2 of 2
    three = kofn("h1", {"cpu": 5.8, "disk_io": 7.0, "mem": 5.0, "net_out": 7.0}, ts=9_300)  # 2 of 2 left
    other = kofn("h2", {"cpu": 5.8, "disk_io": 7.0}, ts=9_400)  # another host: no bars
    with_model = kofn("h1", {"cpu": 5.8, "disk_io": 7.5}, ts=9_500, model_vote=True)  # model's vote stays: 2
    kept, suppressed = s.filter([same, one, stronger, three, other, with_model])
    assert [a.id for a in kept] == [stronger.id, three.id, other.id, with_model.id]
    assert [(x.alert.id, x.votes, x.votes_after, x.under) for x in suppressed] == [
        (same.id, 2, 0, ("cpu", "disk_io")), (one.id, 2, 1, ("cpu",))]  # fmt: skip
    assert all(x.version == "v0001" and x.reason.startswith("suppressed by feedback v0001") for x in suppressed)
    assert s.counters == {"seen": 6, "suppressed": 2}


def test_a_vote_far_beyond_its_bar_keeps_the_alert(tuner):
    s = tuner.learn([fp(kofn("h1", {"cpu": 5.0, "disk_io": 6.0}))], who="ana")  # bars cpu 6, disk_io 7.2
    leak = kofn("h1", {"cpu": 5.5, "mem": 30.0}, ts=9_000)  # mem has no bar: 30 >= 2 x its base 4
    noisy = kofn("h1", {"cpu": 5.5, "disk_io": 25.0}, ts=9_100)  # disk_io 25 >= 2 x its bar 7.2
    job = kofn("h1", {"cpu": 5.5, "disk_io": 9.0}, ts=9_200)  # disk_io above its bar, not far: 1 of 2
    kept, suppressed = s.filter([leak, noisy, job])
    assert [a.id for a in kept] == [leak.id, noisy.id] and [x.alert.id for x in suppressed] == [job.id]


def test_revote_applies_the_bars_before_the_vote_on_pipeline_windows(tmp_path):
    from vigil.apps.servers import ServerConfig, run_server_pipeline
    from vigil.apps.servers.feedback import refire, server_base
    from vigil.io.generators.fleet import FleetSpec, simulate_fleet

    cfg = ServerConfig(window_s=60)
    run = run_server_pipeline(simulate_fleet(FleetSpec(hosts=6, days=0.6, seed=3, scheduled_job_hosts=0.5)), cfg)
    assert run.alerts
    t = FeedbackTuner(tmp_path, base=server_base(cfg), max_factor=100.0, headroom=100.0)
    s = t.learn([fp(a) for a in run.alerts], who="ana")
    fire = refire(s, run.windows, cfg, run.host_names)
    assert not fire.any()  # every voting metric of every alerting host is now under a (huge) bar
    assert np.array_equal(refire(s, run.windows, cfg, run.host_names, from_ms=2**62), run.windows.fire)
    assert np.array_equal(refire(Suppressions(), run.windows, cfg, run.host_names), run.windows.fire)


def test_labels_come_back_from_the_alert_store_with_the_alert_stats(tmp_path):
    from vigil.alerting.manager import AlertManager, labels_of
    from vigil.alerting.notification import fingerprint
    from vigil.alerting.store import AlertStore

    a1, a2 = kofn("h1", {"cpu": 5.0, "mem": 5.0}, ts=100_000), kofn("h1", {"cpu": 6.0, "mem": 5.5}, ts=4_000_000)
    with AlertStore(tmp_path / "alerts.db") as store:
        m = AlertManager(store=store, clock=lambda: 0)
        for a in (a1, a2):
            m.advance(a.event_ts_ms)
            m.ingest([a], now_ms=a.event_ts_ms)
        fpr = fingerprint(labels_of(a1))
        store.add_feedback(fpr, "false_positive", at_ms=200_000, by="ana", note="backup", alert_id=a1.id)
        store.add_feedback(fpr, "true_positive", at_ms=4_100_000, by="bo")  # the latest alert
        labels = labels_from_store(store)
    assert [(x.alert.id, x.label, x.by) for x in labels] == [(a1.id, "false_positive", "ana"),
                                                             (a2.id, "true_positive", "bo")]  # fmt: skip
    assert labels[0].alert.stats["metrics"]["cpu"]["z"] == 5.0 and labels[0].note == "backup"


# ---- retraining -------------------------------------------------------------------------------------------------


@pytest.fixture
def registry(tmp_path):
    from vigil.detectors.iforest import fit_isolation_forest
    from vigil.models.registry import ModelRegistry

    reg = ModelRegistry(tmp_path / "models")
    normal = WindowRows.of(np.random.default_rng(0).standard_normal((3000, 2)), key="h0")
    reg.promote("m", reg.register("m", fit_isolation_forest(normal.X, ["a", "b"], n_estimators=30, seed=1)), "v1")
    return reg, normal


def _holdout() -> WindowRows:
    """A scheduled job far out at (5, 5), normal here; incidents closer in at (-3, 3): v1 ranks the job higher."""
    rng = np.random.default_rng(5)
    jobs = np.array([5.0, 5.0]) + 0.3 * rng.standard_normal((40, 2))
    incidents = np.array([-3.0, 3.0]) + 0.3 * rng.standard_normal((40, 2))
    quiet = rng.standard_normal((200, 2))
    return WindowRows.of(np.vstack([jobs, incidents, quiet]), key="h9", y=[0] * 40 + [1] * 40 + [0] * 200)


def test_retrain_promotes_when_the_labels_make_it_better(registry):
    reg, normal = registry
    labelled = WindowRows.of(np.array([[5.0, 5.0], [4.8, 5.2], [-3.0, 3.0]]), key="h1", start_ms=[1, 2, 3],
                             y=[0, 0, 1])  # fmt: skip
    r = retrain(reg, "m", base=normal, labelled=labelled, holdout=_holdout(), n_estimators=30, seed=1, who="ana",
                why="backup windows are normal", control=True)  # fmt: skip
    assert r.promoted and r.candidate == "v2" and reg.promoted("m")[0] == "v2"
    assert r.candidate_eval["average_precision"] > r.current_eval["average_precision"]
    assert r.control_eval == r.current_eval  # same rows, trees and seed as v1: the gain is the labels'
    assert r.training["fp_windows"] == 2 and r.training["fp_copies"] == 150  # 10 % of 3000 rows
    meta = reg.meta("m", "v2")
    assert meta["evaluation"]["candidate"]["average_precision"] == r.candidate_eval["average_precision"]
    assert meta["retrained_from"] == "v1" and "better, promoted" in meta["evaluation"]["decision"]
    assert reg.history("m")[-1]["who"] == "ana"


def test_retrain_keeps_the_promoted_version_when_not_better(registry):
    reg, normal = registry
    # the operator called the incident pattern normal: the refit learns it, and ranks incidents lower
    wrong = WindowRows.of(np.array([[-3.0, 3.0], [-2.9, 3.1]]), key="h1", start_ms=[1, 2], y=[0, 0])
    dry = retrain(reg, "m", base=normal, labelled=wrong, holdout=_holdout(), n_estimators=30, seed=1, dry_run=True)
    assert dry.dry_run and dry.candidate is None and reg.versions("m") == ["v1"]
    r = retrain(reg, "m", base=normal, labelled=wrong, holdout=_holdout(), n_estimators=30, seed=1)
    assert not r.promoted and "not better" in r.decision
    assert r.candidate_eval["average_precision"] < r.current_eval["average_precision"]
    assert reg.promoted("m")[0] == "v1" and reg.versions("m") == ["v1", "v2"]  # registered, with its evaluation
    assert reg.meta("m", "v2")["evaluation"]["decision"] == r.decision


def test_retrain_refuses_to_judge_on_what_it_learned(registry):
    from vigil.errors import ConfigError

    reg, normal = registry
    hold = _holdout()
    with pytest.raises(ConfigError, match="held-back"):
        retrain(reg, "m", base=normal, labelled=hold.take(np.arange(3)), holdout=hold, n_estimators=10)
    with pytest.raises(ConfigError, match="both"):
        retrain(reg, "m", base=normal, labelled=hold.take(np.arange(0)), holdout=hold.take(np.arange(3)),
                n_estimators=10)  # fmt: skip


# ---- the simulator's scheduled jobs -----------------------------------------------------------------------------


def test_scheduled_jobs_touch_only_the_job_hosts_values():
    from vigil.io.generators.fleet import FleetSpec, simulate_fleet

    plain = simulate_fleet(FleetSpec(hosts=8, days=0.3, seed=4))
    jobs = simulate_fleet(FleetSpec(hosts=8, days=0.3, seed=4, scheduled_job_hosts=0.5))
    for c in ("host", "ts_ms", "arrival_ms", "metric", "label", "incident_id"):
        assert np.array_equal(plain[c], jobs[c]), c
    changed = plain["value"] != jobs["value"]
    assert changed.any() and set(jobs["incident"][changed].tolist()) <= {"scheduled_job", "batch_job"} | set(
        plain["incident"][changed].tolist())  # fmt: skip
    job_hosts = set(jobs["host"][jobs["incident"] == "scheduled_job"].tolist())
    assert set(jobs["host"][changed].tolist()) <= job_hosts
    hits = jobs["incident"] == "scheduled_job"
    assert set(jobs["metric"][hits & changed].tolist()) <= {"cpu", "disk_io", "net_out"}


# ---- the demo ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_json():
    """One small seeded run of ``vigil demo feedback --json`` (about 20 s), shared by the demo tests."""
    import contextlib
    import io

    from vigil.cli.feedback_demo import demo_feedback_cmd

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        res = demo_feedback_cmd(hosts=40, days=2.0, seed=7, json_=True)
    return out.getvalue().strip().splitlines()[-1], res


def test_demo_json_last_line_has_the_four_keys(demo_json):
    line, _ = demo_json
    doc = json.loads(line)
    for key in ("false_alerts_per_host_day_before", "false_alerts_per_host_day_after", "recall_before",
                "recall_after"):  # fmt: skip
        assert isinstance(doc[key], float), key


def test_demo_meets_the_targets_on_a_small_seeded_fleet(demo_json):
    _, r = demo_json
    assert r["labelled"]["false_positive"] > 0 and r["suppressions"]["entries"] > 0
    assert r["false_alerts_per_host_day_after"] <= r["false_alerts_per_host_day_before"] / 2
    assert r["recall_before"] - r["recall_after"] <= 0.02
    wl = r["window_level"]
    assert wl["after"]["false_alerts"] <= wl["before"]["false_alerts"] / 2
    assert wl["before"]["recall"] - wl["after"]["recall"] <= 0.02
    assert r["retrain"]["candidate"] == "v2" and "average_precision" in r["retrain"]["candidate_eval"]


def test_vigil_retrain_from_an_influx_file_and_the_store_feedback(tmp_path, capsys):
    """`vigil retrain`: feedback in an alert store + Influx lines + incident CSV -> a judged new version."""
    from vigil.alerting.manager import AlertManager, labels_of
    from vigil.alerting.notification import fingerprint
    from vigil.alerting.store import AlertStore
    from vigil.apps.servers import ServerConfig, run_server_pipeline, train_global_model
    from vigil.cli.retrain import retrain_cmd
    from vigil.io.generators.fleet import FleetSpec, host_names, incident_table, simulate_fleet, to_influx_lines
    from vigil.models.registry import ModelRegistry

    spec = FleetSpec(hosts=6, days=0.6, seed=3, scheduled_job_hosts=0.5, incidents_per_host_day=2.0, warmup_h=2.0)
    cols = simulate_fleet(spec)
    (tmp_path / "fleet.influx").write_text("\n".join(to_influx_lines(cols)) + "\n")
    inc = incident_table(cols)
    with open(tmp_path / "incidents.csv", "w") as f:
        f.write("incident_id,host,type,start_ms,end_ms\n")
        for i, h, ty, a, b in zip(inc["incident_id"], host_names(6)[inc["host_id"]], inc["type"], inc["start_ms"],
                                  inc["end_ms"], strict=True):  # fmt: skip
            f.write(f"{i},{h},{ty},{a},{b}\n")
    cfg = ServerConfig(window_s=60)
    reg = ModelRegistry(tmp_path / "models")
    v1 = reg.register("servers", train_global_model(cols, cfg, until_ms=spec.start_ms + 2 * 3_600_000,
                                                    n_estimators=20))  # fmt: skip
    reg.promote("servers", v1, reason="offline")
    alerts = [a for a in run_server_pipeline(cols, cfg).alerts if a.event_ts_ms < spec.start_ms + 6 * 3_600_000]
    assert alerts
    with AlertStore(tmp_path / "alerts.db") as store:
        m = AlertManager(store=store, clock=lambda: 0)
        for a in alerts:
            m.advance(a.event_ts_ms)
            m.ingest([a], now_ms=a.event_ts_ms)
            store.add_feedback(fingerprint(labels_of(a)), "false_positive", at_ms=a.event_ts_ms, alert_id=a.id)
    kw = {"db": str(tmp_path / "alerts.db"), "registry": str(tmp_path / "models"), "name": "servers",
          "input_path": str(tmp_path / "fleet.influx"), "incidents": str(tmp_path / "incidents.csv"),
          "until": "2h", "n_estimators": 20, "json_": True}  # fmt: skip
    dry = retrain_cmd(**kw, dry_run=True)
    assert dry["dry_run"] and reg.versions("servers") == ["v1"] and dry["labels"]["learned"] == len(alerts)
    capsys.readouterr()
    res = retrain_cmd(**kw)
    doc = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert doc["candidate"] == "v2" and reg.versions("servers") == ["v1", "v2"]
    assert reg.promoted("servers")[0] == ("v2" if res["promoted"] else "v1")
    ev = reg.meta("servers", "v2")["evaluation"]
    assert ev["current"]["positives"] > 0 and ev["control"] is not None and ev["decision"] == res["decision"]
