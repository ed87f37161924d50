"""The SQLite alert store and the `vigil alerts` / `vigil silence` commands against a temporary store."""

import csv
import json
import sqlite3
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from vigil.alerting.manager import AlertManager
from vigil.alerting.store import SCHEMA_VERSION, AlertStore
from vigil.cli.alerts import alerts_app, silence_app
from vigil.errors import ConfigError, StateError
from vigil.types import Alert

runner = CliRunner(env={"COLUMNS": "200"})


def row(fp, key="u1", status="firing", updated=1):
    return {"fingerprint": fp, "labels": {"alertname": "amount_z", "key": key, "severity": "warning"},
            "status": status, "revision": 1, "starts_at_ms": 0, "ends_at_ms": None,
            "last_alert": {"id": f"id-{fp}", "score": 7.5, "event_ts_ms": 42}, "observations": 3,
            "updated_ms": updated}


def test_schema_is_created_with_a_version(tmp_path):
    s = AlertStore(tmp_path / "sub" / "alerts.db")
    assert s.schema_version == SCHEMA_VERSION
    tables = {r[0] for r in sqlite3.connect(s.path).execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"alerts", "alert_revisions", "silences", "acks", "feedback", "notifications"} <= tables
    assert sqlite3.connect(s.path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    s.close()
    AlertStore(s.path).close()  # reopening an existing store is fine


def test_corrupt_missing_and_newer_stores_are_clear_errors(tmp_path):
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"this is not a database, just some bytes " * 100)
    with pytest.raises(StateError, match=f"alert store {bad} is unreadable or corrupt"):
        AlertStore(bad)
    with pytest.raises(StateError, match="no alert store at"):
        AlertStore(tmp_path / "missing.db", create=False)
    newer = tmp_path / "newer.db"
    sqlite3.connect(newer).execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StateError, match="newer than this Vigil"):
        AlertStore(newer)


def test_alerts_revisions_and_fingerprint_prefixes(tmp_path):
    s = AlertStore(tmp_path / "a.db")
    s.write_alerts([row("aaaa1111"), row("aaaa2222", key="u2", status="resolved", updated=2)],
                   [{"fingerprint": "aaaa1111", "revision": 1, "status": "firing", "reason": "fired",
                     "alert": {"score": 1.0}, "at_ms": 5}])
    s.write_alerts([{**row("aaaa1111"), "observations": 9, "updated_ms": 3}])
    assert [r["fingerprint"] for r in s.alerts()] == ["aaaa1111", "aaaa2222"]
    assert [r["labels"]["key"] for r in s.alerts(status="resolved")] == ["u2"]
    assert [r["fingerprint"] for r in s.alerts(key="u1")] == ["aaaa1111"]
    assert s.alert("aaaa1111")["observations"] == 9 and s.alert("nope") is None
    assert s.revisions("aaaa1111")[0]["alert"] == {"score": 1.0}
    assert s.find_fingerprint("aaaa2") == "aaaa2222"
    with pytest.raises(ConfigError, match="matches several alerts"):
        s.find_fingerprint("aaaa")
    with pytest.raises(ConfigError, match="`fingerprint` matches no alert"):
        s.find_fingerprint("zz")


def test_silences_acks_and_the_mute_version_seen_by_another_handle(tmp_path):
    a, b = AlertStore(tmp_path / "a.db"), AlertStore(tmp_path / "a.db")
    v0 = a.mute_version()
    sid = b.add_silence(["key=u1"], starts_ms=100, ends_ms=200, created_by="ana", comment="x", now_ms=50)
    assert a.mute_version() > v0
    assert [s["id"] for s in a.silences(active_at_ms=150)] == [sid]
    assert a.silences(active_at_ms=99) == [] and a.silences(active_at_ms=200) == []
    assert b.expire_silence(sid, 120) and not b.expire_silence(sid, 130)
    assert a.silences() == [] and a.silences(include_expired=True)[0]["expired_ms"] == 120
    v1 = a.mute_version()
    b.add_ack("fp1", "ana", "on it", 10)
    assert a.mute_version() > v1 and [x["by"] for x in a.acks()] == ["ana"]
    assert a.clear_acks("fp1", 20) == 1 and a.acks() == [] and a.acks(active_only=False)[0]["cleared_ms"] == 20


def test_feedback_is_checked_and_exported_as_csv_and_jsonl(tmp_path):
    s = AlertStore(tmp_path / "a.db")
    s.write_alerts([row("fp1")])
    s.add_feedback("fp1", "false_positive", at_ms=5, note="promo day", by="ana")
    s.add_feedback("fp1", "true_positive", at_ms=6)
    with pytest.raises(ConfigError, match="`label` must be 'true_positive' or 'false_positive'; got 'maybe'"):
        s.add_feedback("fp1", "maybe", at_ms=7)
    with pytest.raises(sqlite3.IntegrityError):  # the CHECK constraint guards writers that bypass the API
        sqlite3.connect(s.path).execute("INSERT INTO feedback (fingerprint, label, at_ms) VALUES ('x', 'meh', 1)")
    fb = s.feedback(label="false_positive")
    assert [(f["alert_id"], f["key"], f["score"], f["note"]) for f in fb] == [("id-fp1", "u1", 7.5, "promo day")]
    assert s.export_feedback(tmp_path / "labels.csv") == 2
    rows = list(csv.DictReader((tmp_path / "labels.csv").open()))
    assert [r["label"] for r in rows] == ["false_positive", "true_positive"] and rows[0]["alertname"] == "amount_z"
    assert s.export_feedback(tmp_path / "labels.jsonl") == 2
    assert json.loads((tmp_path / "labels.jsonl").read_text().splitlines()[0])["by"] == "ana"


def test_notification_log_upserts_by_idempotency_key(tmp_path):
    s = AlertStore(tmp_path / "a.db")
    s.record_notification(idempotency_key="k1", receiver="r", group_key="g", reason="new", status="failed",
                          created_ms=1, error="503")
    s.record_notification(idempotency_key="k1", receiver="r", group_key="g", reason="new", status="delivered",
                          created_ms=1, delivered_ms=9)
    [n] = s.notifications()
    assert (n["status"], n["delivered_ms"], n["error"]) == ("delivered", 9, None)


# -- the CLI ----------------------------------------------------------------------------------------------------


@pytest.fixture
def db(tmp_path):
    """A store with two alerts written by a real manager."""
    path = tmp_path / "vigil-out" / "alerts.db"
    m = AlertManager({}, store=AlertStore(path), pipeline="fraud", clock=lambda: 1_700_000_000_000)
    m.ingest([Alert("a1", "u1", "e1", "amount_z", 7.5, 3.0, 1_700_000_000_000, 0, message="big amount"),
              Alert("a2", "u2", "e2", "velocity", 12.0, 5.0, 1_700_000_000_000, 0, severity="critical")])
    m.advance(1_700_000_000_000 + 3_600_000)
    m.ingest([Alert("a3", "u2", "e3", "velocity", 13.0, 5.0, 1_700_000_000_000 + 4_000_000, 0,
                    severity="critical")])
    m.store.close()
    return path


def cli(group, *args):
    """`vigil <group> ...` in-process (the root command's SIGUSR1 hook needs a real stderr, so call the sub-app)."""
    return runner.invoke({"alerts": alerts_app, "silence": silence_app}[group], [*map(str, args)])


def fp_for(db, key):
    return next(a["fingerprint"] for a in AlertStore(db).alerts() if a["labels"]["key"] == key)


def test_cli_alerts_list_table_and_json(db):
    r = cli("alerts", "list", "--db", db)
    assert r.exit_code == 0, r.output
    assert "amount_z" in r.output and "velocity" in r.output and "2 alert(s)" in r.output
    r = cli("alerts", "list", "--db", db, "--status", "firing", "--json")
    rows = json.loads(r.stdout)
    assert [(x["labels"]["key"], x["status"], x["acked"]) for x in rows] == [("u2", "firing", False)]
    r = cli("alerts", "list", "--db", db, "--status", "burning")
    assert r.exit_code == 2 and "`--status` must be one of firing, resolved, retracted; got 'burning'" in r.output


def test_cli_show_ack_label_and_export(db, tmp_path):
    fp = fp_for(db, "u1")
    r = cli("alerts", "show", fp[:6], "--db", db)
    assert r.exit_code == 0, r.output
    assert fp in r.output and "big amount" in r.output and "resolved" in r.output
    r = cli("alerts", "ack", fp[:6], "--by", "ana", "--comment", "on it", "--db", db)
    assert r.exit_code == 0 and f"acked {fp}" in r.output
    r = cli("alerts", "label", fp, "--false-positive", "--note", "promo day", "--by", "ana", "--db", db)
    assert r.exit_code == 0 and "false_positive" in r.output
    doc = json.loads(cli("alerts", "show", fp, "--db", db, "--json").stdout)
    assert doc["acks"][0]["comment"] == "on it" and doc["feedback"][0]["label"] == "false_positive"
    assert [x["reason"] for x in doc["revisions"]] == ["fired", "resolved"]
    out = tmp_path / "labels.csv"
    r = cli("alerts", "export-labels", out, "--db", db)
    assert r.exit_code == 0 and "wrote 1 label(s)" in r.output
    assert next(csv.DictReader(out.open()))["alert_id"] == "a1"
    r = cli("alerts", "label", fp, "--db", db)
    assert r.exit_code != 0  # --true-positive or --false-positive is required
    r = cli("alerts", "ack", "ffffffff", "--db", db)
    assert r.exit_code == 1 and "matches no alert" in r.output


def test_cli_silence_add_list_expire_and_a_running_manager_honours_it(tmp_path):
    db, clock = tmp_path / "alerts.db", [1_700_000_000_000]
    m = AlertManager({"route": {"receiver": "default", "group_by": ["key"], "group_wait": "0s",
                                "group_interval": "1s"}}, store=AlertStore(db), clock=lambda: clock[0])
    m.ingest([Alert("a1", "u1", "e1", "amount_z", 7.5, 3.0, clock[0], 0),
              Alert("a2", "u2", "e2", "velocity", 12.0, 5.0, clock[0], 0, severity="critical")])
    r = cli("silence", "add", "--db", db, "-m", "key=u2", "-m", "severity=critical", "--for", "2h",
            "--comment", "card replaced", "--by", "ana", "--json")
    assert r.exit_code == 0, r.output
    sid = json.loads(r.stdout)["id"]
    listed = json.loads(cli("silence", "list", "--db", db, "--json").stdout)
    assert [(s["id"], s["matchers"], s["state"]) for s in listed] == [(sid, ["key=u2", "severity=critical"], "active")]
    assert sid in cli("silence", "list", "--db", db).output
    clock[0] = int(time.time() * 1000)  # the CLI stamps silences with the wall clock
    assert [n.group_labels for n in m.tick()] == [{"key": "u1"}]
    assert [a.silenced_by for a in m.alerts(key="u2")] == [[sid]]
    r = cli("silence", "expire", sid, "--db", db)
    assert r.exit_code == 0 and "expired" in r.output
    clock[0] += 1000
    assert [n.group_labels for n in m.tick()] == [{"key": "u2"}]
    assert cli("silence", "expire", sid, "--db", db).exit_code == 1
    assert json.loads(cli("silence", "list", "--db", db, "--all", "--json").stdout)[0]["state"] == "expired"


def test_cli_errors_are_readable(tmp_path):
    r = cli("silence", "add", "--db", tmp_path / "a.db", "-m", "key", "--comment", "x")
    assert r.exit_code == 2 and "`--matcher[0]` is not a matcher" in r.output
    r = cli("silence", "add", "--db", tmp_path / "a.db", "-m", "key=u1", "--for", "soon", "--comment", "x")
    assert r.exit_code == 2 and "`--for` is not a duration; got 'soon'" in r.output
    r = cli("alerts", "list", "--db", tmp_path / "nothing.db")
    assert r.exit_code == 1 and "no alert store at" in r.output
    assert "vigil silence add -m key=u1" in cli("silence", "--help").output


def test_the_vigil_command_has_alerts_and_silence():
    r = subprocess.run([sys.executable, "-m", "vigil.cli.main", "--help"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and "alerts" in r.stdout and "silence" in r.stdout
