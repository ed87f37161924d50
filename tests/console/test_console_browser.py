"""The web console in a real browser (Playwright driving Debian's chromium) over a real pipeline run.

A small pipeline (MemorySource -> SlidingZScore) runs on the EmbeddedRunner with a StreamRecorder tap; its alerts go
through an AlertManager into a SQLite AlertStore; the console serves all of it on 127.0.0.1. Then, in the browser:
signing in with the token, the chart of the anomalous key with its anomaly marked, labelling an alert a false
positive (checked in SQLite afterwards), a wrong token refused, and markup in a key and a message shown as text.
Screenshots of every step go to the test's tmp_path and to test-artifacts/console/ under the repo root (the
fixtures are in conftest.py).
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from vigil.alerting.manager import AlertManager
from vigil.alerting.notification import fingerprint
from vigil.alerting.store import AlertStore
from vigil.console.app import create_app
from vigil.console.recorder import StreamRecorder
from vigil.console.server import serve_console
from vigil.dataflow.pipeline import Pipeline
from vigil.detectors import SlidingZScore
from vigil.engine.runner import EmbeddedRunner
from vigil.io.memory import MemorySource
from vigil.types import Alert

pytest.importorskip("playwright.sync_api")

XSS = "<img src=x onerror=alert(1)>"
SCRIPT = "<script>window.__xss = 1</script>"
T0 = 1_700_000_000_000
N = 200
SPIKE_KEY, SPIKE_AT = "pay-7", 150


class ManagerSink:
    """Alert sink feeding the alert manager (ingest per batch, tick at each flush)."""

    def __init__(self, manager: AlertManager) -> None:
        self.manager = manager

    def write_batch(self, items):
        self.manager.ingest(items)

    def flush(self):
        self.manager.tick()

    def close(self):
        pass


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A finished pipeline run with its console: {url, token, db, fp, xss_fp}."""
    tmp = tmp_path_factory.mktemp("console")
    rng = np.random.default_rng(7)
    keys, ts, values = [], [], []
    for i in range(N):
        for k, key in enumerate(["host-1", "host-2", SPIKE_KEY, XSS]):
            v = 100.0 + rng.normal(0, 2.0)
            if (key == SPIKE_KEY and i == SPIKE_AT) or (key == XSS and i == 120):
                v = 400.0
            keys.append(key)
            ts.append(T0 + 1000 * i + k)
            values.append(v)
    db = tmp / "alerts.db"
    store = AlertStore(db)
    manager = AlertManager({"route": {"receiver": "default", "group_wait": "0s"}}, store=store, pipeline="shop")
    recorder = StreamRecorder(max_keys=100, points=300)
    p = (Pipeline("shop").source(MemorySource({"key": keys, "ts_ms": ts, "value": values}, batch_size=64))
         .detect("value_z", SlidingZScore(field="value", threshold=6.0)).alerts_to(ManagerSink(manager)))
    runner = EmbeddedRunner(p, taps=(recorder,), out_dir=str(tmp / "out"))
    stats = runner.run()
    assert stats.fired == {"value_z": 2}, stats.fired  # the two spikes, nothing else
    manager.ingest([Alert("x1", XSS, "ex", "note_rule", 1.0, 0.5, T0 + 120_000, T0, severity="info",
                          message=f"suspicious input {XSS} {SCRIPT}")])
    manager.tick()
    token = "browser-test-token-" + "x" * 20
    app = create_app(store=store, manager=manager, runner=runner, recorder=recorder, token=token,
                     pipeline_name="shop")
    handle, url = serve_console(app)
    labels = {"alertname": "value_z", "key": SPIKE_KEY, "severity": "warning", "pipeline": "shop"}
    yield {"url": url, "token": token, "db": db, "fp": fingerprint(labels)}
    handle.stop()
    store.close()


def test_page_loads_with_the_token(served, browser, shots, page_of, sign_in):
    page = page_of(browser)
    sign_in(page, served)
    health = page.locator("#health")
    health.get_by_text("events", exact=True).wait_for()
    deadline = time.monotonic() + 30
    while str(4 * N) not in health.inner_text().replace(",", ""):  # events read, from the run's stats
        assert time.monotonic() < deadline, health.inner_text()
        page.wait_for_timeout(200)
    assert page.locator("#pipeline-name").inner_text() == "shop"
    assert page.title() == "Vigil · shop"
    shots(page, "01-signed-in")
    assert page.problems == []


def test_the_chart_of_the_anomalous_key_marks_the_anomaly(served, browser, shots, page_of, sign_in):
    page = page_of(browser)
    sign_in(page, served)
    page.goto(served["url"] + "#/live/" + SPIKE_KEY)
    dot = page.locator("main .chart-box").first.locator("svg.chart circle.anomaly")
    dot.first.wait_for()
    assert dot.count() == 1 and int(dot.get_attribute("data-ts")) == T0 + 1000 * SPIKE_AT + 2
    assert page.locator("main h2 .key-title").inner_text() == SPIKE_KEY
    assert page.locator("main .chart-box").first.locator("svg.chart path.line").count() == 1
    shots(page, "02-live-chart")
    page.goto(served["url"] + "#/live/host-1")  # a quiet key: a line, no anomaly
    page.locator("main h2 .key-title", has_text="host-1").wait_for()
    page.locator("main .chart-box").first.locator("svg.chart path.line").wait_for()
    assert page.locator("main .chart-box").first.locator("circle.anomaly").count() == 0
    shots(page, "03-quiet-key")
    assert page.problems == []


def test_labelling_a_false_positive_in_the_page_persists(served, browser, shots, page_of, sign_in):
    page = page_of(browser)
    sign_in(page, served)
    page.goto(served["url"] + "#/alerts")
    row = page.locator("table.alerts tr", has_text=SPIKE_KEY)
    row.get_by_role("link", name="value_z").click()
    page.wait_for_url("**#/alert/" + served["fp"])
    page.get_by_role("heading", name="Why: top contributing features").wait_for()
    page.locator("section[aria-label='Window around the alert'] svg.chart circle.anomaly").wait_for()
    assert page.locator("section[aria-label='Window around the alert'] svg.chart line.marker").count() == 1
    assert page.locator("ol.bars li").first.locator(".bar-label").inner_text() == "value"  # the field, not the step
    page.get_by_label("Your name").fill("ana")
    page.get_by_label("Comment or note").fill("load test, not fraud")
    shots(page, "04-alert-before")
    page.get_by_role("button", name="False positive").click()
    page.get_by_role("status").get_by_text("Labelled false positive.").wait_for()
    page.locator(".badge.fp").wait_for()
    shots(page, "05-alert-labelled")
    with AlertStore(served["db"], create=False) as store:
        rows = store.feedback(served["fp"])
    assert [(r["label"], r["note"], r["by"], r["key"]) for r in rows] == [
        ("false_positive", "load test, not fraud", "ana", SPIKE_KEY)]
    assert page.problems == []


def test_silence_created_and_expired_in_the_page(served, browser, shots, page_of, sign_in):
    page = page_of(browser)
    sign_in(page, served)
    page.goto(served["url"] + "#/alert/" + served["fp"])
    page.get_by_role("link", name="Silence…").click()
    matchers = page.get_by_label("Matchers, one per line")
    assert matchers.input_value() == f"alertname=value_z\nkey={SPIKE_KEY}"
    page.get_by_label("Duration").fill("30m")
    page.get_by_label("Comment").fill("deploy in progress")
    page.get_by_role("button", name="Create silence").click()
    row = page.locator("table.silences tbody tr", has_text="deploy in progress")
    row.locator(".badge", has_text="active").wait_for()
    assert row.locator("code.chip").all_inner_texts() == ["alertname=value_z", f"key={SPIKE_KEY}"]
    shots(page, "09-silence-created")
    page.goto(served["url"] + "#/alerts")
    page.locator("table.alerts tr", has_text=SPIKE_KEY).locator(".badge.silenced").wait_for()
    page.goto(served["url"] + "#/silences")
    page.locator("table.silences tbody tr", has_text="deploy in progress").get_by_role("button", name="Expire").click()
    page.get_by_text("No silences.").wait_for()
    shots(page, "10-silence-expired")
    with AlertStore(served["db"], create=False) as store:
        made = [s for s in store.silences(include_expired=True) if s["comment"] == "deploy in progress"]
    assert len(made) == 1 and made[0]["expired_ms"] is not None
    assert made[0]["ends_ms"] - made[0]["starts_ms"] == 30 * 60_000
    assert page.problems == []


def test_a_wrong_token_is_refused(served, browser, shots, page_of, sign_in):
    page = page_of(browser)
    resp = page.goto(served["url"] + "?token=not-the-token")
    assert resp.status == 401
    page.get_by_role("heading", name="Not signed in").wait_for()
    shots(page, "06-wrong-token")
    resp = page.goto(served["url"])
    assert resp.status == 401
    assert page.evaluate("fetch('/api/health').then(r => r.status)") == 401
    assert [c["name"] for c in browser.cookies()] == []


def test_markup_in_alerts_is_shown_as_text(served, browser, shots, page_of, sign_in):
    page = page_of(browser)
    sign_in(page, served)
    page.goto(served["url"] + "#/alerts")
    page.locator("td.key-cell", has_text=XSS).first.wait_for()
    cells = page.locator("td.key-cell").all_inner_texts()
    assert cells.count(XSS) == 2  # the detector's alert and the hand-made one, as literal text
    message = page.locator("td.message", has_text="suspicious input")
    assert message.inner_text() == f"suspicious input {XSS} {SCRIPT}"
    shots(page, "07-xss-list")
    page.get_by_label("Group by group key").check()
    page.locator("section.group").nth(1).wait_for()
    shots(page, "07b-grouped")
    assert sorted(t.split("\n")[0] for t in page.locator("section.group h2").all_inner_texts()) == [
        '{alertname="note_rule"} notifies default · 1 alert, 1 firing',
        '{alertname="value_z"} notifies default · 2 alerts, 2 firing']
    page.locator("table.alerts tr", has_text="suspicious input").get_by_role("link").click()
    page.locator("h1 .key-title", has_text=XSS).wait_for()
    assert page.locator("p.message").inner_text() == f"suspicious input {XSS} {SCRIPT}"
    page.goto(served["url"] + "#/live/" + XSS.replace(" ", "%20"))
    page.locator("main h2 .key-title", has_text=XSS).wait_for()
    page.locator(".keylist .key-name", has_text=XSS).wait_for()
    shots(page, "08-xss-live")
    assert page.locator("main img").count() == 0  # no element was made from the text
    assert page.evaluate("window.__xss") is None
    assert page.problems == []  # no alert() dialog, no script error, no CSP violation
