"""The feedback loop in a running pipeline: labels in the alert store become bars, reversibly."""

from typer.testing import CliRunner

from vigil.alerting.runtime import ManagedAlerts
from vigil.alerting.store import AlertStore
from vigil.cli.main import app
from vigil.feedback.loop import FeedbackLoop
from vigil.types import Alert, Contribution

BASE = {"k_of_n": {"cpu": 3.5, "disk_io": 4.0, "mem": 3.5}}


def _job_alert(i, host="host-1", cpu=5.0, disk=6.0):
    """What an hourly report job on a host looks like to the k-of-n vote: cpu and disk_io, moderately."""
    metrics = {"cpu": {"z": cpu, "flag": True}, "disk_io": {"z": disk, "flag": True}, "mem": {"z": 0.3, "flag": False}}
    return Alert(f"a{i}-{host}", host, str(i), "k_of_n", 2.0, 2.0, 3_600_000 * i, 0,
                 stats={"metrics": metrics, "votes": 2, "k": 2, "window_start_ms": 3_600_000 * i},
                 contributions=[Contribution(m, v["z"], flag=v["flag"]) for m, v in metrics.items()])


def test_false_positive_labels_suppress_the_recurring_alert_and_can_be_rolled_back(tmp_path):
    db = tmp_path / "alerts.db"
    now = [0]
    m = ManagedAlerts({"route": {"group_by": ["key"], "group_wait": "0s"}}, pipeline="servers", store_path=db,
                      clock=lambda: now[0], tick_interval_s=None, notifiers={"default": []},
                      suppressor=FeedbackLoop(tmp_path / "feedback", base=BASE, learn_every={"learn_every": "1h"}))
    m.write_batch([_job_alert(1)])
    m.flush()
    store = AlertStore(str(db))
    fp = store.alerts()[0]["fingerprint"]
    store.add_feedback(fp, "false_positive", at_ms=1, note="the hourly report job", by="ops", alert_id="a1-host-1")
    m.learn_now()
    assert m.suppressor.suppressions is not None and len(m.suppressor.suppressions) >= 1
    m.write_batch([_job_alert(2), _job_alert(2, host="host-2"), _job_alert(3, cpu=30.0, disk=40.0)])
    m.flush()
    assert m.suppressor.suppressed_count == 1  # the job's next run on host-1; not host-2, not a far larger excursion
    assert "suppressed by feedback v0001" in m.suppressor.suppressed[0].reason

    r = CliRunner().invoke(app, ["feedback", "show", "--db", str(db)])
    assert r.exit_code == 0 and "v0001" in r.output and "host-1" in r.output
    r = CliRunner().invoke(app, ["feedback", "clear", "--db", str(db), "--why", "the job moved"])
    assert r.exit_code == 0
    m.learn_now()  # the running pipeline picks the cleared set up at its next pass
    assert len(m.suppressor.suppressions) == 0
    m.write_batch([_job_alert(4)])
    m.flush()
    assert m.suppressor.suppressed_count == 1
    r = CliRunner().invoke(app, ["feedback", "rollback", "--db", str(db), "--version", "v0001"])
    assert r.exit_code == 0
    m.learn_now()
    m.write_batch([_job_alert(5)])
    m.flush()
    assert m.suppressor.suppressed_count == 2
    m.close()
