"""`vigil validate` and `vigil run` never lie: bad fields fail at load, a crash is one error line, a run that can't
start touches nothing, a re-run says it appends (or `--fresh`), and one pipeline runs once at a time."""

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RECORD = '{"user":"u%d","ts":%d,"amount":%s,"txn_id":"t%d"}\n'


def vigil(*args, cwd=None, input=None, env=None):
    return subprocess.run([sys.executable, "-m", "vigil.cli.main", *args], cwd=cwd, input=input, capture_output=True,
                          text=True, timeout=600, env=env)


def error_lines(stderr):
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def _tx(path, n=400):
    with open(path, "w") as f:
        for i in range(n):
            f.write(RECORD % (i % 7, 1_767_225_600_000 + i * 1000, 10 + i % 5, i))


def _pipeline(tmp_path, *, field="amount", event_ids="txn_id", source=None, extra_step=None, name="edge"):
    source = source or "{kind: jsonl, path: tx.jsonl, schema: {key: user, time: ts, fields: [amount], extra: [txn_id]}}"
    lines = [
        f"name: {name}",
        f"source: {source}",
        f"event_ids: {event_ids}",
        "steps:",
        f"  - {{name: amount_z, detector: sliding_zscore, params: {{field: {field}, window: 60s}}}}",
        "  - {name: velocity, detector: velocity, params: {window: 60s, max_count: 3}}",
        *([f"  - {extra_step}"] if extra_step else []),
        "alerts: [{kind: jsonl, path: out/alerts.jsonl}, {kind: sqlite, path: out/alerts.sqlite}]",
    ]
    p = tmp_path / f"{name}.yaml"
    p.write_text("\n".join(lines) + "\n")
    return p


def test_a_field_missing_from_the_schema_fails_validation_naming_step_field_and_value(tmp_path):
    r = vigil("validate", str(_pipeline(tmp_path, field="amont")))
    assert r.returncode == 2
    assert error_lines(r.stderr) == ["error: step `amount_z`: `params.field` is not a field of the source's records; "
                                     "got 'amont' (hint: did you mean `amount`?)"]
    assert "Traceback" not in r.stderr
    # a window step's field, and a passthrough column where a number is needed
    win = "{name: w, window: {kind: tumbling, size: 1m}, field: txn_id, to: {kind: jsonl, path: w.jsonl}}"
    r = vigil("validate", str(_pipeline(tmp_path, extra_step=win)))
    assert r.returncode == 2 and "step `w`: `field` is a passthrough column of the source (`schema.extra`)" in r.stderr
    assert not (tmp_path / "w.jsonl").exists() and not (tmp_path / "out").exists()  # validate writes nothing


def test_a_misspelled_event_ids_fails_validation(tmp_path):
    r = vigil("validate", str(_pipeline(tmp_path, event_ids="txn_idd")))
    assert r.returncode == 2
    assert error_lines(r.stderr) == ["error: `event_ids` is not an extra column of the source's records; got "
                                     "'txn_idd' (hint: did you mean `txn_id`?)"]
    r = vigil("validate", str(_pipeline(tmp_path, event_ids="amount")))
    assert "list `amount` in the source's `schema.extra`" in r.stderr


def test_sources_without_a_schema_have_known_columns(tmp_path):
    metrics = "{kind: influx, path: m.influx}"
    r = vigil("validate", str(_pipeline(tmp_path, source=metrics, field="value", event_ids="metric")))
    assert r.returncode == 0, r.stderr
    r = vigil("validate", str(_pipeline(tmp_path, source=metrics, field="cpu", event_ids="metric")))
    assert r.returncode == 2 and "got 'cpu' (hint: the source's numeric fields: `value`)" in r.stderr
    gen = "{kind: transactions, events: 100, users: 5}"
    assert vigil("validate", str(_pipeline(tmp_path, source=gen))).returncode == 0


_BOOM = '''
import numpy as np
from vigil.detectors.base import register
from vigil.detectors import VelocityRule


@register
class Boom(VelocityRule):
    """Fails on the first real batch, like a bug would."""

    kind = "boom"

    def process_many(self, slots, ts_ms, X):
        if len(slots):
            raise KeyError("amont")
        return super().process_many(slots, ts_ms, X)
'''


def test_a_crashing_step_with_stdin_still_open_is_one_error_line_not_an_abort(tmp_path):
    """Was: a KeyError traceback and `Fatal Python error: ... daemon threads` (rc 134) while stdin was open."""
    (tmp_path / "boomplugin.py").write_text(_BOOM)
    p = tmp_path / "p.yaml"
    p.write_text(textwrap.dedent("""\
        name: crash
        source: {kind: stdin, schema: {key: user, time: ts, fields: [amount], extra: [txn_id]}}
        batching: {max_rows: 10, max_delay: 1ms}
        steps: [{name: b, detector: boom, params: {window: 60s, max_count: 3}}]
        alerts: [{kind: jsonl, path: alerts.jsonl}]
        """))
    code = "import boomplugin; from vigil.cli.main import main; main()"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", code, "run", str(p), "--out", str(tmp_path / "o"), "--quiet",
                             "--no-metrics", "--no-console"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    proc.stdin.write("".join(RECORD % (i, 1_767_225_600_000 + i, 5, i) for i in range(50)))
    proc.stdin.flush()  # and stdin stays open: the reader thread is blocked in a read when the step fails
    try:
        rc = proc.wait(timeout=120)  # it ends by itself, stdin still open
        stderr = proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdin.close()
    assert rc == 1, stderr
    assert error_lines(stderr) == ["error: step `b` failed on a batch: KeyError: 'amont'"]
    assert "Fatal Python error" not in stderr and "Traceback" not in stderr


def test_bad_param_types_name_the_field(tmp_path):
    for params, expected in [
        ("{field: amount, window: 60s, threshold: three}", "`params.threshold` must be a number; got 'three'"),
        ("{field: amount, window: 60s, min_count: '5'}",
         "`params.min_count` must be an integer; got '5' (hint: write it without quotes: 5)"),
        ("{field: amount, window: 60s, min_count: 5.5}", "`params.min_count` must be an integer; got 5.5"),
    ]:
        p = tmp_path / "p.yaml"
        p.write_text(_pipeline(tmp_path).read_text().replace("{field: amount, window: 60s}", params))
        r = vigil("validate", str(p))
        assert r.returncode == 2 and error_lines(r.stderr) == [f"error: step `amount_z`: {expected}"], r.stderr


def test_unreadable_pipeline_files_and_bad_ports_are_one_error_line(tmp_path):
    (tmp_path / "latin1.yaml").write_bytes("name: caf\xe9\n".encode("latin-1"))
    (tmp_path / "folder.yaml").mkdir()
    for args, expected in [
        (("validate", "latin1.yaml"), "error: `pipeline file` is not UTF-8 text (byte 9 is 0xe9); got "
                                      "'latin1.yaml' (hint: save it as UTF-8)"),
        (("run", "latin1.yaml"), "error: `pipeline file` is not UTF-8 text"),
        (("validate", "folder.yaml"), "error: `pipeline file` is a folder, not a file; got 'folder.yaml'"),
        (("run", "folder.yaml", "--no-metrics"), "error: `pipeline file` is a folder, not a file"),
        (("run", "folder.yaml", "--metrics-port", "99999"),
         "error: `--metrics-port` must be a port number in [0, 65535] (0: any free port); got 99999"),
        (("run", "folder.yaml", "--console-port", "-1"), "error: `--console-port` must be a port number"),
        (("console", "--port", "70000"), "error: `--port` must be a port number"),
    ]:
        r = vigil(*args, cwd=tmp_path)
        assert r.returncode == 2, (args, r.stderr)
        lines = error_lines(r.stderr)
        assert len(lines) == 1 and lines[0].startswith(expected), (args, r.stderr)
        assert "Traceback" not in r.stderr


def test_output_folders_that_cant_exist_are_one_error_line(tmp_path):
    _tx(tmp_path / "tx.jsonl")
    (tmp_path / "afile").write_text("")
    r = vigil("run", str(_pipeline(tmp_path)), "--out", str(tmp_path / "afile" / "x"), "--no-metrics", "--no-console")
    assert r.returncode == 2 and error_lines(r.stderr) == [
        f"error: `--out` can't be a folder: {tmp_path / 'afile'} is a file; got '{tmp_path / 'afile' / 'x'}'"]
    p = tmp_path / "p.yaml"
    p.write_text(_pipeline(tmp_path).read_text().replace("path: out/alerts.jsonl", "path: afile/alerts.jsonl"))
    r = vigil("validate", str(p))
    assert r.returncode == 2 and error_lines(r.stderr)[0].startswith("error: alerts[0]: `path` can't be created: ")


def test_a_missing_source_fails_before_anything_is_written(tmp_path):
    out = tmp_path / "o"
    r = vigil("run", str(_pipeline(tmp_path)), "--out", str(out), "--no-metrics", "--no-console", "--quiet")
    assert r.returncode == 1
    assert error_lines(r.stderr) == [f"error: source `tx.jsonl`: can't open {tmp_path / 'tx.jsonl'}: No such file "
                                     "or directory"]
    assert not out.exists() and not (tmp_path / "out").exists()  # no sink file, no config version, no lock


def test_a_rerun_says_it_appends_and_fresh_moves_the_earlier_outputs_aside(tmp_path):
    _tx(tmp_path / "tx.jsonl")
    out = tmp_path / "o"
    args = ("run", str(_pipeline(tmp_path)), "--out", str(out), "--no-metrics", "--no-console", "--quiet")
    r = vigil(*args)
    assert r.returncode == 0 and "earlier run" not in r.stderr
    def ids():
        return [json.loads(line)["id"] for line in (tmp_path / "out" / "alerts.jsonl").read_text().splitlines()]

    first = ids()
    assert first
    r = vigil(*args)
    assert r.returncode == 0
    assert "outputs of an earlier run exist and this run adds to them" in r.stderr and "--fresh" in r.stderr
    assert ids() == first + first
    r = vigil(*args, "--fresh")
    assert r.returncode == 0 and "--fresh: moved" in r.stderr
    assert ids() == first  # this run's alone
    (previous,) = (out / "edge" / "previous").iterdir()
    assert {"alerts.jsonl", "alerts.sqlite", "alerts.db"} <= {p.name for p in previous.iterdir()}
    assert len((previous / "alerts.jsonl").read_text().splitlines()) == 2 * len(first)
    assert (out / "edge" / "config").is_dir()  # the configuration history stays


def test_a_second_run_of_the_same_pipeline_is_refused_and_a_stale_lock_is_taken_over(tmp_path):
    _tx(tmp_path / "tx.jsonl")
    out = tmp_path / "o"
    lock = out / "edge" / "alerts.db.lock"
    lock.parent.mkdir(parents=True)
    other = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:  # a live process holds the lock: refused
        lock.write_text(json.dumps({"pid": other.pid, "host": socket.gethostname(), "since": "earlier"}))
        args = ("run", str(_pipeline(tmp_path)), "--out", str(out), "--no-metrics", "--no-console", "--quiet")
        r = vigil(*args)
        assert r.returncode == 1
        assert error_lines(r.stderr) == [f"error: pipeline `edge` is already running (pid {other.pid}, since earlier; "
                                         f"lock {lock}): two runs would overwrite each other's alert state. Stop "
                                         "that one first, or give this one another --out"]
        assert not (tmp_path / "out").exists()
    finally:
        other.stdin.close()
        other.wait()
    r = vigil(*args)  # its process is gone: the lock is stale
    assert r.returncode == 0, r.stderr
    assert f"took over the lock of an earlier run that is gone (pid {other.pid})" in r.stderr
    assert not lock.exists()  # released at the end


def test_an_explicit_console_port_that_is_taken_fails_while_the_default_may_move(tmp_path):
    _tx(tmp_path / "tx.jsonl")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = vigil("run", str(_pipeline(tmp_path)), "--out", str(tmp_path / "o"), "--no-metrics", "--quiet",
                  "--console-port", str(port))
    assert r.returncode == 2
    assert error_lines(r.stderr) == [f"error: `--console-port` is not free on 127.0.0.1 (Address already in use); "
                                     f"got {port} (hint: pick another one, or 0 for any free port)"]
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("args", [("--help",), ("run", "--help"), ("console", "--help"), ("alerts", "list", "--help"),
                                  ("alerts", "label", "--help"), ("feedback", "show", "--help")])
def test_help_texts_keep_their_angle_brackets(args):
    from typer.testing import CliRunner

    from vigil.cli.main import app

    r = CliRunner(env={"COLUMNS": "200"}).invoke(app, list(args))
    assert r.exit_code == 0
    assert "vigil-out//" not in r.output and "<>" not in r.output
