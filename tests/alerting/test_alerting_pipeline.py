"""The alert manager inside pipelines: `alerting:` in YAML, notifications to a real HTTP receiver, restarts."""

import json
from http.server import BaseHTTPRequestHandler

import pytest
import yaml
from typer.testing import CliRunner

from vigil.alerting.runtime import ManagedAlerts, WatermarkMark
from vigil.alerting.store import AlertStore
from vigil.cli.main import app
from vigil.config import load_pipeline
from vigil.engine.runner import EmbeddedRunner
from vigil.errors import ConfigError
from vigil.io.generators.transactions import TransactionSpec, generate_transactions, write_jsonl
from vigil.testing.system import serve_http
from vigil.types import Alert


@pytest.fixture(scope="module")
def tx_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("tx") / "tx.jsonl"
    write_jsonl(generate_transactions(TransactionSpec(events=40_000, users=500, seed=8)), str(path))
    return path


@pytest.fixture()
def receiver():
    got = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"]))
            got.append((self.headers.get("Idempotency-Key"), json.loads(body)))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    with serve_http(Handler) as url:
        yield f"{url}/hook", got


def _yaml(tmp_path, tx_file, alerting):
    doc = {
        "name": "fraud",
        "source": {"kind": "jsonl", "path": str(tx_file),
                   "schema": {"key": "user", "time": "ts", "fields": ["amount"], "extra": ["txn_id"],
                              "optional": ["label", "pattern"]}},
        "event_ids": "txn_id",
        "steps": [{"name": "amount_z", "detector": "sliding_zscore",
                   "params": {"field": "amount", "window": "60s", "transform": "log"}},
                  {"name": "velocity", "detector": "velocity", "severity": "critical",
                   "params": {"window": "60s", "max_count": 5}}],
        "alerts": [{"kind": "jsonl", "path": str(tmp_path / "raw.jsonl")}],
        "alerting": alerting,
    }
    f = tmp_path / "fraud.yaml"
    f.write_text(yaml.safe_dump(doc))
    return f


def test_pipeline_alerts_become_few_grouped_notifications(tmp_path, tx_file, receiver):
    url, got = receiver
    db = tmp_path / "alerts.db"
    f = _yaml(tmp_path, tx_file, {
        "store": str(db), "clock": "event",
        "route": {"receiver": "ops", "group_by": ["key"], "group_wait": "30s", "group_interval": "5m"},
        "inhibit_rules": [{"source_matchers": ["severity=critical"], "target_matchers": ["severity=warning"],
                           "equal": ["key"]}],
        "receivers": [{"name": "ops", "kind": "webhook", "url": url}],
    })
    p = load_pipeline(str(f))
    st = EmbeddedRunner(p, out_dir=str(tmp_path)).run()
    managed = next(s for s in p.alert_sinks if isinstance(s, ManagedAlerts))
    c = managed.counters
    assert c["raw_alerts_in"] == st.alerts > 100
    firing = [b for _, b in got if b["status"] == "firing"]
    assert c["logical_alerts"] < st.alerts  # de-duplicated: one logical alert per card holder and detector
    assert 0 < len(firing) < st.alerts and len({b["groupKey"] for b in firing}) < c["logical_alerts"]  # grouped
    keys = [k for k, _ in got]
    assert len(set(keys)) == len(keys)  # every notification has its own idempotency key
    assert all(len({a["labels"]["key"] for a in b["alerts"]}) == 1 for _, b in got)  # grouped per card holder
    store = AlertStore(str(db))
    rows = store.alerts()  # one row per fingerprint (a card holder and detector); logical alerts count episodes
    assert 0 < len(rows) <= c["logical_alerts"] and len(store.notifications(limit=100_000)) == len(got)
    r = CliRunner().invoke(app, ["alerts", "list", "--db", str(db), "--json", "--limit", "100000"])
    assert r.exit_code == 0 and len(json.loads(r.output)) == len(rows)


def test_bad_alerting_policy_fails_at_load_naming_the_field(tmp_path, tx_file):
    f = _yaml(tmp_path, tx_file, {"route": {"receiver": "ops", "group_wait": "soon"}, "receivers": [{"name": "ops"}]})
    with pytest.raises(ConfigError, match=r"group_wait.*soon"):
        load_pipeline(str(f))
    f = _yaml(tmp_path, tx_file, {"receivers": [{"name": "ops", "kind": "webhook", "url": "localhost:1"}]})
    with pytest.raises(ConfigError, match=r"ops.*url"):
        load_pipeline(str(f))


def _alert(i, key="u1", ts=1_000):
    return Alert(f"a{i}", key, f"e{i}", "amount_z", 5.0, 3.0, ts, 0, severity="warning")


def test_restart_keeps_open_groups_and_does_not_renotify(tmp_path):
    now = [0]
    sent = []

    class Rec:
        name = "rec"

        def send(self, n):
            sent.append((n.reason, n.idempotency_key))

        def close(self):
            pass

    def make():
        return ManagedAlerts({"route": {"group_by": ["key"], "group_wait": "10s", "group_interval": "1m"}}, pipeline="p",
                             store_path=tmp_path / "a.db", clock=lambda: now[0], tick_interval_s=None,
                             notifiers={"default": [Rec()]})

    m = make()
    m.write_batch([_alert(1), _alert(2, "u2")])
    m.flush()
    now[0] = 11_000
    m.flush()
    assert [r for r, _ in sent] == ["new", "new"]
    m.close()  # the process stops: the state is saved beside the store
    m2 = make()
    m2.write_batch([_alert(3, ts=2_000)])  # u1 fires again after the restart: no new group, no new page
    m2.flush()
    now[0] = 30_000
    m2.flush()
    assert [r for r, _ in sent] == ["new", "new"] and m2.counters["logical_alerts"] == 2
    m2.write_batch([WatermarkMark(10 * 60_000)])  # event time passes resolve_after (5m): both resolve
    m2.flush()
    now[0] = 100_000
    m2.flush()
    assert sorted(r for r, _ in sent[2:]) == ["resolved", "resolved"]
    m2.close()


def test_alert_policy_changes_live(tmp_path):
    from vigil.config.spec import parse_spec
    from vigil.control import plan_changes

    base = {"name": "p", "source": {"kind": "jsonl", "path": "x", "schema": {"key": "k", "time": "t"}},
            "steps": [{"name": "z", "detector": "sliding_zscore", "params": {"field": "v", "window": "60s"}}],
            "alerting": {"route": {"group_wait": "30s"}}}
    new = {**base, "alerting": {"route": {"group_wait": "5s"}, "inhibit_rules": []}}
    plan = plan_changes(parse_spec(base), parse_spec(new))
    assert plan.ok and plan.alerting == new["alerting"]
    bad = {**base, "alerting": {"route": {"group_wait": "later"}}}
    assert not plan_changes(parse_spec(base), parse_spec(bad)).ok
    now = [0]
    m = ManagedAlerts(base["alerting"], pipeline="p", store_path=tmp_path / "a.db", clock=lambda: now[0],
                      tick_interval_s=None, notifiers={"default": []})
    m.write_batch([_alert(1)])
    m.flush()
    m.set_policy(new["alerting"])  # what `vigil apply` does to a running pipeline
    assert m.counters["logical_alerts"] == 1 and m.policy.route.group_wait_ms == 5_000
    m.close()


def _burst_pipeline(managed, keys=("u1", "u2", "u3"), t0=1_700_000_000_000):
    """Six payments of each key within a second: one velocity alert per key, then the input ends."""
    from vigil.dataflow.pipeline import Pipeline
    from vigil.detectors import VelocityRule
    from vigil.io.memory import MemorySource

    rows = [(k, t0 + 100 * i + j) for i in range(6) for j, k in enumerate(keys)]
    src = MemorySource({"key": [k for k, _ in rows], "ts_ms": [t for _, t in rows], "amount": [1.0] * len(rows)})
    return (Pipeline("p").source(src).watermark("0s", idle_timeout=None)
            .detect("burst", VelocityRule(window="60s", max_count=5)).alerts_to(managed))  # fmt: skip


class _Rec:
    name = "rec"

    def __init__(self):
        self.sent = []

    def send(self, n):
        self.sent.append(n)

    def close(self):
        pass


def test_a_finished_run_resolves_every_alert_it_raised(tmp_path):
    """At the end of a finite input the watermark reaches the end of time: nothing stays firing forever."""
    rec = _Rec()
    managed = ManagedAlerts({"clock": "event", "resolve_after": "5m", "route": {"group_wait": "0s",
                                                                              "group_interval": "1s"}},
                            pipeline="p", store_path=tmp_path / "a.db", tick_interval_s=None,
                            notifiers={"default": [rec]})  # fmt: skip
    st = EmbeddedRunner(_burst_pipeline(managed), out_dir=str(tmp_path)).run()
    assert st.alerts == 3
    rows = AlertStore(tmp_path / "a.db").alerts()
    assert [r["status"] for r in rows] == ["resolved"] * 3
    assert all(r["ends_at_ms"] == r["last_alert"]["event_ts_ms"] + 300_000 for r in rows)  # its resolve_after
    assert sorted(n.reason for n in rec.sent) == ["new"] * 3 + ["resolved"] * 3  # and the receivers are told
    assert len(managed.manager) == 0  # settled and over: forgotten in memory, kept in the store


def test_a_stopped_run_leaves_its_alerts_firing(tmp_path):
    """Stopping is not the end of the input: a restart goes on with the alerts still open."""
    managed = ManagedAlerts({"clock": "event"}, pipeline="p", store_path=tmp_path / "a.db", tick_interval_s=None,
                            notifiers={"default": []})
    runner = EmbeddedRunner(_burst_pipeline(managed), out_dir=str(tmp_path))
    runner.taps = (lambda *_: runner.stop(),)  # stop after the first batch: the source still has data
    runner.run()
    assert {r["status"] for r in AlertStore(tmp_path / "a.db").alerts()} <= {"firing"}


def test_alerting_without_group_by_groups_per_detector_and_key(tmp_path):
    """`alerting:` with receivers but no route: one group per card holder and detector, as the default policy."""
    from vigil.alerting.runtime import DEFAULT_GROUP_BY
    from vigil.worker import DEFAULT_POLICY

    rec = _Rec()
    managed = ManagedAlerts({"clock": "event", "receivers": [{"name": "ops"}], "route": {"group_wait": "0s"}},
                            pipeline="p", store_path=tmp_path / "a.db", tick_interval_s=None,
                            notifiers={"ops": [rec]})  # fmt: skip
    assert managed.policy.tree.group_by == DEFAULT_GROUP_BY == tuple(DEFAULT_POLICY["route"]["group_by"])
    EmbeddedRunner(_burst_pipeline(managed), out_dir=str(tmp_path)).run()
    new = [n for n in rec.sent if n.reason == "new"]
    assert sorted(n.group_labels["key"] for n in new) == ["u1", "u2", "u3"]
    assert all(len(n.alerts) == 1 and n.group_labels["alertname"] == "burst" for n in new)
    explicit = ManagedAlerts({"route": {"group_by": ["alertname"]}}, pipeline="p", store_path=tmp_path / "b.db")
    assert explicit.policy.tree.group_by == ("alertname",)  # what a policy says is kept
