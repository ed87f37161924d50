"""Live reconfiguration: `vigil apply` validates, versions and applies changes without a restart or lost state."""

import json
import os

import pytest
import yaml
from typer.testing import CliRunner

from vigil.cli.main import app
from vigil.config.spec import build_pipeline, parse_spec
from vigil.control import ConfigHistory, LiveControl, plan_changes
from vigil.engine.runner import EmbeddedRunner
from vigil.io.generators.transactions import TransactionSpec, generate_transactions, write_jsonl
from vigil.io.sinks import MemorySink


@pytest.fixture(scope="module")
def tx_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("tx") / "tx.jsonl"
    write_jsonl(generate_transactions(TransactionSpec(events=40_000, users=500, seed=4)), str(path))
    return path


def _doc(tx_file, threshold=3.0, window="60s", severity="warning"):
    return {
        "name": "live",
        "source": {"kind": "jsonl", "path": str(tx_file),
                   "schema": {"key": "user", "time": "ts", "fields": ["amount"], "extra": ["txn_id"],
                              "optional": ["label", "pattern"]}},
        "event_ids": "txn_id",
        "batching": {"max_rows": 1000},
        "steps": [{"name": "z", "detector": "sliding_zscore", "severity": severity,
                   "params": {"field": "amount", "window": window, "threshold": threshold, "protect": False,
                              "baseline_halflife": None, "transform": "log"}}],
        "alerts": [{"kind": "console"}],
    }


def test_plan_accepts_thresholds_and_severity_and_refuses_what_shapes_state(tx_file):
    base = parse_spec(_doc(tx_file))
    ok = plan_changes(base, parse_spec(_doc(tx_file, threshold=4.0, severity="critical")))
    assert ok.ok and ok.changes == ["step `z`: severity warning -> critical", "step `z`: params.threshold 3.0 -> 4.0"]
    bad = plan_changes(base, parse_spec(_doc(tx_file, window="30s")))
    assert not bad.ok and "params.window" in bad.problems[0] and "'30s'" in bad.problems[0]
    moved = dict(_doc(tx_file), name="other")
    assert "`name` can't change" in plan_changes(base, parse_spec(moved)).problems[0]
    renamed = _doc(tx_file)
    renamed["steps"][0]["name"] = "z2"
    assert "steps can't change" in plan_changes(base, parse_spec(renamed)).problems[0]


def _run(tx_file, threshold, switch_after=None, new_threshold=None, tmp_path=None):
    """Run the pipeline; with switch_after, record a new version after that many batches (applied live)."""
    spec = parse_spec(_doc(tx_file, threshold))
    p = build_pipeline(spec)
    sink = MemorySink()
    p.alert_sinks[:] = [sink]
    before: set[str] = set()
    taps = []
    control = None
    if switch_after is not None:
        h = ConfigHistory(tmp_path / "config")
        v1 = h.record(yaml.safe_dump(_doc(tx_file, threshold)), action="start")
        control = LiveControl(h, spec, v1, interval_s=0)
        seen = [0]

        def tap(batch, keys, verdicts):
            seen[0] += 1
            if seen[0] <= switch_after:
                before.update(str(x) for x in batch.extra["txn_id"].tolist())
            if seen[0] == switch_after:
                h.record(yaml.safe_dump(_doc(tx_file, new_threshold)), action="apply", who="test")

        taps.append(tap)
    runner = EmbeddedRunner(p, out_dir=str(tmp_path), taps=taps)
    runner.control = control
    runner.run()
    return runner, sink.items, before


def test_threshold_changed_live_keeps_every_keys_history(tx_file, tmp_path):
    """Before the switch: the old threshold's alerts; after: exactly those of a run that had the new one all along
    (which needs every key's window and baseline from before the switch)."""
    _, old, _ = _run(tx_file, 3.0, tmp_path=tmp_path / "a")
    _, new, _ = _run(tx_file, 4.5, tmp_path=tmp_path / "b")
    runner, got, before = _run(tx_file, 3.0, switch_after=15, new_threshold=4.5, tmp_path=tmp_path / "c")
    assert runner.control.applied and runner.control.applied[0][0] == "v0002"
    expected = {a.id for a in old if a.event_id in before} | {a.id for a in new if a.event_id not in before}
    assert {a.id for a in got} == expected
    assert {a.id for a in old} != {a.id for a in new}  # the change mattered
    assert ConfigHistory(tmp_path / "c" / "config").applied() == "v0002"


def test_apply_cli_validates_versions_and_rolls_back(tx_file, tmp_path):
    out = tmp_path / "out"
    h = ConfigHistory(out / "live" / "config")
    h.record(yaml.safe_dump(_doc(tx_file)), action="start", who="vigil run")  # what `vigil run` records
    cli = CliRunner()
    f = tmp_path / "p.yaml"

    f.write_text(yaml.safe_dump(_doc(tx_file, window="30s")))
    r = cli.invoke(app, ["apply", str(f), "--out", str(out), "--wait", "0"])
    assert r.exit_code == 2 and "params.window" in r.output and h.current_version() == "v0001"

    f.write_text(yaml.safe_dump(_doc(tx_file, threshold=5.0)))
    r = cli.invoke(app, ["apply", str(f), "--out", str(out), "--dry-run"])
    assert r.exit_code == 0 and "params.threshold 3.0 -> 5.0" in r.output and h.current_version() == "v0001"
    r = cli.invoke(app, ["apply", str(f), "--out", str(out), "--wait", "0", "--why", "too noisy"])
    assert r.exit_code == 0 and h.current_version() == "v0002", r.output
    r = cli.invoke(app, ["apply", str(f), "--out", str(out), "--rollback", "--wait", "0"])
    assert r.exit_code == 0 and h.current_version() == "v0001", r.output
    r = cli.invoke(app, ["apply", str(f), "--out", str(out), "--history"])
    assert r.exit_code == 0 and "too noisy" in r.output
    assert [e["action"] for e in h.entries()] == ["start", "apply", "rollback"]
    assert json.loads(json.dumps(h.entries()[1]["changes"])) == ["step `z`: params.threshold 3.0 -> 5.0"]


def test_apply_without_a_running_pipeline_says_how(tx_file, tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text(yaml.safe_dump(_doc(tx_file)))
    r = CliRunner().invoke(app, ["apply", str(f), "--out", str(tmp_path / "none")])
    assert r.exit_code == 2 and "vigil run" in r.output


def test_apply_never_claims_a_stopped_pipeline_applied_it(tx_file, tmp_path):
    """Was: "applied by the running pipeline" read from the `applied` marker an earlier run left behind."""
    import subprocess
    import sys

    out = tmp_path / "out"
    h = ConfigHistory(out / "live" / "config")
    h.record(yaml.safe_dump(_doc(tx_file)), action="start", who="vigil run")
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (h.dir / "applied").write_text(f"v0001 1.0 {int(gone.stdout)}\n")  # the marker of a run that has ended
    f = tmp_path / "p.yaml"
    f.write_text(yaml.safe_dump(_doc(tx_file, threshold=5.0)))
    cli = CliRunner(env={"COLUMNS": "300"})
    r = cli.invoke(app, ["apply", str(f), "--out", str(out), "--wait", "5"])
    assert r.exit_code == 0 and h.current_version() == "v0002"
    assert "applied by the running pipeline" not in r.output
    assert f"recorded v0002 (was v0001); nothing confirmed it: no pipeline is running with --out {out}" in r.output
    r = cli.invoke(app, ["apply", str(f), "--out", str(out), "--rollback", "--wait", "5"])  # back to v0001
    assert r.exit_code == 0 and "rolled back v0002 -> v0001; nothing confirmed it" in r.output
    # a live process that wrote the marker but hasn't taken the new version (yet)
    (h.dir / "applied").write_text(f"v0001 1.0 {os.getpid()}\n")
    r = cli.invoke(app, ["apply", str(f), "--out", str(out), "--wait", "0"])
    assert r.exit_code == 0 and f"the running pipeline (pid {os.getpid()}) has not confirmed it within 0s" in r.output
    h.mark_applied("v0003")  # ... and once it has
    r = cli.invoke(app, ["apply", str(f), "--out", str(out), "--wait", "0"])
    assert r.exit_code == 0 and "no change against the current v0003" in r.output


def test_console_api_applies_and_rolls_back_live(tx_file, tmp_path):
    """The console's config API: the same validation and versioning as `vigil apply`."""
    from types import SimpleNamespace

    import httpx

    from vigil.alerting.store import AlertStore
    from vigil.console.app import create_app
    from vigil.console.server import serve_console

    spec = parse_spec(_doc(tx_file))
    h = ConfigHistory(tmp_path / "config")
    v1 = h.record(yaml.safe_dump(_doc(tx_file)), action="start")
    runner = SimpleNamespace(control=LiveControl(h, spec, v1, interval_s=0))
    app = create_app(store=AlertStore(str(tmp_path / "a.db")), runner=runner, token="t0k3n", pipeline_name="live")
    handle, url = serve_console(app, "127.0.0.1", 0)
    auth = {"Authorization": "Bearer t0k3n"}
    try:
        r = httpx.post(f"{url}api/config", headers=auth, json={"yaml": yaml.safe_dump(_doc(tx_file, window="30s"))})
        assert r.status_code == 422 and "params.window" in r.json()["error"] and h.current_version() == v1
        r = httpx.post(f"{url}api/config", headers=auth,
                       json={"yaml": yaml.safe_dump(_doc(tx_file, threshold=4.0)), "why": "from the console"})
        assert r.status_code == 201 and r.json()["version"] == "v0002" and h.current_version() == "v0002"
        assert httpx.get(f"{url}api/config", headers=auth).json()["history"][-1]["why"] == "from the console"
        assert httpx.post(f"{url}api/config", json={"yaml": "x: 1"}).status_code == 401  # the token guards it too
        r = httpx.post(f"{url}api/config/rollback", headers=auth, json={})
        assert r.status_code == 201 and h.current_version() == v1
    finally:
        handle.stop()
