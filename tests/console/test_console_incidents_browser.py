"""Incidents and the service graph in a real browser (Playwright driving Debian's chromium, fixtures in conftest.py).

The incident page opens over real SQLite incident and remediation stores (the ``incident_files`` fixture): the
affected subgraph is drawn as SVG with the anomalous services marked in colour *and* text, the ranked causes show
their evidence, and the Approve button on the waiting gate records the approval in the remediation store file.
The Services view draws the graph a real ``service_graph`` step built from parent/child spans. Times come from a
fixed clock and the fixtures' event times, never the wall clock.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from vigil.alerting.store import AlertStore
from vigil.apps.services.telemetry.step import ServiceTelemetryStep
from vigil.console.app import create_app
from vigil.console.server import serve_console
from vigil.dataflow.outputs import CollectingOutputs
from vigil.engine.stats import RunStats
from vigil.incidents import IncidentStore
from vigil.remediation import RemediationStore
from vigil.types import Batch

pytest.importorskip("playwright.sync_api")

TOKEN = "incident-browser-token-" + "x" * 20
NOW_MS = 1_772_413_200_000  # an hour after the fixture's incidents opened


@pytest.fixture
def served(tmp_path, incident_files):
    """The console over the incident and remediation stores (no pipeline): {url, token, remediation, run}."""
    store = AlertStore(tmp_path / "alerts.db")
    istore, rstore = IncidentStore(incident_files["incidents"]), RemediationStore(incident_files["remediation"])
    app = create_app(store=store, token=TOKEN, pipeline_name="shop", clock=lambda: NOW_MS, incidents=istore,
                     remediation=rstore)  # fmt: skip
    handle, url = serve_console(app)
    try:
        yield {"url": url, "token": TOKEN, "remediation": incident_files["remediation"], "run": incident_files["run"]}
    finally:
        handle.stop()
        for s in (store, istore, rstore):
            s.close()


def test_incident_page_draws_the_subgraph_and_approves_the_waiting_gate(served, browser, shots, page_of, sign_in):
    page = page_of(browser)
    sign_in(page, served)
    page.get_by_role("link", name="Incidents").click()
    row = page.locator("table.incidents tr[data-id='inc-1']")
    row.locator(".badge", has_text="needs approval").wait_for()
    assert page.locator("table.incidents tbody tr").evaluate_all("rs => rs.map(r => r.dataset.id)") == [
        "inc-2", "inc-1"]  # fmt: skip
    shots(page, "01-incidents")
    row.get_by_role("link", name="inc-1").click()
    page.wait_for_url("**#/incident/inc-1")
    graph = page.locator("section[aria-label='Affected services'] svg.graph")
    graph.wait_for()
    redis = graph.locator("g.node[data-id='redis']")
    assert redis.get_attribute("class") == "node anomalous cause" and redis.get_attribute("data-status") == "anomalous"
    assert "anomalous" in redis.locator("text.sub").text_content()  # said in words, not by colour alone
    cart = graph.locator("g.node[data-id='cart']")  # connects the two that alerted; did not alert itself
    assert cart.get_attribute("data-status") == "normal" and cart.locator("text.sub").text_content() == "cause #2"
    assert graph.locator("g.node.anomalous").evaluate_all("ns => ns.map(n => n.dataset.id).sort()") == [
        "frontend", "redis"]  # fmt: skip
    assert graph.locator("path.edge").evaluate_all("es => es.map(e => e.dataset.source + '>' + e.dataset.target)") == [
        "cart>redis", "frontend>cart"]  # fmt: skip
    assert "anomalous: frontend, redis" in graph.get_attribute("aria-label")
    fill = page.evaluate("getComputedStyle(document.querySelector(\"g.node[data-id='redis'] rect\")).fill")
    assert fill != page.evaluate("getComputedStyle(document.querySelector(\"g.node[data-id='cart'] rect\")).fill")
    causes = page.locator("ol.causes > li")
    assert causes.evaluate_all("ls => ls.map(l => l.dataset.service)") == ["redis", "cart"]
    assert "7.0 -> 7.2" in causes.first.inner_text() and "top cause" in causes.first.inner_text()
    run = page.locator("section.run[data-run='inc-1:rollback']")
    run.get_by_role("group", name="Approval of inc-1:rollback").get_by_text("roll back redis?").wait_for()
    shots(page, "02-incident-waiting")
    run.get_by_label("Your name").fill("ana")
    run.get_by_label("Comment").fill("canary is fine")
    run.get_by_role("button", name="Approve").click()
    page.get_by_role("status").get_by_text("Approved step 0 of inc-1:rollback.").wait_for()
    page.locator("section.run[data-run='inc-1:rollback'] tr[data-step='0']", has_text="approved by ana").wait_for()
    assert page.get_by_role("button", name="Approve").count() == 0  # the gate waits no more
    shots(page, "03-incident-approved")
    rstore = RemediationStore(served["remediation"])
    try:
        assert rstore.approval(served["run"], 0) == {"run_id": served["run"], "step": 0, "by": "ana",
                                                     "at_ms": NOW_MS, "comment": "canary is fine"}  # fmt: skip
    finally:
        rstore.close()
    assert page.problems == []


def _spans(n: int = 20) -> Batch:
    """``n`` requests web → cart → redis as spans (ids: web server 1xx, web client 2xx, cart server 3xx, cart
    client 4xx); every other cart span fails."""
    service, peer, kind, parent, span, err = [], [], [], [], [], []
    for i in range(n):
        rows = [
            ("web", "", 2, 0, 100 + i, 0.0),
            ("web", "", 3, 100 + i, 200 + i, 0.0),  # no peer: joined by parent
            ("cart", "", 2, 200 + i, 300 + i, float(i % 2)),
            ("cart", "redis", 3, 300 + i, 400 + i, 0.0),
        ]
        for s, p, k, par, sid, e in rows:
            service.append(s), peer.append(p), kind.append(k), parent.append(par), span.append(sid), err.append(e)
    m = len(service)
    return Batch(np.zeros(m, np.int32), np.arange(m, dtype=np.int64) * 10, {"duration_ms": np.full(m, 5.0),
                 "error": np.array(err)}, {"service": np.array(service, object), "peer": np.array(peer, object),
                 "kind": np.array(kind, np.int8), "parent_span_id": np.array(parent, np.uint64),
                 "span_id": np.array(span, np.uint64), "version": np.array(["v1"] * m, object)})  # fmt: skip


def test_services_view_draws_the_live_graph_with_the_anomalous_service_marked(tmp_path, browser, shots, page_of,
                                                                              sign_in):  # fmt: skip
    step = ServiceTelemetryStep("red", window_ms=1000, max_error_rate=0.3, min_count=5)
    out = CollectingOutputs("shop")
    batch = _spans()
    step.on_batch(batch, np.array(batch.extra["service"]), np.zeros(len(batch), np.int64), out)
    step.on_watermark(2000, out)
    assert out.counts.alerts >= 1
    runner = SimpleNamespace(p=SimpleNamespace(steps=[step]), stats=RunStats(finished=True))
    store = AlertStore(tmp_path / "alerts.db")
    handle, url = serve_console(create_app(store=store, runner=runner, token=TOKEN, pipeline_name="shop",
                                           clock=lambda: NOW_MS))  # fmt: skip
    try:
        page = page_of(browser)
        sign_in(page, {"url": url, "token": TOKEN})
        page.get_by_role("link", name="Services").click()
        graph = page.locator("section[aria-label='Service graph'] svg.graph")
        graph.wait_for()
        assert graph.locator("g.node").evaluate_all("ns => ns.map(n => n.dataset.id + ':' + n.dataset.status).sort()") == [
            "cart:anomalous", "redis:normal", "web:normal"]  # fmt: skip
        edges = graph.locator("path.edge")
        assert edges.evaluate_all("es => es.map(e => [e.dataset.source, e.dataset.target, e.dataset.weight])") == [
            ["cart", "redis", "20"], ["web", "cart", "20"]]  # fmt: skip
        xs = graph.locator("g.node").evaluate_all(
            "ns => Object.fromEntries(ns.map(n => [n.dataset.id, n.transform.baseVal[0].matrix.e]))"
        )
        assert xs["web"] < xs["cart"] < xs["redis"]  # columns by call depth
        page.locator("table.services-table tr[data-id='cart']", has_text="anomalous").wait_for()
        shots(page, "04-services")
        assert page.problems == []
    finally:
        handle.stop()
        store.close()
