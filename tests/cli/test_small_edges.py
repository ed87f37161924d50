"""The smaller sharp edges of the `vigil` command: what it prints is true, strict and readable."""

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from vigil.cli.main import app

RTL = "\u202e"  # RIGHT-TO-LEFT OVERRIDE: "u1<RTL>gnp.exe" displays as "u1exe.png"


def vigil(*args, cwd=None, input=None):
    return subprocess.run([sys.executable, "-m", "vigil.cli.main", *args], cwd=cwd, input=input,
                          capture_output=True, text=True, timeout=600)


def strict(line):
    """A line of strict JSON (RFC 8259): a bare NaN or Infinity fails."""
    return json.loads(line, parse_constant=lambda c: pytest.fail(f"not strict JSON: {c}"))


def test_strict_json_never_prints_nan():
    from vigil.cli.common import strict_json

    line = strict_json({"p99": float("nan"), "x": [float("inf"), -float("inf"), 1.5], "ok": None})
    assert strict(line) == {"p99": None, "x": [None, None, 1.5], "ok": None}


def test_small_demo_has_exactly_the_events_and_every_fraud_pattern_and_strict_json(tmp_path):
    """Was: `vigil demo --events 5000` wrote fewer events, no fraud, and `--json` printed a bare NaN."""
    r = vigil("demo", "--events", "2000", "--rate", "0", "--json", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    out = strict(r.stdout.strip().splitlines()[-1])
    assert out["events"] == 2000 and out["fraud_events"] > 0 and out["alerts"] > 0
    for pattern in ("amount_spike", "card_testing", "velocity_burst"):
        assert out["by_pattern"][pattern]["events"] > 0, pattern
    assert "80 of the 20,000 card holders take part" in r.stderr


def test_generate_writes_exactly_the_events_asked_and_csv_uses_the_documented_ts(tmp_path):
    r = vigil("generate", "transactions", "--events", "2000", "-o", "tx.jsonl", cwd=tmp_path)
    assert r.returncode == 0 and "wrote 2,000 transactions" in r.stderr
    lines = (tmp_path / "tx.jsonl").read_text().splitlines()
    assert len(lines) == 2000 and {json.loads(x)["pattern"] for x in lines} >= {"amount_spike", "card_testing",
                                                                                "velocity_burst"}
    r = vigil("generate", "transactions", "--events", "500", "--format", "csv", "-o", "tx.csv", cwd=tmp_path)
    assert r.returncode == 0
    header = (tmp_path / "tx.csv").read_text().splitlines()[0].split(",")
    assert "ts" in header and "ts_ms" not in header
    # the same schema reads both files
    (tmp_path / "p.yaml").write_text(
        "name: csvp\nsource: {kind: csv, path: tx.csv, schema: {key: user, time: ts, fields: [amount]}}\n"
        "steps: [{name: v, detector: velocity, params: {window: 60s, max_count: 5}}]\n"
        "alerts: [{kind: jsonl, path: a.jsonl}]\n")
    r = vigil("run", "p.yaml", "--quiet", "--no-metrics", "--no-console", "--out", "o", cwd=tmp_path)
    assert r.returncode == 0 and "done: 500 events" in r.stderr and "0 dead letters" in r.stderr
    r = vigil("generate", "transactions", "--events", "100", "-o", "no/such/tx.jsonl", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.startswith("error: `--out` is in a folder that does not exist")
    r = vigil("generate", "transactions", "--events", "20000", "--users", "5", "-o", "t.jsonl", cwd=tmp_path)
    assert r.returncode == 2 and "error: `--users` 5 card holders can't make" in r.stderr


def test_demo_servers_never_prints_none():
    """Was: "(Nonex fewer)" when k-of-n left no false alert."""
    r = CliRunner(env={"COLUMNS": "200"}).invoke(app, ["demo", "servers", "--hosts", "4", "--days", "0.3",
                                                       "--no-model"])
    assert r.exit_code == 0, r.output
    assert "None" not in r.output and "false alerts / host-day" in r.output
    from vigil.cli.demo_servers import _reduction

    assert _reduction(None, {"single_metric": 3.3}) == "none left"
    assert _reduction(None, {"single_metric": 0.0}) == "none either way" and _reduction(2.5, {}) == "2.5x fewer"


def test_feedback_show_finds_the_demo_bars_and_refuses_a_missing_store(tmp_path):
    """Was: `vigil feedback show` missed the bars `vigil demo feedback --keep` wrote, and said "none" for no store."""
    from vigil.cli.feedback_demo import run_feedback_demo

    cli = CliRunner(env={"COLUMNS": "200"})
    r = cli.invoke(app, ["feedback", "show", "--db", str(tmp_path / "nope" / "alerts.db")])
    assert r.exit_code == 2 and "error: `--db` does not exist" in r.output
    keep = tmp_path / "fb"
    res = run_feedback_demo(hosts=20, days=1.2, live_h=6.0, do_retrain=False, workdir=str(keep))
    assert res["suppressions"]["entries"] > 0
    r = cli.invoke(app, ["feedback", "show", "--db", str(keep / "alerts.db")])
    assert r.exit_code == 0, r.output
    assert f"feedback bars in force: {res['suppressions']['version']} ({res['suppressions']['entries']} bars" in r.output
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "alerts.db").write_bytes(b"")
    r = cli.invoke(app, ["feedback", "show", "--db", str(tmp_path / "empty" / "alerts.db")])
    assert r.exit_code == 0 and "no feedback bars learned yet" in r.output


@pytest.fixture
def bidi_store(tmp_path):
    """A pipeline run over a key with a right-to-left override; its alert store."""
    rows = [{"user": f"u1{RTL}gnp.exe", "ts": 1_767_225_600_000 + i * 1000, "amount": 10.0 + i} for i in range(8)]
    (tmp_path / "tx.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "p.yaml").write_text(
        "name: bidi\nsource: {kind: jsonl, path: tx.jsonl, schema: {key: user, time: ts, fields: [amount]}}\n"
        "steps: [{name: v, detector: velocity, params: {window: 60s, max_count: 3}}]\n"
        "alerts: [{kind: console}]\n")
    r = vigil("run", "p.yaml", "--quiet", "--no-metrics", "--no-console", "--out", "o", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "u1<U+202E>gnp.exe" in r.stdout and RTL not in r.stdout  # the console alert line
    return tmp_path / "o" / "bidi" / "alerts.db"


def test_keys_with_bidi_overrides_display_as_what_they_are(bidi_store):
    cli = CliRunner(env={"COLUMNS": "200"})
    r = cli.invoke(app, ["alerts", "list", "--db", str(bidi_store)])
    assert r.exit_code == 0, r.output
    assert "u1<U+202E>gnp.exe" in r.output and RTL not in r.output
    fp = json.loads(cli.invoke(app, ["alerts", "list", "--db", str(bidi_store), "--json"]).stdout)[0]["fingerprint"]
    r = cli.invoke(app, ["alerts", "show", fp, "--db", str(bidi_store)])
    assert r.exit_code == 0 and "key=u1<U+202E>gnp.exe" in r.output and RTL not in r.output
    # --json keeps the data as it is (escaped by JSON, not rewritten)
    assert json.loads(cli.invoke(app, ["alerts", "list", "--db", str(bidi_store), "--json"]).stdout)[0][
        "labels"]["key"] == f"u1{RTL}gnp.exe"


def test_alerts_label_takes_exactly_one_of_true_and_false_positive(bidi_store):
    cli = CliRunner(env={"COLUMNS": "200"})
    fp = json.loads(cli.invoke(app, ["alerts", "list", "--db", str(bidi_store), "--json"]).stdout)[0]["fingerprint"]
    r = cli.invoke(app, ["alerts", "label", fp, "--true-positive", "--false-positive", "--db", str(bidi_store)])
    assert r.exit_code == 2
    assert "error: `--true-positive / --false-positive` both given (hint: give exactly one of them)" in r.output
    r = cli.invoke(app, ["alerts", "label", fp, "--db", str(bidi_store)])
    assert r.exit_code == 2 and "missing" in r.output
    r = cli.invoke(app, ["alerts", "label", fp, "--true-positive", "--db", str(bidi_store)])
    assert r.exit_code == 0 and "true_positive" in r.output


def test_log_transform_counts_what_it_cannot_score(tmp_path):
    """Was: zero and negative amounts under `transform: log` passed silently as "not ready"."""
    amounts = [10, 12, 0, 11, -5, 13, 12, 0, 11]
    rows = [{"user": "u1", "ts": 1_767_225_600_000 + i * 1000, "amount": a} for i, a in enumerate(amounts)]
    (tmp_path / "tx.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "p.yaml").write_text(
        "name: logp\nsource: {kind: jsonl, path: tx.jsonl, schema: {key: user, time: ts, fields: [amount]}}\n"
        "steps: [{name: amount_z, detector: sliding_zscore, params: {field: amount, window: 60s, transform: log}}]\n"
        "alerts: [{kind: jsonl, path: a.jsonl}]\n")
    r = vigil("run", "p.yaml", "--quiet", "--no-metrics", "--no-console", "--out", "o", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "step `amount_z` could not score 3 events" in r.stderr

    import numpy as np

    from vigil.detectors import SlidingZScore
    from vigil.detectors.base import UNSCORABLE

    v = SlidingZScore(field="amount", window="60s", transform="log").process_many(
        np.zeros(len(amounts), np.int32), np.arange(len(amounts), dtype=np.int64) * 1000,
        {"amount": np.array(amounts, np.float64)})
    assert v.stats[UNSCORABLE].tolist() == [float(a <= 0) for a in amounts]


def test_the_record_size_cap_default_is_the_same_in_config_and_io():
    from vigil.config.kinds import MAX_RECORD_BYTES as in_config
    from vigil.io.lines import MAX_RECORD_BYTES as in_io

    assert in_config == in_io == 8 << 20


def test_an_oversized_line_is_a_too_large_dead_letter_through_the_cli(tmp_path):
    """Was: a 300 MB JSON line was read whole and accepted."""
    with open(tmp_path / "tx.jsonl", "wb") as f:
        f.write(b'{"user":"a","ts":1767225600000,"amount":1}\n')
        f.write(b'{"user":"b","ts":1767225600001,"amount":2,"pad":"' + b"x" * 3000 + b'"}\n')
        f.write(b'{"user":"c","ts":1767225600002,"amount":3}\n')
    (tmp_path / "p.yaml").write_text(
        "name: big\nsource: {kind: jsonl, path: tx.jsonl, max_record_bytes: 2048,\n"
        "         schema: {key: user, time: ts, fields: [amount]}}\n"
        "steps: [{name: v, detector: velocity, params: {window: 60s, max_count: 5}}]\n"
        "alerts: [{kind: jsonl, path: a.jsonl}]\n")
    r = vigil("run", "p.yaml", "--quiet", "--no-metrics", "--no-console", "--out", "o", cwd=tmp_path)
    assert r.returncode == 0 and "done: 2 events" in r.stderr and "1 dead letters" in r.stderr, r.stderr
    (dead,) = [json.loads(x) for x in (tmp_path / "o" / "big" / "dead_letters.jsonl").read_text().splitlines()]
    assert dead["reason"] == "too_large" and dead["position"] == 2 and len(dead["raw"]) == 1000
    assert dead["message"].startswith("a record of 3,051 bytes, over the source's max_record_bytes (2,048)")
    (tmp_path / "q.yaml").write_text((tmp_path / "p.yaml").read_text().replace("2048", "10"))
    r = vigil("validate", "q.yaml", cwd=tmp_path)
    assert r.returncode == 2 and "source: `max_record_bytes` Input should be greater than or equal to 1024" in r.stderr


@pytest.mark.parametrize("cap", [2048, 1 << 20])
def test_the_line_readers_cap_records_in_files_and_on_stdin(tmp_path, cap):
    import io

    from vigil.io.files import JsonlFileSource, StdinSource
    from vigil.io.schema import Schema

    big = 3 * cap
    data = (b'{"user":"a","ts":1767225600000,"amount":1}\n' + b'{"user":"b","pad":"' + b"x" * big + b'"}\n'
            + b'{"user":"c","ts":1767225600002,"amount":3}\n' + b'{"user":"d","pad":"' + b"y" * big + b'"}')
    (tmp_path / "t.jsonl").write_bytes(data)
    schema = Schema("user", "ts", fields=("amount",))
    for source in (JsonlFileSource(tmp_path / "t.jsonl", schema, chunk_bytes=1 << 16, max_record_bytes=cap),
                   StdinSource(schema, stream=io.BytesIO(data), max_record_bytes=cap)):
        r = source.open()
        keys, dead = [], []
        for _ in range(10_000):
            if r.at_end:
                break
            b = r.read_batch(100, 10)
            if b is not None:
                keys += b.keys.tolist()
                dead += [(d.reason, d.position) for d in b.dead]
        assert keys == ["a", "c"] and dead == [("too_large", 2), ("too_large", 4)]
        if isinstance(source, JsonlFileSource):
            assert r.position() == len(data)  # offsets count the skipped bytes
        r.close()


def test_output_paths_that_cant_be_written_are_one_error_line_and_make_no_folder(tmp_path, bidi_store):
    (tmp_path / "afile").write_text("")
    for args, expected in [
        (("collect", "host", "--count", "1", "--out", "nod/x.influx"), "error: `--out` is in a folder that does not"),
        (("alerts", "export-labels", "nod/l.csv", "--db", str(bidi_store)), "error: `OUT` is in a folder that does"),
        (("demo", "--events", "500", "--out", "afile/x"), "error: `--out` can't be a folder: "),
    ]:
        r = vigil(*args, cwd=tmp_path)
        assert r.returncode == 2 and r.stderr.startswith(expected) and "Traceback" not in r.stderr, (args, r.stderr)
        assert not (tmp_path / "nod").exists()
