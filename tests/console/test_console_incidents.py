"""Incidents and playbook approvals in the console's API, against a served app over real SQLite stores (the
``incident_files`` fixture of conftest.py): the list pages newest first with a cursor, an incident carries its
subgraph, ranked causes with evidence, timeline and playbook runs with their steps, and the Approve call records
through the remediation store (and through the injected approver, which is how `vigil console` passes on the
CLI's Temporal signal). Times come from a manual clock and the fixture's event times."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import httpx
import pytest

from vigil.alerting.store import AlertStore
from vigil.cli.remediation import approve_gate
from vigil.console.app import create_app
from vigil.console.server import serve_console
from vigil.incidents import Incident, IncidentStore
from vigil.remediation import InProcessExecutor, RemediationStore, StepRunner
from vigil.testing.clock import ManualClock

TOKEN = "incident-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
INCIDENT_T0 = 1_772_409_600_000  # the fixture's event times (conftest.py)
NOW_MS = INCIDENT_T0 + 3_600_000


@pytest.fixture
def served(tmp_path, incident_files):
    """The console over the fixture's stores: {client, incidents, remediation, run, clock}."""
    assert incident_files["t0"] == INCIDENT_T0
    store = AlertStore(tmp_path / "alerts.db")
    istore, rstore = IncidentStore(incident_files["incidents"]), RemediationStore(incident_files["remediation"])
    clock = ManualClock(NOW_MS / 1000)
    app = create_app(store=store, token=TOKEN, pipeline_name="shop", clock=clock.ms, incidents=istore,
                     remediation=rstore)  # fmt: skip
    handle, url = serve_console(app)
    try:
        with httpx.Client(base_url=url, headers=AUTH, timeout=30) as client:
            yield {
                **incident_files,
                "client": client,
                "incidents": istore,
                "remediation": rstore,
                "clock": clock,
                "run_file": incident_files["remediation"],
            }
    finally:
        handle.stop()
        for s in (store, istore, rstore):
            s.close()


def test_incidents_list_newest_first_in_pages_with_the_waiting_ones_marked(served):
    c, istore = served["client"], served["incidents"]
    for i in range(3, 8):  # older incidents, opened before the fixture's two
        istore.put(Incident(f"inc-{i}", INCIDENT_T0 - i * 60_000, services=[f"svc-{i}"], status="resolved"))
    page = c.get("/api/incidents", params={"limit": 3}).json()
    assert [r["id"] for r in page["incidents"]] == ["inc-2", "inc-1", "inc-3"]
    assert page["attached"] and page["remediation"]
    assert [r["waiting"] for r in page["incidents"]] == [False, True, False]
    assert page["incidents"][1]["top_service"] == "redis" and page["incidents"][1]["services"] == ["redis", "frontend"]
    seen, cursor = [], None
    while True:
        p = c.get("/api/incidents", params={"limit": 2, **({"cursor": cursor} if cursor else {})}).json()
        seen += [r["id"] for r in p["incidents"]]
        cursor = p["next_cursor"]
        if cursor is None:
            break
    assert seen == ["inc-2", "inc-1", "inc-3", "inc-4", "inc-5", "inc-6", "inc-7"]
    resolved = c.get("/api/incidents", params={"status": "resolved"}).json()["incidents"]
    assert [r["id"] for r in resolved] == ["inc-3", "inc-4", "inc-5", "inc-6", "inc-7"]
    bad = c.get("/api/incidents", params={"cursor": "nonsense"})
    assert bad.status_code == 422 and bad.json() == {
        "error": "is not a cursor of this list (pass the previous page's next_cursor)", "field": "cursor",
        "value": "nonsense"}  # fmt: skip
    bad = c.get("/api/incidents", params={"status": "sleeping"})
    assert bad.status_code == 422 and bad.json()["field"] == "status" and bad.json()["value"] == "sleeping"
    assert httpx.get(str(c.base_url) + "/api/incidents", timeout=30).status_code == 401


def test_an_incident_has_its_subgraph_causes_timeline_and_the_run_waiting_at_its_gate(served):
    c = served["client"]
    inc = c.get("/api/incidents/inc-1").json()
    assert inc["status"] == "open" and inc["severity"] == "critical" and inc["alerts"] == ["a1", "a2"]
    assert [(x["service"], x["kind"]) for x in inc["causes"]] == [("redis", "deploy"), ("cart", "latency")]
    assert inc["causes"][0]["evidence"] == {"version": "7.0 -> 7.2", "z": {"latency-p90": 14.2}}
    assert [t["what"] for t in inc["timeline"]] == ["open", "alert", "diagnosed"]
    nodes = {n["id"]: n for n in inc["subgraph"]["nodes"]}
    assert sorted(nodes) == ["cart", "frontend", "redis"]  # cart connects the two that alerted
    assert (nodes["redis"]["anomalous"], nodes["redis"]["cause_rank"]) == (True, 1)
    assert (nodes["cart"]["anomalous"], nodes["cart"]["cause_rank"]) == (False, 2)
    assert [(e["source"], e["target"]) for e in inc["subgraph"]["edges"]] == [("cart", "redis"), ("frontend", "cart")]
    assert inc["live_graph"] is False and inc["skipped"] == []
    (run,) = inc["runs"]
    assert (run["run_id"], run["status"], run["waiting_step"], run["dry_run"]) == (
        "inc-1:rollback", "waiting_approval", 0, True)  # fmt: skip
    assert run["steps"][0] == {"index": 0, "action": "approve", "params": None, "status": "waiting",
                                    "result": None, "reason": "roll back redis?", "approved_by": None,
                                    "comment": None, "at_ms": INCIDENT_T0 + 30_000}  # fmt: skip
    missing = c.get("/api/incidents/inc-99")
    assert missing.status_code == 404 and missing.json() == {"error": "no such incident", "field": "id",
                                                             "value": "inc-99"}  # fmt: skip


def test_approve_records_through_the_store_then_the_run_goes_on(served):
    c, run_id = served["client"], served["run"]
    refused = httpx.post(str(c.base_url) + f"/api/remediation/{run_id}/approve", json={"by": "x"}, timeout=30)
    assert refused.status_code == 401  # writes need the token like the rest
    bad = c.post(f"/api/remediation/{run_id}/approve", json={"by": "ana", "step": 3})
    assert bad.status_code == 422 and bad.json()["field"] == "step"  # the gate is the one the run waits at
    r = c.post(f"/api/remediation/{run_id}/approve", json={"by": "ana", "comment": "canary is fine"})
    assert r.status_code == 201, r.text
    body = r.json()
    assert (body["step"], body["first"], body["signalled"]) == (0, True, False)
    assert body["run"]["waiting_step"] is None and body["run"]["resuming"] is True
    assert [r["waiting"] for r in c.get("/api/incidents").json()["incidents"]] == [False, False]  # nobody is needed
    other = RemediationStore(served["run_file"])  # another connection: it is in the file
    try:
        assert other.approval(run_id, 0) == {"run_id": run_id, "step": 0, "by": "ana", "at_ms": NOW_MS,
                                             "comment": "canary is fine"}  # fmt: skip
        assert [a["event"] for a in other.audit(run_id)][-1] == "approved"
    finally:
        other.close()
    again = c.post(f"/api/remediation/{run_id}/approve", json={})
    assert again.status_code == 201 and again.json()["first"] is False  # approving twice is harmless
    # the in-process engine looks again: the gate is open, the (dry-run) rollback is recorded as an action
    rstore, spec = served["remediation"], served["spec"]
    assert InProcessExecutor(StepRunner(spec, rstore)).resume(run_id, NOW_MS + 1000) == "succeeded"
    (run,) = c.get("/api/incidents/inc-1").json()["runs"]
    assert run["status"] == "succeeded" and run["waiting_step"] is None
    assert [(s["action"], s["status"]) for s in run["steps"]] == [("approve", "done"), ("rollback", "done")]
    assert run["steps"][0]["approved_by"] == "ana"
    assert run["steps"][1]["params"] == {"service": "redis"}
    assert run["steps"][1]["result"]["would"] == "POST http://deploy.invalid/actions/rollback"
    done = c.post(f"/api/remediation/{run_id}/approve", json={"by": "ana"})
    assert done.status_code == 409 and done.json() == {"error": "has finished (status succeeded)", "field": "run_id",
                                                       "value": run_id}  # fmt: skip
    nope = c.post("/api/remediation/inc-9:nope/approve", json={})
    assert nope.status_code == 404 and nope.json()["field"] == "run_id"


def test_the_approver_is_injected_as_the_cli_passes_it(tmp_path, incident_files):
    """`vigil console` hands create_app the CLI's approve_gate (which signals Temporal runs); the console calls it
    with the waiting gate, the person and the clock's time."""
    calls = []

    def approver(store, run, step, *, by, at_ms, comment):
        calls.append((run["run_id"], step, by, at_ms, comment))
        return approve_gate(store, run, step, by=by, at_ms=at_ms, comment=comment, address="127.0.0.1:1")

    store = AlertStore(tmp_path / "alerts.db")
    rstore = RemediationStore(incident_files["remediation"])
    app = create_app(store=store, token=TOKEN, pipeline_name="shop", clock=lambda: 42, remediation=rstore,
                     approve=approver)  # fmt: skip
    handle, url = serve_console(app)
    try:
        r = httpx.post(url + "api/remediation/inc-1:rollback/approve", json={"comment": "ok"}, headers=AUTH, timeout=30)
        assert r.status_code == 201 and (r.json()["first"], r.json()["signalled"]) == (True, False)  # in-process
        assert calls == [("inc-1:rollback", 0, "console", 42, "ok")]
        assert rstore.approval("inc-1:rollback", 0)["by"] == "console"
    finally:
        handle.stop()
        store.close()
        rstore.close()


def test_without_stores_the_incident_routes_say_how_to_attach_them(tmp_path):
    store = AlertStore(tmp_path / "alerts.db")
    handle, url = serve_console(create_app(store=store, token=TOKEN, pipeline_name="shop"))
    try:
        with httpx.Client(base_url=url, headers=AUTH, timeout=30) as c:
            assert c.get("/api/incidents").json() == {"incidents": [], "next_cursor": None, "attached": False,
                                                      "remediation": False}  # fmt: skip
            r = c.get("/api/incidents/inc-1")
            assert r.status_code == 404 and r.json()["field"] == "incidents" and "--incidents PATH" in r.json()["error"]
            r = c.post("/api/remediation/inc-1:p/approve", json={})
            assert r.status_code == 404 and r.json()["field"] == "remediation"
    finally:
        handle.stop()
        store.close()


def test_a_live_graph_weights_the_subgraph_edges(tmp_path, incident_files):
    class GraphStep:
        name = "red"

        def graph_json(self):
            return {"nodes": [{"id": "redis", "anomalous": True}, {"id": "web", "anomalous": False}],
                    "edges": [{"source": "cart", "target": "redis", "calls": 900, "errors": 12},
                              {"source": "web", "target": "cart", "calls": 5, "errors": 0}]}  # fmt: skip

    store = AlertStore(tmp_path / "alerts.db")
    istore = IncidentStore(incident_files["incidents"])
    runner = SimpleNamespace(p=SimpleNamespace(steps=[GraphStep()]))
    handle, url = serve_console(create_app(store=store, runner=runner, token=TOKEN, pipeline_name="shop",
                                           incidents=istore))  # fmt: skip
    try:
        inc = httpx.get(url + "api/incidents/inc-1", headers=AUTH, timeout=30).json()
        assert inc["live_graph"] is True and inc["runs"] == [] and inc["remediation"] is False
        edges = {(e["source"], e["target"]): (e["calls"], e["errors"]) for e in inc["subgraph"]["edges"]}
        assert edges == {("cart", "redis"): (900, 12), ("frontend", "cart"): (None, None)}  # web is not in it
        assert {n["id"]: n["live_anomalous"] for n in inc["subgraph"]["nodes"]}["redis"] is True
        g = httpx.get(url + "api/services/graph", headers=AUTH, timeout=30).json()
        assert g["step"] == "red" and len(g["edges"]) == 2
    finally:
        handle.stop()
        store.close()
        istore.close()


def test_vigil_console_opens_the_incident_and_remediation_stores(tmp_path, incident_files):
    code = "import typer; from vigil.cli.console import console_cmd; typer.run(console_cmd)"
    cmd = [sys.executable, "-c", code, "--incidents", str(incident_files["incidents"]), "--remediation",
           str(incident_files["remediation"]), "--port", "0", "--state-dir", str(tmp_path / "state")]  # fmt: skip
    env = {**os.environ, "COLUMNS": "400"}
    env.pop("VIGIL_TEMPORAL_ADDRESS", None)
    cwd = tmp_path / "elsewhere"  # no vigil-out/alerts.db there: the alert pages are empty, the incidents are not
    cwd.mkdir()
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env, cwd=cwd)
    try:
        lines, deadline = [], time.monotonic() + 60
        while not any(line.startswith("sign in: ") for line in lines):
            line = proc.stderr.readline()
            assert line or proc.poll() is None, "".join(lines)
            lines.append(line)
            assert time.monotonic() < deadline, "".join(lines)
        assert any(line.strip() == f"incidents: {incident_files['incidents']}" for line in lines), lines
        url, token = next(x for x in lines if x.startswith("sign in: "))[len("sign in: ") :].strip().split("?token=")
        auth = {"Authorization": f"Bearer {token}"}
        rows = httpx.get(url + "api/incidents", headers=auth, timeout=30).json()["incidents"]
        assert [r["id"] for r in rows] == ["inc-2", "inc-1"] and rows[1]["waiting"]
        r = httpx.post(url + "api/remediation/inc-1:rollback/approve", json={"by": "ana"}, headers=auth, timeout=30)
        assert r.status_code == 201 and r.json()["signalled"] is False
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(60)
    assert proc.returncode == 0
    assert not (cwd / "vigil-out").exists()  # nothing was made on the side
    missing = subprocess.run([*cmd[:3], "--incidents", str(tmp_path / "nope.db")], capture_output=True, text=True,
                             env=env, cwd=cwd)  # fmt: skip
    assert missing.returncode == 1 and "--incidents" in missing.stderr and "does not exist" in missing.stderr
