"""`vigil flink`: its help teaches, and a wrong address or an absent cluster is one clear error line."""

from __future__ import annotations

from typer.testing import CliRunner

from vigil.cli.main import app
from vigil.testing.system import free_port


def _run(*args: str):  # noqa: ANN202
    return CliRunner(env={"COLUMNS": "200"}).invoke(app, list(args))


def test_help_names_every_command_and_the_way_to_a_cluster() -> None:
    r = _run("flink", "--help")
    assert r.exit_code == 0
    for cmd in ("run", "list", "status", "savepoint", "stop", "cancel"):
        assert cmd in r.output
    assert "make flink-up" in r.output and "alertmanager" in r.output
    r = _run("flink", "run", "--help")
    assert r.exit_code == 0
    for opt in ("--parallelism", "--jobmanager", "--local", "--from-savepoint", "--batch-window-ms", "--bootstrap"):
        assert opt in r.output


def test_a_bad_address_and_an_absent_cluster_say_so() -> None:
    r = _run("flink", "list", "--jobmanager", "localhost")
    assert r.exit_code == 2 and "--jobmanager" in r.output and "HOST:PORT" in r.output
    r = _run("flink", "status", "0" * 32, "--jobmanager", f"127.0.0.1:{free_port()}")
    assert r.exit_code == 2 and "no Flink JobManager answers" in r.output and "make flink-up" in r.output


def test_a_file_that_cannot_run_on_flink_is_refused_before_submitting(tmp_path) -> None:  # noqa: ANN001
    f = tmp_path / "p.yaml"
    f.write_text("""
name: p
source: {kind: jsonl, path: x.jsonl, schema: {key: k, time: ts, fields: [v]}}
steps: [{name: z, detector: sliding_zscore, params: {field: v}}]
alerts: [{kind: console}]
""")
    r = _run("flink", "run", str(f), "--jobmanager", f"127.0.0.1:{free_port()}")
    assert r.exit_code == 2 and "Kafka topic to run on Flink" in r.output
