"""Checkpoints: atomic files, corruption detected, and crash/restart equal to an uninterrupted run."""

import json
import logging
import os
import signal
import subprocess
import sys
import time

import pytest

from vigil.alerting.runtime import ManagedAlerts
from vigil.apps.fraud import fraud_pipeline
from vigil.errors import CheckpointError
from vigil.io.files import JsonlFileSource
from vigil.io.generators.transactions import TransactionSpec, generate_transactions, write_jsonl
from vigil.io.schema import Schema
from vigil.io.sinks import MemorySink
from vigil.state.checkpoint import CheckpointStore

SCHEMA = Schema("user", "ts", fields=("amount",), extra=("txn_id",), optional=("label", "pattern"))


@pytest.fixture(scope="module")
def tx_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("tx") / "tx.jsonl"
    write_jsonl(generate_transactions(TransactionSpec(events=60_000, users=800, seed=3)), str(path))
    return path


class Crash(Exception):
    pass


class CrashingSink(MemorySink):
    """Raises after `after` writes: the process 'dies' mid-stream."""

    def __init__(self, after):
        super().__init__()
        self.after = after

    def write_batch(self, items):
        if self.after is not None:
            self.after -= 1
            if self.after < 0:
                raise Crash("boom")
        super().write_batch(items)


def _run(tx_file, state_dir, sink, out_dir):
    p = fraud_pipeline(JsonlFileSource(str(tx_file), SCHEMA)).micro_batches(max_rows=2000)
    p.checkpoints(str(state_dir), interval="20ms").alerts_to(sink)
    from vigil.engine.runner import EmbeddedRunner

    runner = EmbeddedRunner(p, out_dir=str(out_dir))
    return runner, runner.run()


def _by_id(alerts):
    return {a.id: (a.key, a.event_id, a.detector, round(a.score, 9)) for a in alerts}


def store_history(db):
    """What the alert manager recorded: every alert row and every revision, as comparable plain data.

    Wall-clock parts (``updated_ms``, the detection time and latency inside the alert bodies) differ between two
    runs by nature; the alert behind a row or a revision is compared by its id.
    """
    from vigil.alerting.store import AlertStore

    with AlertStore(db, create=False) as s:
        rows = {r["fingerprint"]: (r["status"], r["revision"], r["starts_at_ms"], r["ends_at_ms"], r["observations"],
                                   r["last_alert"]["id"]) for r in s.alerts()}  # fmt: skip
        revisions = {fp: [(r["revision"], r["status"], r["reason"], r["at_ms"], r["alert"]["id"])
                          for r in s.revisions(fp)] for fp in rows}  # fmt: skip
    return rows, revisions


@pytest.mark.parametrize("crash_after", [0, 3, 40])
def test_crash_and_restart_gives_the_uninterrupted_alerts(tx_file, tmp_path, crash_after):
    """Abort before the first checkpoint (0) and after some (3, 40): the restarted run completes the same."""
    clean = MemorySink()
    _run(tx_file, tmp_path / "clean", clean, tmp_path)
    expected = _by_id(clean.items)
    assert len(expected) > 500

    first = CrashingSink(crash_after)
    with pytest.raises(Crash):
        _run(tx_file, tmp_path / "state", first, tmp_path)
    second = MemorySink()
    runner, st = _run(tx_file, tmp_path / "state", second, tmp_path)
    got = _by_id(first.items) | _by_id(second.items)
    # at-least-once: nothing lost, every alert identical; the replayed part may repeat some ids
    assert got == expected
    assert st.events_in == 60_000  # counters are part of the checkpoint
    if crash_after > 3:
        assert runner.restored_from is not None


def test_checkpoint_files_are_atomic_and_bounded(tx_file, tmp_path):
    runner, st = _run(tx_file, tmp_path / "s", MemorySink(), tmp_path)
    files = CheckpointStore(tmp_path / "s" / "fraud").list()
    assert st.checkpoints >= 1 and 1 <= len(files) <= 3
    assert not list((tmp_path / "s" / "fraud").glob("*.tmp"))
    state = CheckpointStore.read(files[-1][1])
    assert state["positions"]["0"] == os.path.getsize(tx_file)
    assert state["counters"]["events_in"] == 60_000


def _two_checkpoints(tmp_path):
    store = CheckpointStore(tmp_path / "c")
    base = {"pipeline": "p", "positions": {"0": 1}}
    store.write(1, {**base, "seq": 1})
    store.write(2, {**base, "seq": 2, "positions": {"0": 2}})
    return store


@pytest.mark.parametrize("damage", ["truncate", "flip", "empty", "garbage"])
def test_corrupt_checkpoint_is_reported_and_the_previous_one_used(tmp_path, damage, caplog):
    store = _two_checkpoints(tmp_path)
    newest = store.path(2)
    data = newest.read_bytes()
    if damage == "truncate":
        newest.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        newest.write_bytes(data[:-3] + bytes([data[-3] ^ 0xFF]) + data[-2:])
    elif damage == "empty":
        newest.write_bytes(b"")
    else:
        newest.write_bytes(b"not a checkpoint at all, just text" * 3)
    with pytest.raises(CheckpointError) as exc:
        store.read(newest)
    assert {"truncate": "truncated", "flip": "CRC mismatch", "empty": "truncated", "garbage": "bad magic"}[damage] \
        in str(exc.value)
    from vigil.engine.checkpointing import choose

    with caplog.at_level(logging.WARNING, logger="vigil.checkpoint"):
        loaded = choose(store, None)
    assert loaded.seq == 1 and loaded.state["positions"] == {"0": 1}
    assert "passing over checkpoint" in caplog.text and str(newest) in caplog.text


def test_exactly_once_choice_follows_the_committed_offsets(tmp_path):
    from vigil.engine.checkpointing import choose

    store = _two_checkpoints(tmp_path)
    # the transaction of checkpoint 2 never committed: the group's offsets are checkpoint 1's
    assert choose(store, {"0": 1}).seq == 1
    assert choose(store, {"0": 2}).seq == 2
    assert choose(store, {"0": 99}) is None


def test_checkpoint_inspect_cli(tx_file, tmp_path):
    _run(tx_file, tmp_path / "s", MemorySink(), tmp_path)
    r = subprocess.run([sys.executable, "-m", "vigil.cli.main", "checkpoint", "inspect", str(tmp_path / "s" / "fraud"),
                        "--json"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["pipeline"] == "fraud" and out["keys"] > 700
    assert out["steps"]["amount_z"]["kind"] == "sliding_zscore" and out["steps"]["velocity"]["bytes"] > 0
    assert out["positions"]["0"] == os.path.getsize(tx_file)
    r = subprocess.run([sys.executable, "-m", "vigil.cli.main", "checkpoint", "inspect", str(tmp_path / "s")],
                       capture_output=True, text=True)
    assert r.returncode == 0 and "source positions" in r.stdout and "amount_z" in r.stdout


def _wait_until_checkpointed(state_dir, records, proc, timeout_s=300.0):
    """Block until the worker's newest checkpoint covers ``records`` input lines (the timeout guards a hang only).

    The source is paced (``pace: original``), so the worker is still far from the end of its input when it gets
    there: it is always killed mid-stream, however fast or slow the machine.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        done = 0
        for d in {p.parent for p in state_dir.rglob("chk-*.vck")}:
            loaded = CheckpointStore(d).load_latest()
            if loaded is not None and loaded.seq >= 0:
                done = max(done, sum(int(v) for v in loaded.state["positions"].values()))
        if done >= records:
            return
        assert proc.poll() is None, f"the worker ended before its kill:\n{proc.stderr.read().decode()[-3000:]}"
        assert time.monotonic() < deadline, f"no checkpoint past {records} records in {timeout_s:.0f} s"
        time.sleep(0.01)


def test_sigkill_and_restart_from_a_checkpoint_matches_an_uninterrupted_run(tx_file, tmp_path):
    """The bytewax/Flink way with a real process: SIGKILL mid-stream, restart, compare with a clean run."""
    pipe = tmp_path / "p.yaml"
    def write_pipe(name, state, alerts):
        pipe.write_text(f"""
name: {name}
source: {{kind: jsonl, path: {tx_file}, pace: original, speed: 20000,
          schema: {{key: user, time: ts, fields: [amount], extra: [txn_id], optional: [label, pattern]}}}}
event_ids: txn_id
checkpoints: {{dir: {state}, interval: 50ms}}
steps:
  - {{name: amount_z, detector: sliding_zscore, params: {{field: amount, window: 60s, transform: log,
                                                        min_baseline: 10}}}}
  - {{name: velocity, detector: velocity, params: {{window: 60s, max_count: 5}}}}
alerts: [{{kind: jsonl, path: {alerts}}}]
""")
    def run(out="out"):
        return subprocess.Popen([sys.executable, "-m", "vigil.cli.main", "run", str(pipe), "--quiet", "--no-console",
                                 "--no-metrics", "--out", str(tmp_path / out)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)  # fmt: skip

    write_pipe("fraud", tmp_path / "clean-state", tmp_path / "clean.jsonl")
    assert run("out-clean").wait(timeout=300) == 0
    expected = {json.loads(line)["id"] for line in (tmp_path / "clean.jsonl").read_text().splitlines()}

    write_pipe("fraud", tmp_path / "state", tmp_path / "alerts.jsonl")
    lines = sum(1 for _ in open(tx_file, "rb"))
    for share in (0.2, 0.45, 0.7):  # paced by the worker's own checkpoints, never by the clock
        proc = run()
        _wait_until_checkpointed(tmp_path / "state", int(share * lines), proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert run().wait(timeout=300) == 0
    got = [json.loads(line)["id"] for line in (tmp_path / "alerts.jsonl").read_text().splitlines() if line.strip()]
    assert set(got) == expected  # none lost (at-least-once to a file: replays may repeat an alert, same id)
    # the alert manager's store went back with each checkpoint: every alert and every fired/resolved once
    clean_rows, clean_revisions = store_history(tmp_path / "out-clean" / "fraud" / "alerts.db")
    rows, revisions = store_history(tmp_path / "out" / "fraud" / "alerts.db")
    assert len(clean_rows) > 300 and rows == clean_rows
    assert revisions == clean_revisions
    assert all(r[0] == "resolved" for r in rows.values())  # the input ended: nothing stays firing


def test_a_checkpoint_that_cannot_be_written_is_skipped_counted_and_watched(tx_file, tmp_path, caplog):
    """Disk trouble on a checkpoint is not fatal: the next one covers it; failures reach the metrics and self-watch."""
    from prometheus_client import CollectorRegistry

    from vigil.engine.runner import EmbeddedRunner
    from vigil.ops.metrics import PipelineMetrics

    sink = MemorySink()
    p = fraud_pipeline(JsonlFileSource(str(tx_file), SCHEMA)).micro_batches(max_rows=2000)
    p.checkpoints(str(tmp_path / "state"), interval="1ms").alerts_to(sink)
    runner = EmbeddedRunner(p, out_dir=str(tmp_path))
    metrics = PipelineMetrics(runner, CollectorRegistry())
    real_write, calls = runner.store.write, [0]

    def flaky_write(seq, state):
        calls[0] += 1
        if calls[0] <= 3:
            raise OSError(28, "No space left on device")
        return real_write(seq, state)

    runner.store.write = flaky_write
    with caplog.at_level(logging.ERROR, logger="vigil.engine"):
        st = runner.run()
    assert st.checkpoint_failures == 3 and st.checkpoints >= 1  # the run went on and later checkpoints landed
    assert "No space left on device" in caplog.text and "Operator action" in caplog.text
    assert metrics.checkpoint_failures == 3
    assert st.events_in == 60_000 and len(sink.items) > 500
    metrics.close()


def test_the_final_checkpoint_failing_fails_the_run(tx_file, tmp_path):
    from vigil.engine.runner import EmbeddedRunner

    p = fraud_pipeline(JsonlFileSource(str(tx_file), SCHEMA)).micro_batches(max_rows=2000)
    p.checkpoints(str(tmp_path / "state"), interval="1h").alerts_to(MemorySink())
    runner = EmbeddedRunner(p, out_dir=str(tmp_path))

    def no_disk(seq, state):
        raise OSError(28, "No space left on device")

    runner.store.write = no_disk
    with pytest.raises(CheckpointError, match="final checkpoint could not be written"):
        runner.run()


@pytest.mark.parametrize("batch", [97, 4096])
def test_abort_at_a_marker_then_resume_equals_an_uninterrupted_run(tmp_path, batch):
    """bytewax-style: a ListSource crashes the run at an ABORT marker; the resumed run ends as if nothing happened.

    The checkpoint interval is 1 ms of wall clock, but nothing here depends on time: whichever checkpoint was
    the last before the abort, the resumed run replays from it, and alert ids make the union exact.
    """
    from vigil.engine.runner import EmbeddedRunner
    from vigil.io.generators.transactions import iter_records
    from vigil.testing.sources import ABORT, EOF, Aborted, ListSource

    rows = list(iter_records(generate_transactions(TransactionSpec(events=8_000, users=120, seed=11))))

    def pipeline(src, state, sink, db):
        managed = ManagedAlerts(None, pipeline="fraud", store_path=db)  # the default policy, a fresh manager
        return (fraud_pipeline(src).micro_batches(max_rows=batch)
                .checkpoints(str(state), interval=1).alerts_to(sink, managed))  # fmt: skip

    clean = MemorySink()
    EmbeddedRunner(pipeline(ListSource([*rows, EOF()], SCHEMA), tmp_path / "clean", clean, tmp_path / "clean.db"),
                   out_dir=str(tmp_path)).run()  # fmt: skip
    src = ListSource([*rows[:3_000], ABORT(), *rows[3_000:6_000], ABORT(), *rows[6_000:], EOF()], SCHEMA)
    runs = [MemorySink() for _ in range(3)]
    for sink in runs[:2]:
        with pytest.raises(Aborted):
            EmbeddedRunner(pipeline(src, tmp_path / "state", sink, tmp_path / "a.db"), out_dir=str(tmp_path)).run()
    st = EmbeddedRunner(pipeline(src, tmp_path / "state", runs[2], tmp_path / "a.db"), out_dir=str(tmp_path)).run()
    assert st.finished and clean.items
    assert {a.id for sink in runs for a in sink.items} == {a.id for a in clean.items}
    # the alert manager's rows and history equal the uninterrupted run's: nothing recorded twice, nothing lost
    clean_rows, clean_revisions = store_history(tmp_path / "clean.db")
    rows, revisions = store_history(tmp_path / "a.db")
    assert len(clean_rows) > 40 and rows == clean_rows and revisions == clean_revisions
