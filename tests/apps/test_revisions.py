"""Late data revises alerts: a window's alert is retracted, or raised late, and the receivers are told."""

import numpy as np

from vigil.alerting.runtime import ManagedAlerts
from vigil.apps.servers import ServerConfig, ServerStep
from vigil.dataflow.pipeline import Pipeline
from vigil.engine.runner import EmbeddedRunner
from vigil.io.memory import MemorySource
from vigil.io.sinks import MemorySink

W = 10_000  # window


def _rows():
    """host h1: normal windows, a spike in window 30, then late samples that undo it; window 40 normal, then
    late samples that make it anomalous. Arrival order: late samples come after windows 31-32 / 41-42."""
    rng = np.random.default_rng(3)
    rows = []

    def window(w, cpu, mem, n=3):
        for i in range(n):
            t = w * W + 1_000 + i * (8_000 // n)  # every sample inside the window
            rows.append(("h1", t, "cpu", cpu + float(rng.normal(0, 1))))
            rows.append(("h1", t, "mem", mem + float(rng.normal(0, 1))))

    for w in range(30):
        window(w, 50, 40)
    window(30, 95, 80)  # spike: both metrics vote -> alert
    window(31, 50, 40)
    window(32, 50, 40)
    window(30, 50, 40, n=60)  # late: window 30 was normal after all -> retracted
    for w in range(33, 41):
        window(w, 50, 40)
    window(41, 50, 40)
    window(42, 50, 40)
    window(40, 99, 85, n=30)  # late: window 40 was anomalous -> raised late
    window(43, 50, 40)
    return rows


def _run(tmp_path, revise_windows=6):
    rows = _rows()
    src = MemorySource({"key": [r[0] for r in rows], "ts_ms": [r[1] for r in rows], "metric": [r[2] for r in rows],
                        "value": [r[3] for r in rows]}, batch_size=7)
    cfg = ServerConfig(metrics=("cpu", "mem"), k=2, persist_windows=1, min_count=5, threshold=4.0, per_metric={},
                       rate_metrics=(), halflife=15)
    raw = MemorySink()
    sent = []

    class Rec:
        name = "rec"

        def send(self, n):
            sent.append(n)

        def close(self):
            pass

    managed = ManagedAlerts({"clock": "event", "route": {"group_by": ["key"], "group_wait": "0s",
                                                          "group_interval": "1s"}},
                            pipeline="fleet", store_path=tmp_path / "alerts.db", notifiers={"default": [Rec()]})
    step = ServerStep(cfg, revise_windows=revise_windows, emit_windows=False)
    late = MemorySink()
    p = (Pipeline("fleet").source(src).watermark("0s", allowed_lateness="10m").step(step)
         .alerts_to(raw, managed).late_to(late))
    st = EmbeddedRunner(p, out_dir=str(tmp_path)).run()
    return st, raw.items, sent, managed, step, late.items


def test_late_samples_retract_an_alert_and_raise_another(tmp_path):
    st, raw, sent, managed, step, late = _run(tmp_path)
    actions = [(a.stats["window_start_ms"] // W, a.stats.get("revision", {}).get("action", "fired")) for a in raw]
    assert actions == [(30, "fired"), (30, "retracted"), (40, "raised_late")]
    retract = raw[1]
    assert retract.id == raw[0].id and retract.severity == raw[0].severity  # names the alert it takes back
    assert retract.stats["revision"]["votes_before"] == 2 and retract.stats["votes"] < 2
    assert step.revisions.revised_samples == 2 * (60 + 30) and not late  # analysed, not dropped as late
    assert st.late_events == 0
    reasons = [n.reason for n in sent]
    assert reasons.count("new") == 2 and "retracted" in reasons  # the receivers are told
    retracted = [n for n in sent if n.reason == "retracted"][0]
    assert retracted.alerts[0].status == "retracted"
    from vigil.alerting.store import AlertStore

    hist = AlertStore(str(tmp_path / "alerts.db")).revisions(retracted.alerts[0].fingerprint)
    # the history is kept: fired, retracted, then (same host, same logical alert) the late-raised window 40, which
    # resolves when the input ends (the watermark reaches the end of time)
    assert [h["status"] for h in hist] == ["firing", "retracted", "firing", "resolved"]


def test_without_a_revision_horizon_late_samples_stay_late(tmp_path):
    st, raw, sent, managed, step, late = _run(tmp_path, revise_windows=0)
    assert [a.stats.get("revision") for a in raw] == [None]  # only the original alert
    assert st.late_events == 2 * (60 + 30) == len(late)


def _late_spike_run(tmp_path, score_late):
    from vigil.detectors import SlidingZScore

    rng = np.random.default_rng(1)
    n = 400
    ts = (np.arange(n) * 1_000).tolist()
    vals = (50 + rng.normal(0, 1, n)).tolist()
    keys = ["k"] * n
    # a spike at t=200.5 s arrives after the stream reached t=399 s: 198 s behind the watermark
    keys.append("k")
    ts.append(200_500)
    vals.append(500.0)
    src = MemorySource({"key": keys, "ts_ms": ts, "v": vals, "id": [f"e{i}" for i in range(n + 1)]}, batch_size=50)
    raw, late = MemorySink(), MemorySink()
    det = SlidingZScore(field="v", window="600s", threshold=4, min_count=20)
    p = (Pipeline("per-event").source(src).watermark("1s", score_late=score_late).detect("z", det)
         .alerts_to(raw).late_to(late))
    st = EmbeddedRunner(p, out_dir=str(tmp_path)).run()
    return st, raw.items, late.items, det


def test_a_late_event_is_scored_and_raised_late_not_ignored(tmp_path):
    st, raw, late, det = _late_spike_run(tmp_path, score_late=True)
    assert st.late_events == 1 and len(late) == 1  # still in the late output, and counted
    late_alerts = [a for a in raw if a.stats.get("revision", {}).get("action") == "raised_late"]
    assert len(late_alerts) == 1 and late_alerts[0].event_id == "e400"
    assert late_alerts[0].message.startswith("raised late:") and "197500 ms behind" in late_alerts[0].stats["revision"]["why"]
    st2, raw2, _, det2 = _late_spike_run(tmp_path, score_late=False)
    assert not [a for a in raw2 if a.event_id == "e400"]
    from vigil.state.codec import encode

    # the late event was scored on a copy: the detector's state is as if it had never been seen
    assert encode("z", 1, {}, det.snapshot()) == encode("z", 1, {}, det2.snapshot())
