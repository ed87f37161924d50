"""Pipeline metrics: scraped values against RunStats, a real Prometheus scraping a live pipeline, the dashboard.

The Prometheus test installs the Debian `prometheus` package with apt-get when /usr/bin/prometheus is missing
(as tests/test_prometheus.py does for the node exporter). Nothing here asserts on timing: live values are
polled with generous deadlines.
"""

from __future__ import annotations

import json
import math
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

import vigil
from vigil.dataflow.pipeline import Pipeline
from vigil.detectors import SlidingZScore, VelocityRule
from vigil.engine.runner import EmbeddedRunner
from vigil.errors import SinkError
from vigil.io.memory import MemorySource
from vigil.io.replay import ReplaySource
from vigil.io.schema import Schema
from vigil.io.sinks import MemorySink
from vigil.models.serving import RegistryModelDetector
from vigil.models.training import train_isolation_forest
from vigil.ops.metrics import PipelineMetrics, serve
from vigil.testing.system import debian_program, free_port

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "deploy" / "grafana" / "vigil-dashboard.json"
PROMETHEUS = "/usr/bin/prometheus"
ALLOWED_LABELS = {"pipeline", "step", "partition", "state", "rule", "feature", "version", "le"}


def _scrape(port: int) -> dict[str, object]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return {f.name: f for f in text_string_to_metric_families(text)}


def _value(fams, family: str, sample: str | None = None, **labels) -> float:
    hits = [s.value for s in fams[family].samples
            if s.name == (sample or family) and all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(hits) == 1, (family, sample, labels, fams[family].samples)
    return hits[0]


def _sample_names(fams) -> set[str]:
    """Every series name the families can have (also for families that have no sample right now)."""
    out = set()
    for f in fams.values():
        out |= {s.name for s in f.samples}
        out |= {f.name + sfx for sfx in {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"]}.get(
            f.type, [""])}
    return out


# ---- (a) scraped values equal the run's counters ---------------------------------------------------------


def _rows(n: int = 3000):
    rows = []
    for i in range(n):
        ts = 1_700_000_000_000 + i * 100
        if i % 97 == 50:
            ts -= 60_000  # a minute behind the watermark: late
        amount = "garbage" if i % 151 == 7 else (300.0 if i % 500 == 499 else 20.0 + (i % 7))
        rows.append({"user": f"user-{i % 40:03d}", "ts": ts, "amount": amount, "txn": f"t{i}"})
    return rows


def test_scraped_metrics_match_run_stats_and_never_label_a_key(tmp_path):
    rows = _rows()
    schema = Schema(key="user", time="ts", fields=("amount",), extra=("txn",))
    alerts = MemorySink()
    p = (Pipeline("cards").source(MemorySource(rows, batch_size=250, schema=schema)).watermark("2s")
         .detect("amount_z", SlidingZScore(field="amount", window="60s", threshold=4, min_count=10,
                                           baseline_halflife=None))
         .detect("velocity", VelocityRule(window="10s", max_count=50)).event_ids("txn")
         .checkpoints(str(tmp_path / "chk"), interval="1ms").alerts_to(alerts))  # fmt: skip
    runner = EmbeddedRunner(p, out_dir=str(tmp_path))
    m = PipelineMetrics(runner)
    server, port = serve(m.registry)
    try:
        st = runner.run()
        m.set_alert_states({"firing": 2, "resolved": 5})
        fams = _scrape(port)
    finally:
        server.shutdown()
        server.server_close()
    assert st.late_events > 0 and st.dead_letters > 0 and st.alerts > 0 and st.checkpoints > 1
    v = lambda fam, **kw: _value(fams, fam, **kw)  # noqa: E731
    assert v("vigil_source_events", sample="vigil_source_events_total", pipeline="cards") == st.events_in
    assert v("vigil_late_events", sample="vigil_late_events_total") == st.late_events
    assert v("vigil_dead_letters", sample="vigil_dead_letters_total") == st.dead_letters
    assert v("vigil_batches", sample="vigil_batches_total") == st.batches
    assert v("vigil_checkpoints", sample="vigil_checkpoints_total") == st.checkpoints
    assert v("vigil_checkpoint_failures", sample="vigil_checkpoint_failures_total") == 0
    assert v("vigil_checkpoint_duration_seconds", sample="vigil_checkpoint_duration_seconds_count") == st.checkpoints
    for step in ("amount_z", "velocity"):
        assert v("vigil_step_events", sample="vigil_step_events_total", step=step) == st.events
        assert v("vigil_step_alerts", sample="vigil_step_alerts_total", step=step) == st.fired.get(step, 0)
        assert v("vigil_step_flagged", sample="vigil_step_flagged_total", step=step) == st.flagged.get(step, 0)
        assert v("vigil_step_unscored", sample="vigil_step_unscored_total", step=step) == st.unscored.get(step, 0)
        n = v("vigil_step_latency_seconds", sample="vigil_step_latency_seconds_count", step=step)
        assert n == v("vigil_batch_rows", sample="vigil_batch_rows_count") > 0  # one per batch with rows
        assert v("vigil_step_latency_seconds", sample="vigil_step_latency_seconds_bucket", step=step, le="+Inf") == n
    assert v("vigil_batch_rows", sample="vigil_batch_rows_sum") == st.events
    assert v("vigil_state_keys") == st.keys == 40
    assert v("vigil_state_bytes") == st.state_bytes > 0
    assert v("vigil_watermark_seconds") == st.watermark_ms / 1000
    assert v("vigil_watermark_lag_seconds") > 0  # the data is from 2023
    assert v("vigil_alerts", state="firing") == 2 and v("vigil_alerts", state="resolved") == 5
    assert v("vigil_build_info", version=vigil.__version__) == 1
    assert {s.labels["rule"] for s in fams["vigil_self_alerts"].samples} >= {"stalled_watermark", "input_drift"}
    assert fams["vigil_consumer_lag_messages"].samples == []  # not a Kafka source
    keys = {r["user"] for r in rows} | {r["txn"] for r in rows}
    labels = {(k, val) for f in fams.values() for s in f.samples for k, val in s.labels.items()}
    assert {k for k, _ in labels} <= ALLOWED_LABELS
    assert not {val for _, val in labels} & keys, "an event key or id became a label value"


class _FailingFlush(MemorySink):
    def flush(self):
        raise SinkError("disk full")


def test_failed_checkpoints_are_counted(tmp_path):
    src = ReplaySource(np.array(["a"] * 100, object), np.arange(100) * 10, {"amount": np.ones(100)})
    p = (Pipeline("broken").source(src).micro_batches(max_rows=10).detect("v", VelocityRule())
         .checkpoints(str(tmp_path / "chk"), interval="1ms").alerts_to(_FailingFlush()))
    runner = EmbeddedRunner(p, out_dir=str(tmp_path))
    m = PipelineMetrics(runner)
    with pytest.raises(SinkError, match="disk full"):
        runner.run()
    assert m.checkpoint_failures == 1 and m.checkpoint_failures_in_row == 1
    fams = {f.name: f for f in text_string_to_metric_families(_latest(m))}
    assert _value(fams, "vigil_checkpoint_failures", "vigil_checkpoint_failures_total") == 1
    assert _value(fams, "vigil_checkpoints", "vigil_checkpoints_total") == 0


def _latest(m: PipelineMetrics) -> str:
    return generate_latest(m.registry).decode()


class _LagReader:
    def lag(self):
        return {"0": 12, "1": 0, "2": 7}


def test_model_health_fallbacks_drift_and_consumer_lag(tmp_path):
    rng = np.random.default_rng(5)
    root = tmp_path / "models"
    train = {"cpu": rng.normal(50, 5, 3000), "mem": rng.normal(60, 3, 3000)}
    train_isolation_forest(train, features=["cpu", "mem"], name="srv", registry_root=root, n_estimators=20,
                           time_column=None, promote=True)
    n = 4000
    cols = {"cpu": rng.normal(80, 5, n), "mem": rng.normal(60, 3, n)}  # cpu moved by 6 sd: drift
    src = ReplaySource(np.array([f"host-{i % 30}" for i in range(n)], object), np.arange(n) * 1000, cols)
    det = RegistryModelDetector("srv", str(root), check_interval_s=0)
    alerts = MemorySink()
    p = (Pipeline("fleet").source(src).micro_batches(max_rows=400).detect("iso", det).alerts_to(alerts))
    runner = EmbeddedRunner(p, out_dir=str(tmp_path))
    m = PipelineMetrics(runner, interval_s=0.0)
    runner.run()
    fams = {f.name: f for f in text_string_to_metric_families(_latest(m))}
    assert _value(fams, "vigil_model_healthy", step="iso") == 1
    assert _value(fams, "vigil_model_fallbacks", "vigil_model_fallbacks_total", step="iso") == 0
    psi_cpu = _value(fams, "vigil_input_drift_psi", step="iso", feature="cpu")
    psi_mem = _value(fams, "vigil_input_drift_psi", step="iso", feature="mem")
    assert psi_cpu > 0.25 and psi_mem < 0.1, (psi_cpu, psi_mem)
    own = [a for a in alerts.items if a.detector == "vigil_self"]
    assert [a.key for a in own] == ["fleet/input_drift/cpu"]
    assert 0 <= m.sample().model_age_s["iso"] < 3600  # from the version's `created` in the registry
    assert m.sample(now=time.time() + 40 * 86_400).model_age_s["iso"] > 30 * 86_400  # stale_model's input
    # the registry loses its pointer: the next batch falls back
    os.remove(root / "srv" / "PROMOTED")
    det.process_many(np.zeros(1, np.int32), np.zeros(1, np.int64), {"cpu": np.ones(1), "mem": np.ones(1)})
    runner.readers = {"kafka": _LagReader()}  # what a Kafka reader reports
    fams = {f.name: f for f in text_string_to_metric_families(_latest(m))}
    assert _value(fams, "vigil_model_healthy", step="iso") == 0
    assert _value(fams, "vigil_model_fallbacks", "vigil_model_fallbacks_total", step="iso") == 1
    assert {s.labels["partition"]: s.value for s in fams["vigil_consumer_lag_messages"].samples} == {
        "0": 12, "1": 0, "2": 7}
    assert m.sample().lag == {"0": 12, "1": 0, "2": 7}


def test_close_frees_the_registry_for_a_restarted_run(tmp_path):
    src = lambda: ReplaySource(np.array(["a"] * 5, object), np.arange(5), {"amount": np.ones(5)})  # noqa: E731
    first = EmbeddedRunner(Pipeline("r").source(src()).detect("v", VelocityRule()), out_dir=str(tmp_path))
    m = PipelineMetrics(first)
    first.run()
    m.close()
    assert first.metrics is None
    second = EmbeddedRunner(Pipeline("r").source(src()).detect("v", VelocityRule()), out_dir=str(tmp_path))
    PipelineMetrics(second, m.registry)  # same names, same registry: no "duplicated timeseries"
    second.run()
    assert 'vigil_source_events_total{pipeline="r"} 5.0' in generate_latest(m.registry).decode()


# ---- (c) the Grafana dashboard -------------------------------------------------------------------------


def _dashboard_exprs() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    exprs = []

    def walk(node):
        if isinstance(node, dict):
            if isinstance(node.get("expr"), str):
                exprs.append(node["expr"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(dash["panels"])
    return exprs


def test_dashboard_uses_only_metrics_that_vigil_exports(tmp_path):
    dash = json.loads(DASHBOARD.read_text())
    assert 36 <= dash["schemaVersion"] <= 41 and dash["uid"] == "vigil-pipelines"
    assert [i["name"] for i in dash["__inputs"]] == ["DS_PROMETHEUS"]
    panels = [p for p in dash["panels"] if p["type"] != "row"]
    assert len({p["id"] for p in dash["panels"]}) == len(dash["panels"])
    assert all(p["datasource"]["uid"] == "${DS_PROMETHEUS}" and p["targets"] for p in panels)
    exprs = _dashboard_exprs()
    used = {name for e in exprs for name in re.findall(r"\b(vigil_[a-z0-9_]+)", e)}
    src = ReplaySource(np.array(["a"] * 5, object), np.arange(5), {"amount": np.ones(5)})
    runner = EmbeddedRunner(Pipeline("d").source(src).detect("v", VelocityRule()), out_dir=str(tmp_path))
    m = PipelineMetrics(runner)
    runner.run()
    exported = _sample_names({f.name: f for f in text_string_to_metric_families(_latest(m))})
    assert used <= exported, f"the dashboard uses metrics Vigil doesn't export: {sorted(used - exported)}"
    for needed in ("vigil_step_latency_seconds_bucket", "vigil_consumer_lag_messages", "vigil_input_drift_psi",
                   "vigil_self_alerts", "vigil_model_healthy", "vigil_checkpoint_duration_seconds_bucket"):
        assert needed in used, f"no panel shows {needed}"


# ---- (b) a real Prometheus scraping a live pipeline ----------------------------------------------------


@pytest.fixture(scope="module")
def prometheus_bin() -> str:
    debian_program(PROMETHEUS, "prometheus")
    return PROMETHEUS


def _start_prometheus(binary: str, target: str, tmp: Path) -> tuple[subprocess.Popen, str]:
    """Prometheus scraping `target` every second; no alerting, no remote write: it only scrapes and answers."""
    cfg = tmp / "prometheus.yml"
    cfg.write_text(f"""global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: vigil
    static_configs:
      - targets: ["{target}"]
""")
    listen = f"127.0.0.1:{free_port()}"
    log = open(tmp / "prometheus.log", "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen([binary, f"--config.file={cfg}", f"--storage.tsdb.path={tmp / 'tsdb'}",
                             f"--web.listen-address={listen}", "--storage.tsdb.retention.time=1h",
                             f"--web.console.templates={tmp}", f"--web.console.libraries={tmp}", "--log.level=warn"],
                            stdout=log, stderr=log, cwd=tmp)  # fmt: skip
    log.close()
    return proc, f"http://{listen}"


def _wait(what: str, fn, proc: subprocess.Popen, log: Path, timeout_s: float = 120.0):
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"prometheus exited ({proc.returncode}) waiting for {what}:\n{log.read_text()[-3000:]}")
        try:
            last = fn()
            if last:
                return last
        except (httpx.HTTPError, ValueError, KeyError) as exc:  # not ready yet: 503 text, or partial answers
            last = exc
        time.sleep(0.2)
    pytest.fail(f"no {what} within {timeout_s:.0f} s (last: {last!r}):\n{log.read_text()[-3000:]}")


def _query(base: str, q: str) -> list[dict]:
    body = httpx.get(f"{base}/api/v1/query", params={"query": q}, timeout=10).json()
    assert body["status"] == "success", (q, body)
    return body["data"]["result"]


def test_real_prometheus_scrapes_a_live_pipeline(prometheus_bin, tmp_path):
    n = 2_000_000  # paced at 5,000 events/s: far more than the test needs; stopped at the end
    keys = np.array([f"card-{i % 50}" for i in range(2000)], object)[np.arange(n) % 2000]
    src = ReplaySource(keys, 1_700_000_000_000 + np.arange(n) * 10, {"amount": 20.0 + np.arange(n) % 5},
                       rate=5000)
    p = (Pipeline("live").source(src).detect("amount_z", SlidingZScore(field="amount", window="60s"))
         .detect("velocity", VelocityRule(window="10s", max_count=1000))
         .checkpoints(str(tmp_path / "chk"), interval="300ms").alerts_to(MemorySink()))
    runner = EmbeddedRunner(p, out_dir=str(tmp_path))
    m = PipelineMetrics(runner)
    server, port = serve(m.registry)
    errors: list[BaseException] = []

    def run():
        try:
            runner.run()
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    proc, base = _start_prometheus(prometheus_bin, f"127.0.0.1:{port}", tmp_path)
    log = tmp_path / "prometheus.log"
    try:
        _wait("prometheus ready", lambda: httpx.get(f"{base}/-/ready", timeout=5).status_code == 200, proc, log)

        def target_up():
            targets = httpx.get(f"{base}/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
            return [t for t in targets if t["health"] == "up" and t["labels"]["job"] == "vigil"]

        (target,) = _wait("target up", target_up, proc, log)
        assert target["scrapeUrl"] == f"http://127.0.0.1:{port}/metrics" and target["lastError"] == ""
        events = _wait("vigil_source_events_total > 0", lambda: [
            r for r in _query(base, "vigil_source_events_total") if float(r["value"][1]) > 0], proc, log)
        assert events[0]["metric"]["pipeline"] == "live" and events[0]["metric"]["job"] == "vigil"
        assert 0 < float(events[0]["value"][1]) <= runner.stats.events_in
        rate = _wait("a positive event rate", lambda: [
            r for r in _query(base, "rate(vigil_source_events_total[10s])") if float(r["value"][1]) > 0], proc, log)
        assert 0 < float(rate[0]["value"][1]) < 1e6
        p95 = _wait("step latency p95 for both steps", lambda: (lambda rs: rs if len(rs) == 2 else None)([
            r for r in _query(base, "histogram_quantile(0.95, sum by (le, step) "
                                    "(rate(vigil_step_latency_seconds_bucket[10s])))")
            if math.isfinite(float(r["value"][1]))]), proc, log)
        assert {r["metric"]["step"] for r in p95} == {"amount_z", "velocity"}
        assert all(0 <= float(r["value"][1]) <= 10 for r in p95)
        # every dashboard query parses and runs; the ones that always have data have it
        for expr in _dashboard_exprs():
            q = (expr.replace("$__rate_interval", "10s").replace("$__range", "1m")
                 .replace('"$pipeline"', '".*"'))
            result = _query(base, q)
            if any(name in expr for name in ("vigil_source_events_total", "vigil_step_events_total",
                                             "vigil_state_keys", "vigil_watermark_lag_seconds", "vigil_build_info")):
                assert result, f"no data for dashboard query {expr}"
    finally:
        runner.stop()
        thread.join(60)
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        server.shutdown()
        server.server_close()
    assert not thread.is_alive() and errors == []


# ---- `vigil run --metrics-port` -------------------------------------------------------------------------


def _pipeline_file(tmp_path: Path) -> Path:
    data = tmp_path / "tx.jsonl"
    data.write_text("".join(json.dumps({"user": f"u{i % 5}", "ts": 1_700_000_000_000 + i, "amount": 1.0}) + "\n"
                            for i in range(200)))
    spec = tmp_path / "p.yaml"
    spec.write_text("name: tiny\nsource: {kind: jsonl, path: tx.jsonl, schema: {key: user, time: ts, "
                    "fields: [amount]}}\nsteps:\n  - {name: burst, detector: velocity}\n"
                    "alerts: [{kind: jsonl, path: alerts.jsonl}]\n")
    return spec


def _vigil(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vigil.cli.main", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def test_vigil_run_prints_the_metrics_url_once(tmp_path):
    spec = _pipeline_file(tmp_path)
    r = _vigil("run", str(spec), "--quiet", "--metrics-port", "0", "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    urls = re.findall(r"metrics: http://127\.0\.0\.1:(\d+)/metrics", r.stderr)
    assert len(urls) == 1 and int(urls[0]) > 0 and "200 events" in r.stderr
    r = _vigil("run", str(spec), "--quiet", "--no-metrics", "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert r.returncode == 0 and "metrics:" not in r.stderr, r.stderr


def test_vigil_run_fails_clearly_when_the_given_port_is_taken(tmp_path):
    spec = _pipeline_file(tmp_path)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = _vigil("run", str(spec), "--quiet", "--metrics-port", str(port), cwd=tmp_path)
    assert r.returncode == 2 and f"got {port}" in r.stderr and "metrics port" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
