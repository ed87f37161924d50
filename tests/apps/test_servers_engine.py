"""The server pipeline inside the embedded engine: YAML, files, Kafka, checkpoints and the served model's health."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from vigil.apps.servers import ServerConfig, ServerStep, run_server_pipeline, train_global_model
from vigil.config import load_pipeline
from vigil.dataflow.pipeline import Pipeline
from vigil.engine.runner import EmbeddedRunner
from vigil.io.generators.fleet import FleetSpec, simulate_fleet, to_influx_lines
from vigil.io.metrics import InfluxLineFileSource
from vigil.io.sinks import MemorySink
from vigil.models.registry import ModelRegistry

REPO = Path(__file__).resolve().parents[2]
METRICS = ("cpu", "mem", "net_in", "net_out", "disk_io", "disk_used")
ALIASES = {f"{m}.value": m for m in METRICS}
SPEC = FleetSpec(hosts=12, days=0.6, seed=5, incidents_per_host_day=1.0, warmup_h=2.0)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    cols = simulate_fleet(SPEC)
    path = tmp_path_factory.mktemp("fleet") / "fleet.influx"
    path.write_text("\n".join(to_influx_lines(cols)) + "\n")
    return cols, path


def _pipeline_yaml(tmp_path, source: str, extra_step: str = "") -> Path:
    f = tmp_path / "servers.yaml"
    f.write_text(f"""
name: servers
source: {source}
event_time: {{max_delay: 5s, idle_timeout: 30s, allowed_lateness: 10s}}
steps:
  - name: fleet
    servers: {{window_s: 10, k: 2, persist_windows: 2, metric_aliases: {json.dumps(ALIASES)}}}
{extra_step}
    to: {{kind: jsonl, path: {tmp_path / "windows.jsonl"}}}
alerts: [{{kind: jsonl, path: {tmp_path / "alerts.jsonl"}}}]
""")
    return f


def _alerts(path: Path):
    return {(a["key"], a["stats"]["window_start_ms"], a["stats"]["votes"])
            for a in map(json.loads, path.read_text().splitlines()) if a["detector"] == "k_of_n"}


def test_engine_step_gives_the_same_alerts_as_the_batch_pipeline(fleet, tmp_path):
    cols, path = fleet
    batch = run_server_pipeline(cols, ServerConfig(max_delay_s=5))
    expected = {(a.key, a.stats["window_start_ms"], a.stats["votes"]) for a in batch.alerts}
    assert len(expected) >= 5
    p = load_pipeline(str(_pipeline_yaml(tmp_path, f"{{kind: influx, path: {path}}}")))
    st = EmbeddedRunner(p, out_dir=str(tmp_path)).run()
    assert _alerts(tmp_path / "alerts.jsonl") == expected
    assert st.events_in == len(to_influx_lines(cols)) and st.dead_letters == 0
    # the very late samples went to the late output, counted, like the batch pipeline's late rows
    assert st.late_events == len(batch.late) > 0
    windows = [json.loads(x) for x in (tmp_path / "windows.jsonl").read_text().splitlines()]
    assert len(windows) == len(batch.windows)
    assert {"key", "start_ms", "cpu", "z_cpu", "votes", "missing", "alerting"} <= set(windows[0])


def test_checkpoint_and_restart_continue_the_join_and_detectors(fleet, tmp_path):
    cols, path = fleet

    class Crash(Exception):
        pass

    class CrashingSink(MemorySink):
        def __init__(self, after):
            super().__init__()
            self.after = after

        def write_batch(self, items):
            self.after -= 1
            if self.after < 0:
                raise Crash("boom")
            super().write_batch(items)

    def run(sink, state):
        step = ServerStep(ServerConfig(max_delay_s=5), name="fleet", metric_aliases=ALIASES)
        p = (Pipeline("fleet").source(InfluxLineFileSource(str(path))).watermark("5s", allowed_lateness="10s")
             .micro_batches(max_rows=20_000).checkpoints(str(state), interval="10ms")
             .step(step).alerts_to(sink))
        return EmbeddedRunner(p, out_dir=str(tmp_path)).run()

    clean = MemorySink()
    run(clean, tmp_path / "clean")
    first = CrashingSink(after=3)
    with pytest.raises(Crash):
        run(first, tmp_path / "state")
    second = MemorySink()
    run(second, tmp_path / "state")
    ids = lambda items: {a.id for a in items}  # noqa: E731
    assert ids(first.items) | ids(second.items) == ids(clean.items) and len(ids(clean.items)) >= 5


def _registry_with_model(tmp_path, cols) -> Path:
    root = tmp_path / "registry"
    artifact = train_global_model(cols, ServerConfig(), until_ms=int(cols["ts_ms"].min()) + 4 * 3_600_000,
                                  n_estimators=30)
    reg = ModelRegistry(str(root))
    v = reg.register("fleet", artifact, {"features": artifact.get("features")})
    reg.promote("fleet", v, reason="test")
    return root


def test_train_from_the_pipeline_then_the_promoted_model_scores_windows(fleet, tmp_path):
    """`vigil train --pipeline P --input FILE --promote` fits the step's model; the pipeline then serves it."""
    cols, path = fleet
    root = tmp_path / "registry"
    model = f"    model: {{registry: {root}, name: fleet, check_interval: 1s}}"
    yaml_path = _pipeline_yaml(tmp_path, f"{{kind: influx, path: {path}}}", model)
    r = subprocess.run([sys.executable, "-m", "vigil.cli.main", "train", "--pipeline", str(yaml_path), "--input",
                        str(path), "--until", "4h", "--promote"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert ModelRegistry(str(root)).promoted("fleet")[0] == "v1"
    p = load_pipeline(str(yaml_path))
    EmbeddedRunner(p, out_dir=str(tmp_path)).run()
    windows = [json.loads(x) for x in (tmp_path / "windows.jsonl").read_text().splitlines()]
    scored = [w for w in windows if w["model_score"] is not None]
    assert len(scored) > 0.5 * len(windows)
    alerts = [json.loads(x) for x in (tmp_path / "alerts.jsonl").read_text().splitlines()]
    assert not [a for a in alerts if a["detector"] == "model_health"]


def test_corrupt_model_falls_back_and_raises_model_unhealthy(fleet, tmp_path):
    cols, path = fleet
    root = _registry_with_model(tmp_path, cols)
    from vigil.models.registry import MODEL_FILE

    (root / "fleet" / "v1" / MODEL_FILE).write_bytes(b"garbage")  # a corrupt artifact
    model = f"    model: {{registry: {root}, name: fleet, check_interval: 1s}}"
    p = load_pipeline(str(_pipeline_yaml(tmp_path, f"{{kind: influx, path: {path}}}", model)))
    st = EmbeddedRunner(p, out_dir=str(tmp_path)).run()
    alerts = [json.loads(x) for x in (tmp_path / "alerts.jsonl").read_text().splitlines()]
    health = [a for a in alerts if a["detector"] == "model_health"]
    assert len(health) == 1 and health[0]["severity"] == "critical" and health[0]["key"] == "servers/fleet"
    assert "unhealthy" in health[0]["message"] and st.model_fallbacks == 1
    # the per-metric detectors carry on: the same k-of-n alerts as without a model
    assert _alerts(tmp_path / "alerts.jsonl") == {
        (a.key, a.stats["window_start_ms"], a.stats["votes"])
        for a in run_server_pipeline(cols, ServerConfig(max_delay_s=5)).alerts
    }


def test_bad_servers_setting_is_named(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("name: s\nsource: {kind: influx, path: x.influx}\n"
                 "steps:\n  - {name: fleet, servers: {windw_s: 10}}\n")
    from vigil.errors import ConfigError

    with pytest.raises(ConfigError, match=r"fleet.*servers\.windw_s.*did you mean `window_s`"):
        load_pipeline(str(f))


@pytest.mark.kafka
def test_servers_over_kafka_influx(tmp_path, kafka_bootstrap, kafka_topic):
    """`vigil generate fleet --to kafka://...` then the YAML pipeline over the topic: the file run's alerts."""
    topic = kafka_topic(3)
    args = ["--hosts", "12", "--days", "0.6", "--seed", "5"]
    for out in (["--to", f"kafka://{kafka_bootstrap}/{topic}"], ["-o", str(tmp_path / "fleet.influx")]):
        r = subprocess.run([sys.executable, "-m", "vigil.cli.main", "generate", "fleet", *out, *args],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
    (tmp_path / "file").mkdir()
    p = load_pipeline(str(_pipeline_yaml(tmp_path / "file", f"{{kind: influx, path: {tmp_path / 'fleet.influx'}}}")))
    EmbeddedRunner(p, out_dir=str(tmp_path)).run()
    expected = _alerts(tmp_path / "file" / "alerts.jsonl")
    src = f"{{kind: kafka, url: kafka://{kafka_bootstrap}/{topic}, metrics: influx, stop_at_end: true}}"
    p = load_pipeline(str(_pipeline_yaml(tmp_path, src)))
    st = EmbeddedRunner(p, out_dir=str(tmp_path)).run()
    assert st.events_in > 0 and st.dead_letters == 0
    got = _alerts(tmp_path / "alerts.jsonl")
    assert got == expected and len(got) >= 1
