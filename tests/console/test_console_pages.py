"""The console an on-call engineer opens, in real Chromium: it lands on the alerts (with or without a pipeline),
pages through a big store and searches it, tells event-time lag from processing lag, and shows a key with a
bidi override as what it is. Every page is screenshotted (test-artifacts/console/) to be looked at."""

from __future__ import annotations

import numpy as np
import pytest

from vigil.alerting.store import AlertStore
from vigil.console.app import create_app
from vigil.console.bench import NEEDLE, T0_MS, fill_store
from vigil.console.recorder import StreamRecorder
from vigil.console.server import serve_console
from vigil.detectors.base import Verdicts
from vigil.engine.stats import RunStats
from vigil.testing.clock import ManualClock
from vigil.types import Batch

pytest.importorskip("playwright.sync_api")

TOKEN = "pages-token-0123456789abcdef"
BIDI = "user\u202egnp.exe"  # reads "userexe.png" when shown raw
BIDI_SHOWN = "user\\u202egnp.exe"
LONG = "tenant-7/region-eu-west-1/cluster-42/" + "x" * 120 + "/host-0007"
N = 100_000  # more than one search call looks at (10,000)


def row(fp, key, updated_ms, *, status="firing", severity="critical", alertname="login_burst", message=None):
    return {"fingerprint": fp, "labels": {"alertname": alertname, "key": key, "severity": severity,
                                          "pipeline": "auth"},
            "status": status, "revision": 1, "starts_at_ms": T0_MS, "observations": 3, "updated_ms": updated_ms,
            "last_alert": {"id": "x", "score": 9.5, "threshold": 3.0, "event_ts_ms": T0_MS,
                           "message": message or f"12 failed logins in 10 s for {key}"}}


def serve(store, **kw):
    clock = kw.pop("clock", None) or ManualClock(T0_MS / 1000 + 7 * 86_400)
    handle, url = serve_console(create_app(store=store, token=TOKEN, pipeline_name="auth", clock=clock.ms, **kw))
    return handle, {"url": url, "token": TOKEN}


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """A store of 100,000 alerts and three more made by hand: a key with a bidi override, a very long key."""
    db = fill_store(tmp_path_factory.mktemp("pages") / "alerts.db", N, revisions=False, shuffled=False, lean=True)
    store = AlertStore(db, create=False)
    top = store.alert_page(limit=1).rows[0]["updated_ms"]
    store.write_alerts([row("b1d1000000000001", BIDI, top + 10),
                        row("b1d1000000000002", LONG, top + 20, severity="warning", alertname="disk_full",
                            message=f"disk /var on {LONG} is 99% full: " + "very " * 40 + "full"),
                        row("b1d1000000000003", "svc-a", top + 30, status="resolved", severity="info")])
    handle, served = serve(store)
    yield {**served, "db": db}
    handle.stop()
    store.close()


def test_it_lands_on_the_firing_alerts_and_pages_as_you_scroll(big, browser, shots, page_of, sign_in):
    page = page_of(browser)
    sign_in(page, big)
    page.locator("table.alerts tbody tr").first.wait_for()
    assert page.url.endswith("/") and page.locator("h1").inner_text() == "Alerts"
    assert page.locator("#health .tile", has_text="pipeline").locator(".tile-value").inner_text() == "not attached"
    firing = page.get_by_role("radio", name="Firing")
    assert firing.is_checked()
    assert page.locator(".tab.on .count").inner_text() == f"{len(range(0, N, 7)) + 2:,}"
    assert page.locator("table.alerts tbody tr").count() == 50
    assert "newest change first; the 50 that changed last are shown" in page.locator(".summary").inner_text()
    shots(page, "01-alerts-landing")
    page.get_by_role("button", name="Load older alerts").scroll_into_view_if_needed()
    page.locator("table.alerts tbody tr").nth(99).wait_for()  # the next page, appended
    page.get_by_text("Refresh paused while older alerts are shown").wait_for()
    shots(page, "01b-older-loaded")
    fps = page.locator("table.alerts tbody tr").evaluate_all("rs => rs.map(r => r.dataset.fp)")
    assert len(fps) == len(set(fps))
    page.locator("label.tab", has_text="All").click()
    page.locator(".summary", has_text="100,003 alerts, newest change first").wait_for()
    assert page.problems == []


def test_a_search_goes_on_through_the_store_and_an_empty_one_says_what_to_do(big, browser, shots, page_of, sign_in):
    page = page_of(browser)
    sign_in(page, big)
    page.get_by_label("Search key, alert name or message").fill(NEEDLE)
    # one match, the oldest alert: ten calls of 10,000, made one after the other as the end stays in view
    page.locator("table.alerts tbody tr").first.wait_for()
    page.locator(".summary", has_text="all of them").wait_for(timeout=60_000)
    assert page.locator("table.alerts tbody tr").count() == 1 and page.locator("td.message").inner_text().endswith(
        NEEDLE)
    shots(page, "02-search-found")
    page.get_by_label("Search key, alert name or message").fill("no such thing anywhere")
    page.get_by_text("No firing alert matches").wait_for(timeout=60_000)
    shots(page, "03-search-empty")
    page.get_by_role("button", name="Clear the search").click()
    page.locator("table.alerts tbody tr").nth(49).wait_for()
    page.get_by_label("Severity").select_option("warning")
    page.locator("td.key-cell", has_text="tenant-7").wait_for()
    box = page.locator("main").bounding_box()
    assert page.evaluate("document.documentElement.scrollWidth") <= 1400  # a 160-character key doesn't overflow
    assert box["width"] <= 1400
    shots(page, "04-long-key")
    assert page.problems == []


def test_a_bidi_override_in_a_key_is_shown_as_an_escape(big, browser, shots, page_of, sign_in):
    page = page_of(browser)
    sign_in(page, big)
    cell = page.locator("td.key-cell", has_text="gnp.exe")
    cell.wait_for()
    assert cell.inner_text() == BIDI_SHOWN and cell.locator(".esc").get_attribute("title").startswith(
        "U+202E right-to-left override")
    assert "\u202e" not in page.evaluate("document.body.innerText")
    shots(page, "05-bidi-list")
    cell.locator("xpath=..").get_by_role("link").click()
    page.locator("h1 .key-title").wait_for()
    assert page.locator("h1 .key-title").inner_text() == BIDI_SHOWN
    assert page.locator(".facts.labels dd", has_text="gnp").inner_text() == BIDI_SHOWN
    assert "\u202e" not in page.evaluate("document.body.innerText + document.title")
    shots(page, "06-bidi-alert")
    page.get_by_role("link", name="Silence…").click()
    note = page.locator(".warn-note")
    note.wait_for()
    assert BIDI_SHOWN in note.inner_text()
    page.get_by_role("button", name="Create silence").click()
    chip = page.locator("table.silences code.chip", has_text="gnp")
    chip.wait_for()
    assert chip.inner_text() == "key=" + BIDI_SHOWN
    shots(page, "07-bidi-silence")
    with AlertStore(big["db"], create=False) as store:  # the silence matches the key exactly, raw
        assert [s["matchers"] for s in store.silences()][-1] == ["alertname=login_burst", "key=" + BIDI]
    assert page.problems == []


def test_without_a_pipeline_the_live_page_says_so_and_unknown_alerts_too(big, browser, shots, page_of, sign_in):
    page = page_of(browser)
    sign_in(page, big)
    page.goto(big["url"] + "#/live")
    page.get_by_role("heading", name="No live pipeline").wait_for()
    assert page.get_by_role("link", name="See the alerts").count() == 1
    shots(page, "08-live-no-pipeline")
    page.goto(big["url"] + "#/alert/0123456789abcdef")
    page.get_by_text("No alert with fingerprint 0123456789abcdef").wait_for()
    shots(page, "09-no-such-alert")
    assert [p for p in page.problems if "status of 404" not in p] == [] and len(page.problems) == 1  # the API's 404


def test_an_empty_store_says_alerts_will_come(tmp_path, browser, shots, page_of, sign_in):
    with AlertStore(tmp_path / "a.db") as store:
        handle, served = serve(store)
        try:
            page = page_of(browser)
            sign_in(page, served)
            page.get_by_text("No alerts yet.").wait_for()
            shots(page, "10-empty-store")
            page.goto(served["url"] + "#/silences")
            page.get_by_text("No silences. A silence mutes").wait_for()
            shots(page, "11-no-silences")
            assert page.problems == []
        finally:
            handle.stop()


class Runner:
    """What the health bar reads of a running EmbeddedRunner (a replay of data from long ago)."""

    def __init__(self, watermark_ms):
        self.stats = RunStats(events_in=1200, events=1200, batches=3, watermark_ms=watermark_ms, elapsed_s=2.0)
        self.p = type("P", (), {"steps": []})()


def test_the_lags_are_told_apart_on_a_replay_and_alerting_keys_are_charted(tmp_path, browser, shots, page_of,
                                                                         sign_in):
    wall = ManualClock((T0_MS + 400 * 86_400_000) / 1000)  # the data is 400 days old
    rec = StreamRecorder(max_keys=5, points=100, clock=wall.ms)
    keys = ["host-1", BIDI, "host-2"] * 40
    ts = T0_MS + np.repeat(np.arange(40) * 1000, 3)
    x = np.where(np.arange(120) == 100, 250.0, 100.0 + np.arange(120) % 7)
    flag = np.arange(120) == 100  # one anomaly, on the bidi key
    n = len(keys)
    v = Verdicts(x / 10, np.zeros(n), flag, flag, np.ones(n, bool), {})
    rec(Batch(np.zeros(n, np.int32), ts, {"value": x}), np.asarray(keys, object), {"value_z": v})
    for b in range(20):  # more quiet keys than the recorder keeps besides alerting ones
        others = [f"quiet-{b}-{i}" for i in range(10)]
        rec(Batch(np.zeros(10, np.int32), np.full(10, T0_MS + 39_000), {"value": np.ones(10)}),
            np.asarray(others, object), {"value_z": Verdicts(np.zeros(10), np.zeros(10), np.zeros(10, bool),
                                                             np.zeros(10, bool), np.ones(10, bool), {})})
    wall.advance(3.5)
    with AlertStore(tmp_path / "a.db") as store:
        store.write_alerts([row("b1d1000000000001", BIDI, T0_MS, alertname="value_z")])
        handle, served = serve(store, runner=Runner(T0_MS + 34_000), recorder=rec, clock=wall)
        try:
            page = page_of(browser)
            sign_in(page, served)
            lag = page.locator("#health .tile", has_text="event-time lag")
            assert lag.locator(".tile-value").inner_text() == "5.0 s"
            assert "watermark → newest event" in lag.inner_text()
            proc = page.locator("#health .tile", has_text="processing lag")
            assert proc.locator(".tile-value").inner_text() == "3.5 s" and "since the last batch" in proc.inner_text()
            assert "d" not in lag.locator(".tile-value").inner_text()  # never "400.0 d"
            shots(page, "12-lags")
            page.locator("td.key-cell", has_text="gnp.exe").locator("xpath=..").get_by_role("link").click()
            page.locator("section[aria-label='Window around the alert'] svg.chart circle.anomaly").wait_for()
            shots(page, "13-around-the-alert")
            page.goto(served["url"] + "#/live")
            item = page.locator(".keylist .key-name", has_text="gnp.exe")
            item.wait_for()
            assert item.inner_text() == BIDI_SHOWN
            page.locator("main h2 .key-title").wait_for()
            shots(page, "14-live")
            assert "\u202e" not in page.evaluate("document.body.innerText")
            assert page.problems == []
        finally:
            handle.stop()


def test_a_narrow_window_never_scrolls_sideways(big, chromium, tmp_path, shots, sign_in):
    """At 800 px wide (a laptop split screen), pages fit: a wide table scrolls inside its card, not the page."""
    from playwright.sync_api import sync_playwright

    from conftest import ARGS  # the browser fixtures' own launch arguments

    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(str(tmp_path / "narrow"), executable_path=chromium, headless=True,
                                                   args=ARGS, viewport={"width": 800, "height": 900})
        try:
            page = ctx.new_page()
            sign_in(page, big)
            for route, ready in (("#/alerts", "table.alerts tbody tr"), ("#/alert/b1d1000000000002", "h1 .key-title"),
                                 ("#/silences", "table.silences, .empty"), ("#/live", ".empty-state")):
                page.goto(big["url"] + route)
                page.locator(ready).first.wait_for()
                width = page.evaluate("document.documentElement.scrollWidth")
                shots(page, "15-narrow-" + route.strip("#/").split("/")[0])
                assert width <= 800, (route, width)
                if route == "#/alerts":  # every column header fits, the message keeps room to be read
                    assert page.evaluate("[...document.querySelectorAll('table.alerts th')].every("
                                         "th => th.scrollWidth <= th.clientWidth)")
                    assert page.locator("td.message").first.bounding_box()["width"] > 150
        finally:
            ctx.close()
