"""`vigil remediation` and `vigil incidents` read their stores; errors name the field and value."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from vigil.cli.main import app
from vigil.incidents import Cause, Incident, IncidentStore
from vigil.remediation import InProcessExecutor, RemediationStore, Remediator, StepRunner, parse_playbooks


def _stores(tmp_path: Path) -> tuple[Path, Path]:
    spec = parse_playbooks({"allow": ["p"], "deploy_api": {"url": "http://api"}, "playbooks": [
        {"name": "p", "match": {"kind": ["deploy"]}, "steps": [{"approve": {"reason": "ok?"}},
                                                             {"rollback": {"service": "{cause.service}"}}]}]})  # fmt: skip
    inc = Incident("inc-1", 1_000, "critical", ["cart"], [Cause("cart", "deploy", 0.9, {"deploy": "v2"})])
    inc.note(1_000, "open", "cart")
    rdb, idb = tmp_path / "remediation.db", tmp_path / "incidents.db"
    store = RemediationStore(rdb)
    Remediator(spec, store, InProcessExecutor(StepRunner(spec, store))).on_incident(inc, at_ms=2_000)
    IncidentStore(idb).put(inc)
    return rdb, idb


def test_list_show_approve_audit_and_incidents(tmp_path: Path) -> None:
    rdb, idb = _stores(tmp_path)
    cli = CliRunner(env={"COLUMNS": "200"})
    r = cli.invoke(app, ["remediation", "list", "--store", str(rdb), "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)[0]["status"] == "waiting_approval"
    r = cli.invoke(app, ["remediation", "show", "inc-1:p", "--store", str(rdb)])
    assert r.exit_code == 0 and "waiting for approval of step 0" in r.stdout
    r = cli.invoke(app, ["remediation", "approve", "inc-1:p", "--by", "ann", "--store", str(rdb)])
    assert r.exit_code == 0 and "approved step 0" in r.stderr
    assert RemediationStore(rdb).approval("inc-1:p", 0)["by"] == "ann"
    r = cli.invoke(app, ["remediation", "audit", "inc-1:p", "--store", str(rdb), "--json"])
    assert [e["event"] for e in json.loads(r.stdout)][-1] == "approved"
    r = cli.invoke(app, ["incidents", "list", "--store", str(idb), "--json"])
    assert json.loads(r.stdout)[0]["top_service"] == "cart"
    r = cli.invoke(app, ["incidents", "show", "inc-1", "--store", str(idb)])
    assert r.exit_code == 0 and "deploy" in r.stdout
    r = cli.invoke(app, ["incidents", "postmortem", "inc-1", "--service", "cart", "--kind", "deploy", "--label",
                         "team=shop", "--store", str(idb)])  # fmt: skip
    assert r.exit_code == 0 and IncidentStore(idb).postmortems()[0]["labels"] == {"team": "shop"}


def test_errors_name_the_field(tmp_path: Path) -> None:
    rdb, idb = _stores(tmp_path)
    cli = CliRunner(env={"COLUMNS": "200"})
    r = cli.invoke(app, ["remediation", "show", "nope", "--store", str(rdb)])
    assert r.exit_code == 2 and "`run`" in r.stderr and "nope" in r.stderr
    r = cli.invoke(app, ["remediation", "list", "--store", str(tmp_path / "none.db")])
    assert r.exit_code == 2 and "--store" in r.stderr
    r = cli.invoke(app, ["incidents", "postmortem", "inc-1", "--service", "cart", "--kind", "oops", "--store", str(idb)])
    assert r.exit_code == 2 and "--kind" in r.stderr
    r = cli.invoke(app, ["incidents", "list", "--status", "closed", "--store", str(idb)])
    assert r.exit_code == 2 and "--status" in r.stderr
