"""The web console's API against a real served app (uvicorn on 127.0.0.1, httpx): the token, the cookie, security
headers, the body limit, acks/labels/silences persisted in SQLite, the feedback export, explanations, the stream
recorder (bounded, LRU) and the `vigil console` command."""

import csv
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from urllib.parse import quote

import httpx
import numpy as np
import pytest
from rich.console import Console

from vigil.alerting.manager import AlertManager
from vigil.alerting.notification import fingerprint
from vigil.alerting.store import AlertStore
from vigil.console.app import create_app, explain
from vigil.console.auth import COOKIE_NAME, load_or_create_token
from vigil.console.recorder import StreamRecorder
from vigil.console.server import serve_console
from vigil.detectors.base import Verdicts
from vigil.testing.clock import ManualClock
from vigil.types import Alert, Batch, Contribution

TOKEN = "test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
XSS = "<img src=x onerror=alert(1)>"
T0 = 1_700_000_000_000


def Clock(t=T0):  # noqa: N802 - reads like the class it makes
    return ManualClock(t)



def alerts():
    return [
        Alert("a1", "u1", "e1", "amount_z", 6.5, 3.0, T0, T0, stats={"z": 4.2},
              contributions=[Contribution("country", 6.5), Contribution("amount", 4.2, 412.0, 83.1),
                             Contribution("hour", -1.0)],
              message="amount 412 is 4.2 sd above the usual 83.1"),
        Alert("a2", "web-1", "e2", "k_of_n", 2.0, 2.0, T0 + 1000, T0, severity="critical",
              stats={"metrics": {"cpu": {"z": 2.1, "value": 97.0, "flag": True}, "mem": {"z": -7.3, "flag": True},
                                 "disk": {"z": 0.4, "flag": False}}},
              contributions=[Contribution("cpu", 2.1, 97.0, flag=True), Contribution("mem", -7.3, flag=True),
                             Contribution("disk", 0.4, flag=False)],
              message="web-1: 2 of 3 signals anomalous"),
        Alert("a3", XSS, "e3", "amount_z", 9.0, 3.0, T0 + 2000, T0, stats={"z": 9.0}, message=f"odd {XSS}"),
    ]


def fp(key, det="amount_z", sev="warning"):
    return fingerprint({"alertname": det, "key": key, "severity": sev, "pipeline": "demo"})


@pytest.fixture
def console(tmp_path):
    """A served console over a store holding three alerts (one per key); yields (client, store path, manager)."""
    path = tmp_path / "alerts.db"
    store = AlertStore(path)
    clock = Clock()
    mgr = AlertManager({"route": {"receiver": "default", "group_by": ["alertname"]}}, store=store, pipeline="demo",
                       clock=clock)
    mgr.ingest(alerts())
    rec = StreamRecorder(max_keys=10, points=50)
    feed(rec, ["u1"] * 5 + ["a/b"] * 3, np.arange(8) * 1000 + T0, [1.0, 2.0, 3.0, 4.0, 50.0, 1.0, 1.0, 9.0],
         [0, 0, 0, 0, 1, 0, 0, 1])
    app = create_app(store=store, manager=mgr, recorder=rec, token=TOKEN, pipeline_name="demo", clock=clock)
    handle, url = serve_console(app)
    with httpx.Client(base_url=url, timeout=30) as client:
        yield client, path, mgr
    handle.stop()
    store.close()


def feed(rec, keys, ts, values, flags):
    n = len(keys)
    flag = np.asarray(flags, bool)
    v = Verdicts(np.abs(np.asarray(values, float)), np.zeros(n), flag, flag, np.ones(n, bool), {})
    rec(Batch(np.zeros(n, np.int32), np.asarray(ts, np.int64), {"x": np.asarray(values, float)}),
        np.asarray(keys, object), {"x_z": v})


# -- the token, the cookie, the headers ----------------------------------------------------------------------


def test_api_needs_the_token(console):
    client, _, _ = console
    r = client.get("/api/health")
    assert r.status_code == 401
    assert r.json()["field"] == "Authorization" and "unauthorized" in r.json()["error"]
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert client.get("/api/health", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/api/health", headers={"Authorization": f"Basic {TOKEN}"}).status_code == 401
    assert client.get("/api/alerts", headers={"Authorization": f"Bearer {TOKEN}x"}).status_code == 401
    for path in ("/api/health", "/api/alerts", "/api/silences", "/api/keys", "/api/feedback/export"):
        assert client.get(path, headers=AUTH).status_code == 200, path


def test_page_login_sets_a_strict_httponly_cookie(console):
    client, _, _ = console
    page = client.get("/")
    assert page.status_code == 401 and "Not signed in" in page.text and "text/html" in page.headers["content-type"]
    assert client.get("/?token=wrong").status_code == 401
    assert COOKIE_NAME not in client.cookies
    r = client.get(f"/?token={TOKEN}")
    assert r.status_code == 303 and r.headers["location"] == "/"
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and TOKEN not in cookie
    page = client.get("/")  # the cookie now signs the page and the API in
    assert page.status_code == 200 and '<script type="module" src="/static/app.js">' in page.text
    assert client.get("/api/health").status_code == 200
    fp1 = fp("u1")
    # a change made with the cookie alone must carry the console's own header (no cross-site form can)
    assert client.post(f"/api/alerts/{fp1}/ack", json={"by": "ana"}).status_code == 403
    r = client.post(f"/api/alerts/{fp1}/ack", json={"by": "ana"}, headers={"X-Vigil-Console": "1"})
    assert r.status_code == 201


def test_security_headers_everywhere(console):
    client, _, _ = console
    for r in (client.get("/"), client.get("/api/health", headers=AUTH), client.get("/static/app.js"),
              client.get("/api/nope", headers=AUTH)):
        assert "default-src 'self'" in r.headers["content-security-policy"]
        assert "unsafe-inline" not in r.headers["content-security-policy"]
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["x-frame-options"] == "DENY"
        assert r.headers["referrer-policy"] == "no-referrer"
    assert client.get("/api/health", headers=AUTH).headers["cache-control"] == "no-store"


def test_static_assets_have_no_inline_script_and_no_innerhtml(console):
    client, _, _ = console
    html = client.get("/", headers=AUTH).text
    assert "<script>" not in html and "onclick" not in html and "style=" not in html
    for name in ("app.js", "dom.js", "chart.js", "live.js", "alerts.js", "alert.js", "silences.js"):
        js = client.get(f"/static/{name}")
        assert js.status_code == 200 and "javascript" in js.headers["content-type"]
        assert not re.search(r"\.(innerHTML|outerHTML|insertAdjacentHTML)\b|document\.write|eval\(", js.text), name
        assert not re.search(r"https?://", js.text.replace("http://www.w3.org/2000/svg", "")), name  # no network


def test_a_body_over_64_kib_is_refused(console):
    client, _, _ = console
    url = f"/api/alerts/{fp('u1')}/ack"
    big = json.dumps({"by": "ana", "comment": "x" * (70 * 1024)})
    r = client.post(url, content=big, headers={**AUTH, "Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["field"] == "Content-Length"

    def chunks():  # streamed without a Content-Length: counted as it arrives
        yield b'{"by": "ana", "comment": "'
        for _ in range(80):
            yield b"y" * 1024
        yield b'"}'

    r = client.post(url, content=chunks(), headers={**AUTH, "Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["field"] == "body"
    r = client.post(url, json={"by": "ana", "comment": "x" * 1000}, headers=AUTH)
    assert r.status_code == 201


def test_connections_send_small_writes_at_once(tmp_path):
    """Nagle's algorithm is off on the console's connections (with it, every answer waited ~40 ms for an ACK)."""
    store = AlertStore(tmp_path / "a.db")
    handle, url = serve_console(create_app(store=store, token=TOKEN, pipeline_name="p"))
    try:
        with httpx.Client(base_url=url, headers=AUTH, timeout=30) as client:
            assert client.get("/api/health").status_code == 200  # the connection stays open (keep-alive)
            conns = list(handle.server.server_state.connections)
            socks = [c.transport.get_extra_info("socket") for c in conns]
            assert socks and all(s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) for s in socks)
    finally:
        handle.stop()
        store.close()


# -- writes persist in the store ------------------------------------------------------------------------------


def test_ack_and_feedback_persist_in_sqlite(console):
    client, path, _ = console
    fp1 = fp("u1")
    r = client.post(f"/api/alerts/{fp1}/ack", json={"by": "ana", "comment": "looking"}, headers=AUTH)
    assert r.status_code == 201 and r.json()["acks"][0]["by"] == "ana"
    r = client.post(f"/api/alerts/{fp1}/feedback", json={"label": "false_positive", "note": "promo day", "by": "ana"},
                    headers=AUTH)
    assert r.status_code == 201
    detail = client.get(f"/api/alerts/{fp1}", headers=AUTH).json()
    assert detail["acked"]["by"] == "ana" and detail["feedback"][0]["label"] == "false_positive"
    with AlertStore(path, create=False) as again:  # a fresh connection: it is on disk
        assert [(a["by"], a["comment"]) for a in again.acks(fp1)] == [("ana", "looking")]
        fb = again.feedback(fp1)
        assert [(f["label"], f["note"], f["by"], f["alert_id"]) for f in fb] == [("false_positive", "promo day",
                                                                                   "ana", "a1")]


def test_feedback_export_csv_and_jsonl(console):
    client, _, _ = console
    client.post(f"/api/alerts/{fp('u1')}/feedback", json={"label": "true_positive", "by": "bo"}, headers=AUTH)
    client.post(f"/api/alerts/{fp(XSS)}/feedback", json={"label": "false_positive", "note": "a, \"quoted\" note"},
                headers=AUTH)
    r = client.get("/api/feedback/export?format=csv", headers=AUTH)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert "attachment" in r.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert [(x["key"], x["label"]) for x in rows] == [("u1", "true_positive"), (XSS, "false_positive")]
    assert rows[1]["note"] == 'a, "quoted" note' and rows[1]["by"] == "console"
    r = client.get("/api/feedback/export?format=jsonl", headers=AUTH)
    assert [json.loads(line)["label"] for line in r.text.splitlines()] == ["true_positive", "false_positive"]
    assert client.get("/api/feedback/export?format=xml", headers=AUTH).status_code == 422


def test_silences_create_list_expire(console):
    client, path, mgr = console
    r = client.post("/api/silences", json={"matchers": ["key=u1", "severity=~warn.*"], "duration": "2h",
                                           "comment": "card replaced", "created_by": "ana"}, headers=AUTH)
    assert r.status_code == 201
    sid = r.json()["id"]
    listed = client.get("/api/silences", headers=AUTH).json()["silences"]
    assert [(s["id"], s["matchers"], s["active"], s["ends_ms"] - s["starts_ms"]) for s in listed] == [
        (sid, ["key=u1", "severity=~warn.*"], True, 2 * 3_600_000)]
    u1 = next(a for a in client.get("/api/alerts", headers=AUTH).json()["alerts"] if a["key"] == "u1")
    assert u1["silenced"] and u1["silenced_by"] == [sid]
    with AlertStore(path, create=False) as again:
        assert [s["comment"] for s in again.silences()] == ["card replaced"]
    assert client.delete(f"/api/silences/{sid}", headers=AUTH).status_code == 200
    assert client.get("/api/silences", headers=AUTH).json()["silences"] == []
    expired = client.get("/api/silences?all=true", headers=AUTH).json()["silences"]
    assert expired[0]["id"] == sid and expired[0]["expired_ms"] is not None and not expired[0]["active"]
    r = client.delete(f"/api/silences?id={sid}", headers=AUTH)
    assert r.status_code == 404 and r.json() == {"error": "no unexpired silence with this id", "field": "id",
                                                 "value": sid}


def test_bad_requests_name_the_field_and_value(console):
    client, _, _ = console
    r = client.post("/api/silences", json={"matchers": ["key"], "duration": "2h"}, headers=AUTH)
    assert r.status_code == 400 and r.json()["field"] == "matchers[0]" and r.json()["value"] == "key"
    r = client.post("/api/silences", json={"matchers": ["key=u1"], "duration": "soon"}, headers=AUTH)
    assert r.status_code == 422 and (r.json()["field"], r.json()["value"]) == ("duration", "soon")
    r = client.post("/api/silences", json={"matchers": [], "duration": "1h"}, headers=AUTH)
    assert r.status_code == 422 and r.json()["field"] == "matchers"
    r = client.post(f"/api/alerts/{fp('u1')}/feedback", json={"label": "maybe"}, headers=AUTH)
    assert r.status_code == 422 and (r.json()["field"], r.json()["value"]) == ("label", "maybe")
    r = client.post(f"/api/alerts/{fp('u1')}/ack", json={"by": "b" * 101}, headers=AUTH)
    assert r.status_code == 422 and r.json()["field"] == "by"
    r = client.post(f"/api/alerts/{fp('u1')}/ack", json={"by": "ana", "extra": 1}, headers=AUTH)
    assert r.status_code == 422 and r.json()["field"] == "extra"
    r = client.get("/api/alerts/0123456789abcdef", headers=AUTH)
    assert r.status_code == 404 and r.json()["field"] == "fingerprint"
    assert client.get("/api/alerts/not-hex", headers=AUTH).status_code == 422
    assert client.get("/api/alerts?status=burning", headers=AUTH).json()["field"] == "status"


def test_store_and_internal_errors_are_json_with_the_headers(tmp_path):
    class Broken:
        def keys(self, q=None, limit=100):
            raise RuntimeError("boom")

        def __len__(self):
            return 0

    store = AlertStore(tmp_path / "a.db")
    handle, url = serve_console(create_app(store=store, recorder=Broken(), token=TOKEN, pipeline_name="p"))
    try:
        r = httpx.get(url + "api/keys", headers=AUTH, timeout=30)
        assert r.status_code == 500 and r.json() == {"error": "internal error (the console's log has the details)",
                                                     "field": None, "value": None}
        assert r.headers["x-frame-options"] == "DENY"
        store.close()
        r = httpx.get(url + "api/alerts", headers=AUTH, timeout=30)
        assert r.status_code == 503 and "alert store" in r.json()["error"]
    finally:
        handle.stop()


# -- reading alerts -------------------------------------------------------------------------------------------


def test_explanations_come_from_the_structured_contributions_sorted_by_absolute_score(console):
    client, _, _ = console
    a = client.get(f"/api/alerts/{fp('u1')}", headers=AUTH).json()
    assert [(x["feature"], x["score"]) for x in a["explanation"]] == [("country", 6.5), ("amount", 4.2),
                                                                      ("hour", -1.0)]
    assert a["explanation"][1]["value"] == 412.0 and a["explanation"][1]["expected"] == 83.1
    b = client.get(f"/api/alerts/{fp('web-1', 'k_of_n', 'critical')}", headers=AUTH).json()
    assert [x["feature"] for x in b["explanation"]] == ["mem", "cpu", "disk"]
    assert b["explanation"][1]["value"] == 97.0 and b["explanation"][0]["flag"] is True
    assert [r["reason"] for r in b["revisions"]] == ["fired"] and b["acks"] == [] and b["feedback"] == []
    # stats are evidence, not an explanation: nothing is parsed out of their keys
    assert explain({"stats": {"z_hour": 3.0, "m.z": -2.0}}) == []
    assert explain({"contributions": [{"feature": "m", "score": float("nan")}]}) == []


def test_alert_list_filters_and_groups(console):
    client, _, _ = console
    get = lambda q: [a["key"] for a in client.get("/api/alerts" + q, headers=AUTH).json()["alerts"]]  # noqa: E731
    assert sorted(get("")) == sorted(["u1", "web-1", XSS])
    assert get("?severity=critical") == ["web-1"]
    assert get("?q=IMG") == [XSS]
    assert get("?key=u1") == ["u1"] and get("?status=resolved") == []
    everything = client.get("/api/alerts", headers=AUTH).json()["alerts"]
    groups = {a["key"]: a["group"] for a in everything}
    assert groups["u1"] == groups[XSS] != groups["web-1"]
    assert sorted(get("?group=" + httpx.QueryParams({"g": groups["u1"]})["g"])) == sorted(["u1", XSS])
    assert everything[0]["message"] and {"silenced", "inhibited", "acked", "flapping"} <= set(everything[0])


def test_alert_pages_follow_the_cursor_and_count_per_status(console):
    client, _, _ = console
    first = client.get("/api/alerts?limit=2", headers=AUTH).json()
    assert len(first["alerts"]) == 2 and first["complete"] and first["total"] == 3
    assert first["counts"] == {"firing": 3, "resolved": 0, "retracted": 0}
    rest = client.get("/api/alerts", params={"limit": 2, "cursor": first["next_cursor"]}, headers=AUTH).json()
    assert len(rest["alerts"]) == 1 and rest["next_cursor"] is None
    assert {a["key"] for a in first["alerts"] + rest["alerts"]} == {"u1", "web-1", XSS}
    groups = {a["key"]: a["group"] for a in first["alerts"] + rest["alerts"]}
    page = client.get("/api/alerts", params={"group": groups["u1"], "limit": 1}, headers=AUTH).json()
    more = client.get("/api/alerts", params={"group": groups["u1"], "limit": 1, "cursor": page["next_cursor"]},
                      headers=AUTH).json()
    assert {a["key"] for a in page["alerts"] + more["alerts"]} == {"u1", XSS} and more["next_cursor"] is None
    assert page["total"] is None  # a group filter is a search: no indexed total
    for bad in ("x", "djI6MTox", "%%%"):
        r = client.get("/api/alerts", params={"cursor": bad}, headers=AUTH)
        assert r.status_code == 422 and r.json()["field"] == "cursor", bad
    assert client.get("/api/alerts?limit=1001", headers=AUTH).json()["field"] == "limit"


def test_health_without_a_pipeline(console):
    client, _, _ = console
    h = client.get("/api/health", headers=AUTH).json()
    assert h["attached"] is False and h["message"] == "no pipeline attached"
    assert h["alerts"]["firing"] == 3 and h["pipeline"] == "demo"
    assert h["recorder"]["keys"] == 2 and h["recorder"]["alert_keys"] == 2  # both keys have a flagged point


def test_health_with_a_finished_run(tmp_path):
    from vigil.dataflow.pipeline import Pipeline
    from vigil.detectors import SlidingZScore
    from vigil.engine.runner import EmbeddedRunner
    from vigil.io.memory import MemorySource
    from vigil.io.sinks import MemorySink

    values = [10.0, 11.0, 9.0, 10.5, 9.5] * 8 + [90.0]
    src = MemorySource({"key": ["k"] * len(values), "ts_ms": [T0 + 1000 * i for i in range(len(values))],
                        "v": values})
    p = Pipeline("tiny").source(src).detect("v_z", SlidingZScore(field="v", min_count=5)).alerts_to(MemorySink())
    rec = StreamRecorder()
    runner = EmbeddedRunner(p, taps=(rec,), out_dir=str(tmp_path / "out"))
    runner.run()
    with AlertStore(tmp_path / "a.db") as store:
        app = create_app(store=store, runner=runner, recorder=rec, token=TOKEN, pipeline_name="tiny")
        handle, url = serve_console(app)
        try:
            h = httpx.get(url + "api/health", headers=AUTH, timeout=30).json()
            assert h["attached"] is True and h["stats"]["events_in"] == len(values) and h["stats"]["finished"]
            assert h["stats"]["watermark_ms"] is not None and h["self_alerts"] == [] and h["model_health"] == []
            s = httpx.get(url + "api/series/k", headers=AUTH, timeout=30).json()
            assert s["fields"]["v"][-1] == 90.0 and s["steps"]["v_z"]["flag"][-1] is True
        finally:
            handle.stop()


# -- the recorder ---------------------------------------------------------------------------------------------


def test_series_and_keys_through_the_api(console):
    client, _, _ = console
    s = client.get("/api/series/a/b", headers=AUTH).json()  # a key with a slash
    assert s["key"] == "a/b" and s["fields"]["x"] == [1.0, 1.0, 9.0] and s["steps"]["x_z"]["flag"] == [False, False, True]
    s = client.get(f"/api/series/u1?around={T0 + 4000}&span=2000", headers=AUTH).json()
    assert s["ts_ms"] == [T0 + 3000, T0 + 4000]
    r = client.get("/api/series/" + quote(XSS, safe=""), headers=AUTH)
    assert r.status_code == 404 and r.json()["value"] == XSS
    keys = client.get("/api/keys", headers=AUTH).json()
    assert [(k["key"], k["flags"]) for k in keys["keys"]] == [("a/b", 1), ("u1", 1)]
    assert [k["key"] for k in client.get("/api/keys?q=U", headers=AUTH).json()["keys"]] == ["u1"]
    fleet = client.get("/api/fleet", headers=AUTH).json()
    assert sum(fleet["events"]) == 8 and sum(fleet["flags"]) == 2 and fleet["recent_flags"][0]["key"] == "a/b"


def test_recorder_is_bounded_and_forgets_the_least_recently_seen_key():
    rec = StreamRecorder(max_keys=3, points=4, memory_bytes=3 * (4 * 8 * 5 + 16))  # no room for alerting keys
    feed(rec, ["a", "b", "c"], [1, 2, 3], [1, 2, 3], [0, 0, 0])
    feed(rec, ["a"], [4], [4], [0])  # a is now the most recent; b the least
    feed(rec, ["d"], [5], [5], [0])
    assert [k["key"] for k in rec.keys()] == ["d", "a", "c"] and rec.series("b") is None and rec.evicted == 1
    feed(rec, [f"k{i}" for i in range(10)], range(10, 20), range(10), [0] * 10)  # more keys than room in one batch
    assert [k["key"] for k in rec.keys()] == ["k9", "k8", "k7"] and len(rec) == 3
    assert rec._cap == 3  # the pool never grows past max_keys
    feed(rec, ["k9"] * 10, range(100, 110), range(10), [0] * 9 + [1])  # more points than the ring holds
    s = rec.series("k9")
    assert s["ts_ms"] == [106, 107, 108, 109] and s["fields"]["x"] == [6.0, 7.0, 8.0, 9.0]
    assert s["steps"]["x_z"]["flag"] == [False, False, False, True]
    feed(rec, ["k9", "k9"], [111, 110], [1, 0], [0, 0])  # out of order: series are in event-time order
    assert rec.series("k9")["ts_ms"] == [108, 109, 110, 111]


def test_recorder_handles_new_fields_and_many_keys_with_bounded_memory():
    per_key = 10 * 8 * (1 + 4) + 16  # 10 points of event time and 4 columns (x, and x_z's score, calibrated, flag)
    rec = StreamRecorder(max_keys=100, points=10, fleet_seconds=5, memory_bytes=150 * per_key)
    rng = np.random.default_rng(1)
    for b in range(30):
        keys = rng.integers(0, 1000, 500).astype(str).astype(object)
        feed(rec, keys, np.full(500, b * 1000), rng.normal(size=500), rng.random(500) < 0.01)
    # 100 keys seen last, and 50 keys with a flagged point (more than 50 had one: those flagged last)
    assert len(rec) == 150 and rec._ts.shape == (150, 10) and rec.stats()["alert_keys"] == 50
    assert len(rec.fleet()["ts_ms"]) == 5 and len(rec.recent_flags(1000)) <= 500
    n = 2
    v = Verdicts(np.zeros(n), np.zeros(n), np.zeros(n, bool), np.zeros(n, bool), np.ones(n, bool), {})
    rec(Batch(np.zeros(n, np.int32), np.array([1, 2]), {"y": np.array([5.0, 6.0])}), np.array(["new", "new"], object),
        {"y_z": v})
    s = rec.series("new")
    assert s["fields"]["y"] == [5.0, 6.0] and s["fields"]["x"] == [None, None]
    # three more columns: the budget now holds no alerting key beside the 100 others
    assert len(rec) == 100 and rec.stats()["alert_keys"] == 0 and rec._ts.shape == (150, 10)


# -- the token file and the command ---------------------------------------------------------------------------


def test_token_file_is_private_and_printed_only_when_made(tmp_path):
    token, created, path = load_or_create_token(tmp_path / "state")
    assert created and oct(path.stat().st_mode & 0o777) == "0o600"
    assert oct((tmp_path / "state").stat().st_mode & 0o777) == "0o700"
    os.chmod(path, 0o644)
    assert load_or_create_token(tmp_path / "state")[:2] == (token, False)
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    from vigil.console.launch import start_console

    with AlertStore(tmp_path / "a.db") as store:
        out = io.StringIO()  # the token exists: the command says where, never what
        handle, url = start_console(store=store, pipeline_name="p", port=0, state_dir=tmp_path / "state",
                                    console=Console(file=out, width=300))
        handle.stop()
        assert token not in out.getvalue() and str(path) in out.getvalue()
        out = io.StringIO()
        handle, url = start_console(store=store, pipeline_name="p", port=0, state_dir=tmp_path / "new",
                                    console=Console(file=out, width=300))
        handle.stop()
        new_token = (tmp_path / "new" / "console-token").read_text().strip()
        assert f"{url}?token={new_token}" in out.getvalue()


def test_vigil_console_command_serves_a_store_until_ctrl_c(tmp_path):
    AlertStore(tmp_path / "fraud" / "alerts.db").close()
    code = "import typer; from vigil.cli.console import console_cmd; typer.run(console_cmd)"
    cmd = [sys.executable, "-c", code, "--db", str(tmp_path / "fraud" / "alerts.db"), "--port", "0",
           "--state-dir", str(tmp_path / "state")]
    env = {**os.environ, "COLUMNS": "400"}
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
    try:
        lines, deadline = [], time.monotonic() + 60
        while not any(line.startswith("sign in: ") for line in lines):
            line = proc.stderr.readline()
            assert line or proc.poll() is None, "".join(lines)
            lines.append(line)
            assert time.monotonic() < deadline, "".join(lines)
        link = next(line for line in lines if line.startswith("sign in: "))[len("sign in: "):].strip()
        url, token = link.split("?token=")
        assert token == (tmp_path / "state" / "console-token").read_text().strip()
        h = httpx.get(url + "api/health", headers={"Authorization": f"Bearer {token}"}, timeout=30).json()
        assert h["message"] == "no pipeline attached" and h["pipeline"] == "fraud"
        assert httpx.get(url + "api/health", timeout=30).status_code == 401
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(60)
    assert proc.returncode == 0
    missing = subprocess.run([*cmd[:3], "--db", str(tmp_path / "nope.db")], capture_output=True, text=True, env=env)
    assert missing.returncode == 1 and "no alert store" in missing.stderr


def test_alert_list_pages_with_a_cursor_and_filters_in_the_store(tmp_path):
    """Server-side paging: each alert exactly once across pages, newest change first; totals counted up to a cap."""
    store = AlertStore(tmp_path / "a.db")
    clock = Clock()
    mgr = AlertManager({"route": {"receiver": "default", "group_by": ["key"]}}, store=store, pipeline="demo",
                       clock=clock)
    for i in range(250):  # one change per ms of processing time: a strict order by last change
        clock.t = T0 + i
        mgr.ingest([Alert(f"a{i}", f"k{i:03d}", f"e{i}", "velocity" if i % 5 else "amount_z", 6.0, 3.0, T0 + i, T0,
                          severity="critical" if i % 5 else "warning")])
    handle, url = serve_console(create_app(store=store, token=TOKEN, pipeline_name="demo", clock=clock))
    try:
        with httpx.Client(base_url=url, headers=AUTH, timeout=30) as client:
            seen, cursor = [], None
            while True:
                page = client.get("/api/alerts", params={"limit": 100, **({"cursor": cursor} if cursor else {})}).json()
                seen += [a["key"] for a in page["alerts"]]
                assert page["total"] == 250 and page["complete"]
                cursor = page["next_cursor"]
                if cursor is None:
                    break
            assert seen == [f"k{i:03d}" for i in reversed(range(250))]
            warn = client.get("/api/alerts", params={"severity": "warning", "limit": 10}).json()
            assert len(warn["alerts"]) == 10 and {a["alertname"] for a in warn["alerts"]} == {"amount_z"}
            assert [a["key"] for a in client.get("/api/alerts", params={"q": "K24"}).json()["alerts"]] == [
                "k249", "k248", "k247", "k246", "k245", "k244", "k243", "k242", "k241", "k240"]
            assert client.get("/api/alerts", params={"cursor": "nonsense"}).json()["field"] == "cursor"
            h = client.get("/api/health").json()
            assert h["alerts"] == {"firing": 250, "resolved": 0, "retracted": 0, "silenced": 0, "acked": 0}
    finally:
        handle.stop()
        store.close()
