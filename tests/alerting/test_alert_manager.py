"""The alert manager: grouping timing, dedup, resolution, inhibition, silences, routing, flaps, acks, revisions,
snapshot/restore, idempotency, the policy's config errors, and the dispatcher. Time is a manual clock throughout."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vigil.alerting.manager import AlertManager, Dispatcher, labels_of
from vigil.alerting.notification import fingerprint
from vigil.alerting.policy import AlertPolicy, Matcher
from vigil.alerting.store import AlertStore
from vigil.errors import ConfigError, NotifyError, SnapshotError
from vigil.testing.clock import ManualClock as Clock
from vigil.types import Alert

S, M, H = 1000, 60_000, 3_600_000



def alert(key="u1", det="amount_z", ts=0, sev="warning", score=5.0, n=0, labels=None):
    return Alert(f"{det}-{key}-{ts}-{n}", key, f"e{ts}-{n}", det, score, 3.0, ts, ts, severity=sev,
                 labels=dict(labels or {}), message=f"{det} on {key}")


def manager(policy=None, **kw):
    clock = Clock()
    return AlertManager(policy or {}, clock=clock, **kw), clock


def fp_of(a, pipeline=""):
    return fingerprint(labels_of(a, pipeline))


def run_until(m, clock, t, step=S):
    """Tick every `step` ms up to t (inclusive); return [(time, notification)]."""
    out = []
    while clock.t < t:
        clock.t = min(clock.t + step, t)
        out += [(clock.t, n) for n in m.tick()]
    return out


def test_group_wait_interval_and_repeat_timing():
    m, clock = manager({"route": {"receiver": "default", "group_wait": "30s", "group_interval": "5m",
                                  "repeat_interval": "4h"}})
    m.ingest([alert("u1", ts=0)])
    assert m.tick(29_999) == []
    [n] = m.tick(30 * S)
    assert (n.reason, n.status, n.receiver, [a.labels["key"] for a in n.alerts]) == ("new", "firing", "default", ["u1"])
    clock.t = 60 * S
    m.ingest([alert("u2", ts=60 * S)])  # same alertname -> same group; batched until group_interval
    assert m.tick(60 * S) == [] and m.tick(330 * S - 1) == []
    [n] = m.tick(330 * S)
    assert n.reason == "update" and sorted(a.labels["key"] for a in n.alerts) == ["u1", "u2"]
    clock.t = 330 * S
    sent = run_until(m, clock, 330 * S + 4 * H, step=5 * M)
    assert [(t, n.reason) for t, n in sent] == [(330 * S + 4 * H, "repeat")]


def test_dedup_one_logical_alert_per_detector_and_key():
    m, clock = manager()
    m.ingest([alert("u1", ts=t, n=t) for t in range(0, 100_000, 1000)])
    m.ingest([alert("u1", ts=500, n=999)])  # an older observation doesn't replace the latest
    [a] = m.alerts()
    assert a.observations == 101 and a.last["event_ts_ms"] == 99_000 and a.status == "firing"
    assert m.counters["raw_alerts_in"] == 101 and m.counters["logical_alerts"] == 1
    assert m.counters["suppressed_dedup"] == 100
    assert len(run_until(m, clock, 10 * M)) == 1


def test_resolve_after_in_event_time_then_refire_is_a_new_episode():
    m, clock = manager({"resolve_after": "5m", "route": {"receiver": "default", "group_wait": "0s",
                                                          "group_interval": "1s"}})
    m.ingest([alert(ts=1000)])
    [first] = m.tick(0)
    m.advance(1000 + 5 * M - 1)
    assert m.alerts()[0].status == "firing"
    m.advance(1000 + 5 * M)
    [a] = m.alerts()
    assert (a.status, a.ends_at_ms) == ("resolved", 1000 + 5 * M)
    [res] = m.tick(1 * S)
    assert (res.reason, res.status, res.alerts[0].status) == ("resolved", "resolved", "resolved")
    assert m.tick(5 * S) == []  # told; the group is gone
    m.ingest([alert(ts=10 * M)], now_ms=10 * S)
    [again] = m.tick(10 * S)
    assert again.reason == "new" and again.idempotency_key != first.idempotency_key
    assert [h["reason"] for h in m.alerts()[0].history] == ["fired", "resolved", "fired"]


def test_inhibition_critical_mutes_warning_on_same_key():
    policy = {"route": {"receiver": "default", "group_by": ["alertname", "key"], "group_wait": "0s",
                        "group_interval": "1s"},
              "inhibit_rules": [{"source_matchers": ["severity=critical"], "target_matchers": ["severity=warning"],
                                 "equal": ["key"]}]}
    m, clock = manager(policy)
    crit = alert("u1", det="velocity", sev="critical")
    m.ingest([alert("u1", det="amount_z"), crit, alert("u2", det="amount_z")])
    sent = m.tick(0)
    assert sorted((n.group_labels["alertname"], n.group_labels["key"]) for n in sent) == [
        ("amount_z", "u2"), ("velocity", "u1")]
    state = {a.labels["key"] + a.labels["alertname"]: a for a in m.alerts()}
    assert state["u1amount_z"].inhibited_by == [fp_of(crit)] and state["u2amount_z"].inhibited_by == []
    assert state["u1velocity"].inhibited_by == []  # a source doesn't inhibit itself
    assert m.counters["suppressed_inhibited"] == 1
    m.resolve(fp_of(crit), at_ms=10)
    sent = m.tick(1 * S)
    assert sorted((n.reason, n.group_labels["alertname"], n.group_labels["key"]) for n in sent) == [
        ("new", "amount_z", "u1"), ("resolved", "velocity", "u1")]


def test_silence_mutes_then_expires_by_clock_and_explicitly():
    m, clock = manager({"route": {"receiver": "default", "group_by": ["key"], "group_wait": "0s",
                                  "group_interval": "1m"}})
    sid = m.add_silence(["key=u1"], ends_ms=10 * M, created_by="ana", comment="card replaced")
    m.ingest([alert("u1"), alert("u2")])
    assert [n.group_labels for n in m.tick(0)] == [{"key": "u2"}]
    assert m.counters["suppressed_silenced"] == 1
    assert [a.silenced_by for a in m.alerts(silenced=True)] == [[sid]]
    assert run_until(m, clock, 10 * M - S) == []
    [(t, n)] = run_until(m, clock, 12 * M)
    assert (t, n.reason, n.group_labels) == (10 * M, "new", {"key": "u1"})
    assert m.silences() == [] and m.silences(active_only=False)[0]["id"] == sid
    sid2 = m.add_silence(["key=~u.*"], ends_ms=24 * H, created_by="ana", comment="maintenance")
    m.ingest([alert("u3", ts=1)])
    assert run_until(m, clock, 20 * M) == []
    assert m.expire_silence(sid2) and not m.expire_silence(sid2)
    assert [n.group_labels for _, n in run_until(m, clock, 22 * M)] == [{"key": "u3"}]


def test_silence_added_by_another_store_handle_takes_effect_at_next_tick(tmp_path):
    db = tmp_path / "alerts.db"
    m, clock = manager({"route": {"receiver": "default", "group_by": ["key"], "group_wait": "30s",
                                  "group_interval": "1m"}}, store=AlertStore(db))
    m.ingest([alert("u1"), alert("u2")])
    cli = AlertStore(db)  # what `vigil silence add` does, from another process
    sid = cli.add_silence(["key=u1"], starts_ms=0, ends_ms=H, created_by="ana", comment="known", now_ms=0)
    assert [n.group_labels for n in m.tick(30 * S)] == [{"key": "u2"}]
    assert [s["id"] for s in m.silences()] == [sid]
    cli.expire_silence(sid, now_ms=60 * S)
    clock.t = 90 * S
    assert [n.group_labels for n in m.tick()] == [{"key": "u1"}]
    rows = {r["labels"]["key"]: r for r in cli.alerts()}
    assert rows["u1"]["status"] == "firing" and rows["u1"]["observations"] == 1
    cli.close()


def test_routing_continue_and_nested_inheritance():
    policy = {
        "route": {"receiver": "ops", "group_by": ["key"], "group_wait": "30s", "group_interval": "1m", "routes": [
            {"matchers": ["severity=critical"], "receiver": "pager", "continue": True, "routes": [
                {"matchers": ["key=~vip.*"], "group_wait": "5s"}]},
            {"matchers": ["alertname=velocity"], "receiver": "fraud"},
            {"matchers": ["alertname=velocity"], "receiver": "never"}]},
        "receivers": ["ops", "pager", "fraud", "never"]}
    m, clock = manager(policy)
    m.ingest([alert("vip1", det="velocity", sev="critical"), alert("u2", det="amount_z", sev="critical"),
              alert("u3", det="amount_z")])
    routes = {a.labels["key"]: a.receivers for a in m.alerts()}
    assert routes == {"vip1": ["pager", "fraud"], "u2": ["pager"], "u3": ["ops"]}
    assert [(n.receiver, n.group_labels["key"]) for n in m.tick(5 * S)] == [("pager", "vip1")]  # inherited + own wait
    assert sorted((n.receiver, n.group_labels["key"]) for n in m.tick(30 * S)) == [
        ("fraud", "vip1"), ("ops", "u3"), ("pager", "u2")]
    tree = m.policy.tree
    assert tree.children[0].children[0].receiver == "pager" and tree.children[0].children[0].group_by == ("key",)
    assert tree.children[0].children[0].group_interval_ms == 60_000


def flapping_run(flap, flips=6):
    m, clock = manager({"route": {"receiver": "default", "group_wait": "0s", "group_interval": "1s"},
                        "flap": flap, "resolve_after": "1h"})
    a = alert(ts=0)
    fp = fp_of(a)
    m.ingest([a], now_ms=0)
    sent = [n for n in m.tick(0)]
    for i in range(1, flips + 1):  # one flip a minute: resolve, fire, resolve, ...
        t = i * M
        clock.t = t
        if i % 2:
            m.resolve(fp, at_ms=t)
        else:
            m.ingest([alert(ts=t)])
        m.advance(t)
        sent += m.tick()
    return m, clock, fp, sent


def test_flap_damping_holds_notifications_until_stable():
    _, _, _, undamped = flapping_run(None)
    assert len(undamped) == 7
    m, clock, fp, sent = flapping_run({"window": "10m", "threshold": 2, "hold": "5m"})  # ends firing
    assert [n.reason for n in sent] == ["new", "resolved"]
    assert m.alerts()[0].flapping and m.counters["suppressed_flapping"] == 3  # the 3 firings while flapping
    for t in range(7, 15):
        clock.t = t * M
        m.advance(t * M)
        sent += [(t, n.reason, n.alerts[0].status) for n in m.tick()]
    # stable for `hold` after the last flip at 6m: one notification with its current state (a new group: the
    # old one ended when its resolution was told)
    assert sent[2:] == [(11, "new", "firing")] and not m.alerts()[0].flapping


def test_flap_that_ends_where_it_was_told_sends_nothing_more():
    m, clock, fp, sent = flapping_run({"window": "10m", "threshold": 2, "hold": "5m"}, flips=5)  # ends resolved
    for t in range(6, 20):
        clock.t = t * M
        m.advance(t * M)
        sent += m.tick()
    assert [n.reason for n in sent] == ["new", "resolved"] and not m.alerts()[0].flapping


def test_acks_stop_repeats_until_the_alert_fires_again():
    m, clock = manager({"route": {"receiver": "default", "group_wait": "0s", "group_interval": "1m",
                                  "repeat_interval": "10m"}, "resolve_after": "1h"})
    a = alert(ts=0)
    m.ingest([a])
    assert [n.reason for n in m.tick(0)] == ["new"]
    m.ack(fp_of(a), "ana", "on it")
    assert m.alerts()[0].acked["by"] == "ana"
    assert run_until(m, clock, 30 * M, step=M) == []
    m.ingest([alert("u2", ts=30 * M)])  # an unacked alert joins the group: repeats come back
    reasons = [n.reason for _, n in run_until(m, clock, 45 * M, step=M)]
    assert reasons == ["update", "repeat"]
    m.advance(2 * H)  # both resolve; u1 fires again and its old ack no longer counts
    m.ingest([alert(ts=2 * H)], now_ms=clock.t)
    assert m.alerts(key="u1")[0].acked is None


def test_revise_and_retract_keep_history(tmp_path):
    store = AlertStore(tmp_path / "a.db")
    m, clock = manager({"route": {"receiver": "default", "group_wait": "0s", "group_interval": "1s"}},
                       store=store)
    a = alert(ts=0, score=5.0)
    fp = fp_of(a)
    m.ingest([a])
    m.tick(0)
    assert m.revise(alert(ts=0, score=9.0), now_ms=500) == fp
    [n] = m.tick(1 * S)
    assert (n.reason, n.alerts[0].revision, n.alerts[0].alert["score"]) == ("revised", 2, 9.0)
    m.retract(fp, at_ms=2 * S, why="late events showed a refund")
    [n] = m.tick(2 * S)
    assert (n.reason, n.alerts[0].status) == ("retracted", "retracted")
    assert n.alerts[0].annotations["retraction"] == "late events showed a refund"
    [st_] = m.alerts()
    assert [(h["reason"], h["revision"], h["status"]) for h in st_.history] == [
        ("fired", 1, "firing"), ("revised", 2, "firing"), ("retracted", 2, "retracted")]
    assert [r["reason"] for r in store.revisions(fp)] == ["fired", "revised", "retracted"]
    assert store.alert(fp)["status"] == "retracted"


SCRIPT = [("ingest", 0, ["u1", "u2"]), ("tick", 30 * S), ("ingest", 40 * S, ["u3"]), ("advance", 40 * S),
          ("tick", 5 * M), ("ingest", 6 * M, ["u1", "c1!"]), ("silence", 6 * M, "key=u2"), ("advance", 7 * M),
          ("tick", 10 * M), ("resolve_u3", 11 * M), ("tick", 15 * M), ("advance", 20 * M), ("tick", 20 * M),
          ("tick", 25 * M), ("ingest", 26 * M, ["u2", "u4"]), ("tick", 30 * M), ("tick", 35 * M),
          ("advance", 60 * M), ("tick", 60 * M)]  # fmt: skip
SCRIPT += [step for t in range(61 * M, 140 * M, 5 * M)
           for step in (("ingest", t, ["c2!"]), ("advance", t), ("tick", t))]  # a critical that keeps firing


def play(m, clock, steps):
    out = []
    for op, t, *args in steps:
        clock.t = t
        if op == "ingest":
            m.ingest([alert(k.rstrip("!"), ts=t, sev="critical" if k.endswith("!") else "warning") for k in args[0]])
        elif op == "tick":
            out += [(n.receiver, n.group_key, n.reason, n.idempotency_key, n.created_ms,
                     [(a.fingerprint, a.status, a.revision, a.annotations["observations"]) for a in n.alerts])
                    for n in m.tick()]
        elif op == "advance":
            m.advance(t)
        elif op == "silence":
            m.add_silence([args[0]], ends_ms=t + 30 * M, created_by="t", comment="x")
        elif op == "resolve_u3":
            m.resolve(fp_of(alert("u3")), at_ms=t)
    return out


POLICY = {"route": {"receiver": "default", "group_by": ["severity"], "group_wait": "30s", "group_interval": "5m",
                    "repeat_interval": "1h"}, "resolve_after": "10m"}


def test_snapshot_restore_gives_the_same_notifications_as_an_uninterrupted_run():
    m, clock = manager(POLICY)
    whole = play(m, clock, SCRIPT)
    assert {r for _, _, r, *_ in whole} >= {"new", "update", "resolved", "repeat"}
    for cut in range(1, len(SCRIPT)):
        m1, c1 = manager(POLICY)
        first = play(m1, c1, SCRIPT[:cut])
        snap = json.loads(json.dumps(m1.snapshot()))
        m2, c2 = manager(POLICY)
        c2.t = c1.t
        m2.restore(snap)
        assert first + play(m2, c2, SCRIPT[cut:]) == whole, cut
        assert m2.counters == m.counters


def test_restore_rejects_a_foreign_snapshot():
    m, _ = manager()
    with pytest.raises(SnapshotError, match="alert manager snapshot"):
        m.restore({"kind": "zscore", "version": 1, "state": {}})


def test_idempotency_keys_are_stable_and_content_addressed():
    runs = [play(*manager(POLICY), SCRIPT) for _ in range(2)]
    assert [r[3] for r in runs[0]] == [r[3] for r in runs[1]]
    keys = [r[3] for r in runs[0]]
    assert len(set(keys)) == len(keys)  # different content (or a later repeat) -> different key
    other, _ = manager({**POLICY, "route": {**POLICY["route"], "receiver": "default"}}, pipeline="fraud")
    other.ingest([alert("u1")])
    assert other.tick(30 * S)[0].idempotency_key != runs[0][0][3]


ops = st.lists(st.one_of(
    st.tuples(st.just("ingest"), st.sampled_from(["u1", "u2", "u3"]), st.sampled_from(["warning", "critical"])),
    st.tuples(st.just("silence"), st.sampled_from(["u1", "u2", "u3"]), st.integers(1, 20)),
    st.tuples(st.just("expire"), st.integers(0, 5)),
    st.tuples(st.just("wait"), st.integers(1, 120)),
    st.tuples(st.just("wait"), st.integers(1, 120)),
), min_size=5, max_size=60)


@settings(max_examples=60, deadline=None)
@given(ops)
def test_property_no_silenced_or_inhibited_alert_is_ever_notified(steps):
    m, clock = manager({"route": {"receiver": "default", "group_by": ["key"], "group_wait": "10s",
                                  "group_interval": "30s", "repeat_interval": "2m"}, "resolve_after": "3m",
                        "flap": None, "inhibit_rules": [{"source_matchers": ["severity=critical"],
                                                         "target_matchers": ["severity=warning"], "equal": ["key"]}]})
    silences = []
    for step in steps:
        if step[0] == "ingest":
            m.ingest([alert(step[1], ts=clock.t, sev=step[2])])
        elif step[0] == "silence":
            silences.append(m.add_silence([f"key={step[1]}"], ends_ms=clock.t + step[2] * 10 * S, created_by="p",
                                          comment="p"))
        elif step[0] == "expire" and silences:
            m.expire_silence(silences[step[1] % len(silences)])
        else:
            clock.t += step[1] * S
            m.advance(clock.t)
        active = [Matcher.parse(s["matchers"][0]) for s in m.silences()]
        sent = m.tick()
        states = m.alerts()
        inhibited = {s.fingerprint for s in states if s.inhibited_by}
        for n in sent:
            fps = [a.fingerprint for a in n.alerts]
            assert len(fps) == len(set(fps))
            for a in n.alerts:
                assert not any(x.matches(a.labels) for x in active)
                assert a.fingerprint not in inhibited
        assert len({s.fingerprint for s in states}) == len(states)
        assert all(s.fingerprint == fingerprint(s.labels) for s in states)


@pytest.mark.parametrize(("policy", "message"), [
    ({"route": {"routes": [{}, {"group_wait": "soon"}]}},
     "`alerting.route.routes[1].group_wait` is not a duration; got 'soon'"),
    ({"route": {"receiver": "pager"}}, "`alerting.route.receiver` is not a declared receiver; got 'pager'"),
    ({"route": {"receiver": "default", "routes": [{"matchers": ["1abc=x"]}]}},
     "`alerting.route.routes[0].matchers[0]`"),
    ({"route": {"receiver": "default", "routes": [{"matchers": ["key=~(u1"]}]}},
     "invalid regular expression"),
    ({"inhibit_rules": [{"source_matchers": ["severity"]}]},
     "`alerting.inhibit_rules[0].source_matchers[0]` is not a matcher"),
    ({"flap": {"window": "-1s"}}, "`alerting.flap.window` is not a duration; got '-1s'"),
    ({"resolve_after": 0}, "`alerting.resolve_after` must be > 0; got 0"),
    ({"route": {"receiver": "default", "grup_by": ["key"]}}, "did you mean `group_by`?"),
    ({"receivers": ["default", {"name": "default"}]}, "`alerting.receivers[1].name` is declared twice"),
    ({"route": {"receiver": "default", "group_by": ["...", "key"]}}, "`alerting.route.group_by` can't mix"),
])
def test_policy_errors_name_field_and_value(policy, message):
    with pytest.raises(ConfigError) as exc:
        AlertPolicy.from_dict(policy)
    assert message in str(exc.value)


def test_policy_from_yaml_keeps_receiver_config_and_continue_key(tmp_path):
    p = tmp_path / "policy.yaml"
    p.write_text("alerting:\n  route:\n    receiver: hook\n    routes:\n      - matchers: ['severity=critical']\n"
                 "        continue: true\n  receivers:\n    - {name: hook, type: webhook, url: 'http://x'}\n")
    pol = AlertPolicy.from_yaml(str(p))
    assert pol.receiver("hook").config == {"type": "webhook", "url": "http://x"}
    assert pol.tree.children[0].continue_ and pol.tree.children[0].receiver == "hook"
    assert pol.tree.group_wait_ms == 30_000 and pol.flap.threshold == 4


def test_silence_needs_valid_matchers_and_an_end_after_its_start():
    m, _ = manager()
    with pytest.raises(ConfigError, match=r"`matchers\[0\]` is not a matcher"):
        m.add_silence(["key"], ends_ms=10, created_by="a", comment="c")
    with pytest.raises(ConfigError, match="`ends_ms` must be after the start"):
        m.add_silence(["key=u1"], starts_ms=10, ends_ms=10, created_by="a", comment="c")


class FakeNotifier:
    def __init__(self, name, fail=None):
        self.name, self.fail, self.got = name, fail, []

    def send(self, n):
        if self.fail:
            raise self.fail
        self.got.append(n.idempotency_key)

    def close(self):
        pass


def test_dispatcher_counts_and_logs_failures_and_never_raises(tmp_path):
    store = AlertStore(tmp_path / "a.db")
    m, clock = manager({"route": {"receiver": "team", "group_by": ["key"], "group_wait": "0s",
                                  "routes": [{"matchers": ["key=u9"], "receiver": "nobody"}]},
                        "receivers": ["team", "nobody"]})
    m.ingest([alert("u1"), alert("u9")])
    notes = m.tick(0)
    ok, bad, buggy = FakeNotifier("ok"), FakeNotifier("bad", NotifyError("503 after 3 tries")), \
        FakeNotifier("buggy", RuntimeError("oops"))
    d = Dispatcher({"team": [ok, bad, buggy]}, store=store, clock=clock)
    report = d.deliver(notes)
    assert (report.sent, report.failed, report.unrouted) == (1, 2, 1)
    assert {e["notifier"]: e["error"] for e in report.errors} == {"bad": "503 after 3 tries",
                                                                  "buggy": "RuntimeError: oops"}
    log = {r["receiver"]: r for r in store.notifications()}
    assert log["team"]["status"] == "failed" and "503" in log["team"]["error"]
    assert log["nobody"]["status"] == "unrouted"
    d.close()


def test_an_ack_from_another_process_stops_repeats(tmp_path):
    db = tmp_path / "alerts.db"
    m, clock = manager({"route": {"receiver": "default", "group_wait": "0s", "group_interval": "1m",
                                  "repeat_interval": "5m"}, "resolve_after": "1h"}, store=AlertStore(db))
    a = alert(ts=0)
    m.ingest([a])
    assert [n.reason for n in m.tick(0)] == ["new"]
    assert [n.reason for _, n in run_until(m, clock, 5 * M, step=M)] == ["repeat"]
    AlertStore(db).add_ack(fp_of(a), "ana", "on it", 5 * M)  # `vigil alerts ack`
    assert run_until(m, clock, 30 * M, step=M) == []
    assert m.alerts()[0].acked == {"by": "ana", "comment": "on it", "at_ms": 5 * M}


def test_resolved_alerts_are_forgotten_after_retain_resolved_but_kept_in_the_store(tmp_path):
    store = AlertStore(tmp_path / "a.db")
    m, clock = manager({"resolve_after": "1m", "retain_resolved": "10m", "flap": None,
                        "route": {"receiver": "default", "group_wait": "0s"}}, store=store)
    m.ingest([alert(ts=0)])
    m.tick(0)
    m.advance(M)
    m.tick(5 * M)  # the resolution is told
    m.advance(5 * M)
    assert len(m.alerts()) == 1
    m.advance(12 * M)
    assert m.alerts() == [] and store.alerts()[0]["status"] == "resolved"


# -- storms: bounded, batched, incremental ------------------------------------------------------------------------


def test_a_full_group_counts_what_it_leaves_out_and_says_so(tmp_path):
    store = AlertStore(tmp_path / "a.db")
    m, clock = manager({"group_limit": 3, "route": {"receiver": "default", "group_by": ["alertname"],
                                                    "group_wait": "0s"}}, store=store)  # fmt: skip
    m.ingest([alert(f"u{i}", ts=i) for i in range(5)])
    [n] = m.tick(0)
    assert len(n.alerts) == 3 and n.truncated == 2 and m.counters["group_overflow"] == 2
    assert len(store.alerts()) == 5  # left out of the notification, never out of the record
    m.ingest([alert("u9", ts=10)])
    assert m.counters["group_overflow"] == 3 and [n.truncated for _, n in run_until(m, clock, 10 * M, step=M)] == [1]


def test_the_history_is_a_function_of_event_time_not_of_how_alerts_and_watermarks_were_batched():
    pol = {"resolve_after": "5m", "route": {"receiver": "default", "group_wait": "0s"}}
    a, _ = manager(pol)
    a.ingest([alert(ts=0)])
    a.advance(6 * M)  # the watermark passed the deadline before the next alert came
    a.ingest([alert(ts=6 * M, n=1)])
    b, _ = manager(pol)
    b.ingest([alert(ts=6 * M, n=1), alert(ts=0)])  # both in one batch, out of order, no watermark in between
    for m in (a, b):
        [s] = m.alerts()
        assert [(h["reason"], h["at_ms"]) for h in s.history] == [("fired", 0), ("resolved", 5 * M), ("fired", 6 * M)]
        assert (s.status, s.starts_at_ms, s.observations) == ("firing", 6 * M, 2)


def test_past_retain_resolved_an_alert_starts_anew_whether_or_not_it_was_forgotten_yet():
    pol = {"resolve_after": "1m", "retain_resolved": "10m", "flap": None,
           "route": {"receiver": "default", "group_wait": "0s"}}  # fmt: skip
    told, _ = manager(pol)
    untold, _ = manager(pol)
    for m in (told, untold):
        m.ingest([alert(ts=0)], now_ms=0)
        m.advance(2 * M)
    told.tick(1)  # its groups told the resolution: forgotten when the watermark passes 11m
    told.tick(2)
    for m in (told, untold):
        m.advance(20 * M)
    assert len(told) == 0 and len(untold) == 1  # the untold one waits for its group to settle
    for m in (told, untold):
        m.ingest([alert(ts=20 * M, n=1)], now_ms=3)
        [s] = m.alerts()
        assert (s.revision, s.observations, [h["reason"] for h in s.history]) == (1, 1, ["fired"])
        assert m.counters["logical_alerts"] == 2


def test_rows_are_written_once_per_persist_not_per_call(tmp_path):
    store = AlertStore(tmp_path / "a.db")
    calls = []
    real = store.write_manager
    store.write_manager = lambda *a, **k: calls.append(1) or real(*a, **k)
    m, clock = manager({"route": {"receiver": "default", "group_wait": "0s"}}, store=store, autopersist=False)
    m.ingest([alert(f"u{i}", ts=i) for i in range(100)])
    m.advance(10 * M)
    m.tick(0)
    assert calls == [] and store.alerts() == []
    m.persist()
    assert calls == [1] and len(store.alerts()) == 100
    assert len({r["last_alert"]["id"] for r in store.alerts()}) == 100
    assert {r["status"] for r in store.alerts()} == {"resolved"}  # the latest state, in one write
    m.persist()
    assert calls == [1]  # nothing changed, nothing written


def test_state_saved_by_checkpoint_sequence_comes_back_exactly_and_later_writes_are_rolled_back(tmp_path):
    """A restart from checkpoint n: the manager as it was at n, the store without what was written after n."""
    db = tmp_path / "a.db"
    ref, ref_clock = manager(POLICY, store=AlertStore(tmp_path / "ref.db"))
    whole = play(ref, ref_clock, SCRIPT)
    cut = len(SCRIPT) // 2
    m1, c1 = manager(POLICY, store=AlertStore(db))
    first = play(m1, c1, SCRIPT[:cut])
    m1.save_state(7)
    revisions_at_7 = {r["fingerprint"]: len(AlertStore(db).revisions(r["fingerprint"])) for r in AlertStore(db).alerts()}
    play(m1, c1, SCRIPT[cut:cut + 6])  # went on after the checkpoint, then crashed
    m2, c2 = manager(POLICY, store=AlertStore(db))
    c2.t = SCRIPT[cut - 1][1]
    m2.load_state(7, rollback=True)
    assert {fp: len(AlertStore(db).revisions(fp)) for fp in revisions_at_7} == revisions_at_7
    assert first + play(m2, c2, SCRIPT[cut:]) == whole
    assert m2.counters == ref.counters
    history = lambda path: sorted((r["fingerprint"], r["revision"], r["status"], r["reason"], r["at_ms"])  # noqa: E731
                                  for a in AlertStore(path).alerts() for r in AlertStore(path).revisions(a["fingerprint"]))
    assert history(db) == history(tmp_path / "ref.db")  # every change recorded once


def test_forgotten_alerts_leave_nothing_in_memory(tmp_path):
    m, clock = manager({"resolve_after": "1m", "retain_resolved": "5m", "flap": None,
                        "route": {"receiver": "default", "group_by": ["key"], "group_wait": "0s",
                                  "group_interval": "1s"}}, store=AlertStore(tmp_path / "a.db"))  # fmt: skip
    m.ingest([alert(f"u{i}", ts=i) for i in range(2_000)])
    assert len(m.tick(0)) == 2_000
    m.advance(2 * M)
    assert len(m.tick(S)) == 2_000  # resolved, and told: every group settled
    m.advance(10 * M)
    assert len(m) == 0 and m._groups == {} and m.counters["forgotten"] == 2_000
    assert len(AlertStore(tmp_path / "a.db").alerts()) == 2_000


PER_KEY = {"route": {"receiver": "default", "group_by": ["key"], "group_wait": "1h"}}


def test_a_save_writes_only_what_changed_and_keeps_only_the_versions_a_checkpoint_needs(tmp_path):
    """Incremental state: a storm's second save doesn't rewrite the first; old versions go once no checkpoint
    needs them; the state as of each kept checkpoint comes back."""
    store = AlertStore(tmp_path / "a.db")
    m, clock = manager(PER_KEY, store=store, autopersist=False)
    rows = lambda: store._db.execute("SELECT count(*) FROM manager_state").fetchone()[0]  # noqa: E731
    m.ingest([alert(f"u{i}", ts=i) for i in range(1_000)])
    m.save_state(1, keep_from=1)
    first = rows()
    assert first == 2 * 1_000 + 1  # an alert and its group each, and the counters
    m.ingest([alert("u7", ts=5 * S)])  # one more observation of one alert
    m.save_state(2, keep_from=1)
    assert rows() == first + 2  # that alert's new version and the counters; no group changed

    def observations(seq):
        m2, _ = manager(PER_KEY, store=store, autopersist=False)
        m2.load_state(seq)
        return {s.labels["key"]: s.observations for s in m2.alerts()}["u7"]

    assert (observations(1), observations(2)) == (1, 2)  # each kept checkpoint's state comes back
    m.ingest([alert("u7", ts=6 * S)])
    m.save_state(3, keep_from=3)  # checkpoints before 3 are gone: so are the versions only they needed
    assert rows() == first and observations(3) == 3
