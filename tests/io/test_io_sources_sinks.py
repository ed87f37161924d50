"""Sources and sinks: the conformance suites on every one, plus their particular behaviour."""

from __future__ import annotations

import io
import json
import os
import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from vigil.errors import ConfigError, SinkError, SourceError
from vigil.io import (
    ConsoleAlertSink,
    CsvFileSource,
    DeadLetter,
    DeadLetterSink,
    JsonDecoder,
    JsonlFileSource,
    JsonlSink,
    MemorySink,
    MemorySource,
    Records,
    Schema,
    SqliteAlertSink,
    StdinSource,
)
from vigil.testing.clock import ManualClock
from vigil.testing.sources import check_sink, check_source
from vigil.types import Alert

T0 = 1_700_000_000_000
SCHEMA = Schema("user", "ts", fields=("amount",), extra=("id",))


def make_lines(n: int = 400, every_bad: int = 13) -> list[str]:
    out = []
    for i in range(n):
        if i % every_bad == 5:
            out.append("garbage" if i % 2 else '{"user":"x","ts":5,"amount":1,"id":"bad"}')
        elif i % 17 == 3:
            out.append("")
        else:
            out.append(json.dumps({"user": f"u{i % 7}", "ts": T0 + 10 * i, "amount": i / 4, "id": f"e{i}"}))
    return out


N_BAD = sum(1 for x in make_lines() if x == "garbage" or '"ts":5,' in x)
N_GARBAGE = sum(1 for x in make_lines() if x == "garbage")
N_GOOD = sum(1 for x in make_lines() if x.startswith("{") and '"ts":5,' not in x)


@pytest.fixture
def jsonl(tmp_path: Path) -> Path:
    p = tmp_path / "events.jsonl"
    p.write_text("\n".join(make_lines()))  # no newline at the end of the last line
    return p


@pytest.fixture
def csv_file(tmp_path: Path) -> Path:
    p = tmp_path / "events.csv"
    rows = [f"u{i % 5},{T0 + i},{i}.5,e{i}" if i % 11 else "bad,row" for i in range(300)]
    p.write_text("user,ts,amount,id\r\n" + "\r\n".join(rows) + "\r\n")
    return p


# -- conformance -------------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk_bytes", [64, 1000, 4 << 20])
def test_jsonl_file_source_conformance(jsonl: Path, chunk_bytes: int) -> None:
    got = check_source(lambda: JsonlFileSource(jsonl, SCHEMA, chunk_bytes=chunk_bytes))
    assert got["records"] == N_GOOD and got["dead"] == N_BAD


def test_jsonl_file_source_conformance_paced(jsonl: Path) -> None:
    got = check_source(lambda: JsonlFileSource(jsonl, SCHEMA, pace="original", speed=100, chunk_bytes=700))
    assert got["records"] == N_GOOD


def test_csv_file_source_conformance(csv_file: Path) -> None:
    got = check_source(lambda: CsvFileSource(csv_file, SCHEMA, chunk_bytes=333))
    assert got == {"records": 272, "dead": 28, "reads": got["reads"]}


def test_stdin_source_conformance(jsonl: Path, csv_file: Path) -> None:
    data, csv_data = jsonl.read_bytes(), csv_file.read_bytes()
    assert check_source(lambda: StdinSource(SCHEMA, stream=io.BytesIO(data)))["records"] == N_GOOD
    assert check_source(lambda: StdinSource(SCHEMA, "csv", stream=io.BytesIO(csv_data)))["records"] == 272


def test_memory_source_conformance(jsonl: Path) -> None:
    dicts = [json.loads(x) for x in make_lines() if x.startswith("{")]
    got = check_source(lambda: MemorySource(dicts, batch_size=10, schema=SCHEMA))
    assert got["dead"] == N_BAD - N_GARBAGE
    columns = {
        "user": [d["user"] for d in dicts], "ts": [d["ts"] for d in dicts],
        "amount": [d["amount"] for d in dicts], "id": [d["id"] for d in dicts],
    }
    got = check_source(lambda: MemorySource(columns, batch_size=33, schema=SCHEMA))
    assert got["records"] == N_GOOD and got["dead"] == N_BAD - N_GARBAGE
    recs = JsonDecoder(SCHEMA).decode([x.encode() for x in make_lines()])
    got = check_source(lambda: MemorySource(recs, batch_size=50))
    assert got == {"records": N_GOOD, "dead": N_BAD, "reads": got["reads"]}
    plain = {"key": ["a", "b"], "ts_ms": [1, 2], "x": [1.0, 2.0], "tag": ["p", "q"]}
    assert check_source(lambda: MemorySource(plain))["records"] == 2


def test_sink_conformance(tmp_path: Path) -> None:
    check_sink(lambda: JsonlSink(tmp_path / "a.jsonl"), read_back=lambda s: _read_jsonl(s.path))
    check_sink(lambda: SqliteAlertSink(tmp_path / "a.db"), read_back=lambda s: SqliteAlertSink.read(s.path))
    check_sink(MemorySink, read_back=lambda s: s.durable)
    check_sink(lambda: ConsoleAlertSink(Console(file=io.StringIO())))
    dead = [DeadLetter("invalid_json", "why", "raw", "src", 3), DeadLetter("wrong_type", "other", "r", "src", 9)]
    check_sink(lambda: DeadLetterSink(tmp_path / "d" / "dead.jsonl"), dead, lambda s: _read_jsonl(s.path))


def _read_jsonl(path: Path) -> list[dict]:
    with open(path, "rb") as f:  # a separate handle: sees only what reached the OS
        return [json.loads(x) for x in f]


# -- files -------------------------------------------------------------------------------------------


def test_file_positions_are_byte_offsets_after_the_last_line(tmp_path: Path) -> None:
    p = tmp_path / "e.jsonl"
    lines = [json.dumps({"user": "a", "ts": T0 + i, "amount": i, "id": i}) for i in range(5)]
    p.write_text("\r\n".join(lines) + "\r\n")
    r = JsonlFileSource(p, SCHEMA).open("0")
    assert r.position() == 0
    b = r.read_batch(2, 10)
    assert b is not None and b.extra["id"].tolist() == [0, 1]
    assert r.position() == len(lines[0]) + len(lines[1]) + 4
    r2 = JsonlFileSource(p, SCHEMA).open("0", resume=r.position())
    assert r2.read_batch(100, 10).extra["id"].tolist() == [2, 3, 4]
    assert r2.position() == p.stat().st_size and r2.at_end
    assert r2.read_batch(100, 10) is None


def test_dead_letter_line_numbers_survive_resume(jsonl: Path) -> None:
    src = JsonlFileSource(jsonl, SCHEMA, name="ev")
    r = src.open("0")
    r.read_batch(100, 10)
    r2 = src.open("0", resume=r.position())
    dead = r2.read_batch(100, 10).dead
    assert dead and all(d.source == "ev" for d in dead)
    want = [i + 1 for i, x in enumerate(make_lines()) if i >= 100 and (x == "garbage" or '"ts":5,' in x)]
    assert [d.position for d in dead] == want[: len(dead)]


def test_bad_resume_positions_are_refused(jsonl: Path) -> None:
    src = JsonlFileSource(jsonl, SCHEMA)
    for bad in (-1, 10**9, "12", 3.5, True):
        with pytest.raises(SourceError, match="resume"):
            src.open("0", resume=bad)
    with pytest.raises(SourceError, match="not at a line start"):
        src.open("0", resume=7)
    with pytest.raises(SourceError, match="one partition"):
        src.open("1")
    with pytest.raises(SourceError, match="can't open"):
        JsonlFileSource(jsonl.parent / "missing.jsonl", SCHEMA).open("0")


def test_read_after_close_raises(jsonl: Path) -> None:
    r = JsonlFileSource(jsonl, SCHEMA).open("0")
    r.close()
    with pytest.raises(SourceError, match="closed"):
        r.read_batch(10, 10)


def test_empty_files(tmp_path: Path) -> None:
    (tmp_path / "e.jsonl").write_bytes(b"")
    (tmp_path / "e.csv").write_bytes(b"")
    for src in (JsonlFileSource(tmp_path / "e.jsonl", SCHEMA), CsvFileSource(tmp_path / "e.csv", SCHEMA)):
        r = src.open("0")
        assert r.read_batch(10, 10) is None and r.at_end and r.position() == 0


def test_csv_resume_skips_header(csv_file: Path) -> None:
    src = CsvFileSource(csv_file, SCHEMA)
    r = src.open("0")
    first = r.read_batch(5, 10)
    assert first.keys.tolist() == ["u1", "u2", "u3", "u4"]
    assert first.dead[0].position == 2  # line 1 is the header
    rest = src.open("0", resume=r.position()).read_batch(1000, 10)
    assert rest.extra["id"].tolist()[0] == "e5"


def test_config_is_checked() -> None:
    with pytest.raises(ConfigError, match="pace"):
        JsonlFileSource("x", SCHEMA, pace="fast")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="speed"):
        JsonlFileSource("x", SCHEMA, pace="original", speed=0)
    with pytest.raises(ConfigError, match="format"):
        StdinSource(SCHEMA, format="xml")  # type: ignore[arg-type]


# -- pacing ------------------------------------------------------------------------------------------


def test_original_pace_releases_events_as_their_time_comes(tmp_path: Path) -> None:
    p = tmp_path / "paced.jsonl"
    times = [0, 0, 1000, 900, 3000, 10_000]  # one late event (900 after 1000)
    lines = [json.dumps({"user": "a", "ts": T0 + t, "amount": 1, "id": i}) for i, t in enumerate(times)]
    lines.insert(3, "broken")  # a dead letter between held-back records
    p.write_text("\n".join(lines) + "\n")
    clock = ManualClock(100.0)
    src = JsonlFileSource(p, SCHEMA, pace="original", speed=2.0, clock=clock, sleep=clock.sleep)
    r = src.open("0")
    ids = lambda b: b.extra["id"].tolist()  # noqa: E731
    assert ids(r.read_batch(100, 100)) == [0, 1]  # due at once
    b = r.read_batch(100, 100)  # 1000 ms of event time = 500 ms of wall clock at speed 2: not yet
    assert b is None and clock.slept == [pytest.approx(0.1)]
    b = r.read_batch(100, 1000)  # the late event comes with the one before it, and the dead letter between
    assert ids(b) == [2, 3] and [d.raw for d in b.dead] == ["broken"] and clock() == pytest.approx(100.5)
    pos = r.position()
    assert r.read_batch(100, 0) is None and r.position() == pos
    clock.advance(1.0)  # event time 0 + 3000 ms at speed 2 = wall +1.5 s
    assert ids(r.read_batch(100, 0)) == [4]
    assert r.read_batch(100, 0) is None and not r.at_end
    assert ids(r.read_batch(100, 10_000)) == [5] and clock() == pytest.approx(105.0) and r.at_end


def test_original_pace_never_blocks_past_the_timeout(tmp_path: Path) -> None:
    p = tmp_path / "slow.jsonl"
    lines = [json.dumps({"user": "a", "ts": T0 + 60_000 * i, "amount": 1, "id": i}) for i in range(3)]
    p.write_text("\n".join(lines))
    r = JsonlFileSource(p, SCHEMA, pace="original").open("0")
    assert len(r.read_batch(10, 50)) == 1
    t0 = time.monotonic()
    assert r.read_batch(10, 50) is None
    assert time.monotonic() - t0 < 0.5
    # resuming mid-replay restarts the pace from the first event after the resume point
    r2 = JsonlFileSource(p, SCHEMA, pace="original").open("0", resume=r.position())
    assert r2.read_batch(10, 50).extra["id"].tolist() == [1]


# -- stdin -------------------------------------------------------------------------------------------


def test_stdin_honours_timeout_and_reads_as_data_arrives() -> None:
    rfd, wfd = os.pipe()
    with os.fdopen(rfd, "rb") as stream, os.fdopen(wfd, "wb", buffering=0) as writer:
        r = StdinSource(SCHEMA, stream=stream).open("0")
        t0 = time.monotonic()
        assert r.read_batch(10, 50) is None
        assert 0.04 <= time.monotonic() - t0 < 0.5
        writer.write(b'{"user":"a","ts":1700000000000,"amount":1,"id":1}\n{"user":"b","ts":17000')
        b = r.read_batch(10, 500)
        assert b.keys.tolist() == ["a"] and r.position() == 1 and not r.at_end
        writer.write(b'00000000,"amount":2,"id":2}\n')
        writer.close()
        assert r.read_batch(10, 500).keys.tolist() == ["b"]
        deadline = time.monotonic() + 2
        while not r.at_end and time.monotonic() < deadline:
            r.read_batch(10, 50)
        assert r.at_end and r.position() == 2
        r.close()


def test_stdin_resume_skips_lines_and_opens_once() -> None:
    data = b"".join(b'{"user":"u%d","ts":1700000000000,"amount":1,"id":1}\n' % i for i in range(5))
    src = StdinSource(SCHEMA, stream=io.BytesIO(data))
    r = src.open("0", resume=3)
    assert r.read_batch(10, 500).keys.tolist() == ["u3", "u4"] and r.position() == 5
    with pytest.raises(SourceError, match="once"):
        src.open("0")


# -- memory ------------------------------------------------------------------------------------------


def test_memory_source_validates_columns_with_a_schema() -> None:
    cols = {"user": [1, 2, 3], "ts": [T0, 5, T0], "amount": [1.0, 2.0, np.inf], "id": ["a", "b", "c"]}
    b = MemorySource(cols, schema=SCHEMA).open("0").read_batch(10, 0)
    assert b.keys.tolist() == ["1"]
    reasons = [(d.position, d.reason, d.message.split(":")[0]) for d in b.dead]
    assert reasons == [(1, "absurd_timestamp", "`ts` 5 is absurd"), (2, "not_finite", "`amount` is not finite")]
    with pytest.raises(ConfigError, match="lacks columns"):
        MemorySource({"user": [1]}, schema=SCHEMA)
    with pytest.raises(ConfigError, match="same length"):
        MemorySource({"user": [1], "ts": [T0, T0], "amount": [1.0], "id": [1]}, schema=SCHEMA)
    with pytest.raises(ConfigError, match="needs a schema"):
        MemorySource([{"user": 1}])


def test_memory_source_of_records_hands_out_dead_letters_once() -> None:
    recs = Records(np.array(["a", "b"], object), np.array([1, 2]), {"x": np.array([1.0, 2.0])},
                   dead=[DeadLetter("undecodable", "bad", "raw", "m", 0)])
    r = MemorySource(recs, batch_size=1).open("0")
    assert len(r.read_batch(5, 0).dead) == 1 and r.read_batch(5, 0).dead == [] and r.at_end


# -- sinks -------------------------------------------------------------------------------------------


def alert(i: int, **kw: object) -> Alert:
    base = dict(id=f"a{i}", key=f"u{i}", event_id=f"e{i}", detector="amount_z", score=7.5 + i, threshold=4.0,
                event_ts_ms=T0 + i, detect_ts_ms=T0 + 100 + i, latency_ms=12.0, stats={"n": 50, "mean": 3.25})
    base.update(kw)
    return Alert(**base)  # type: ignore[arg-type]


def test_jsonl_sink_buffers_until_flush_and_appends(tmp_path: Path) -> None:
    p = tmp_path / "out.jsonl"
    s = JsonlSink(p)
    s.write_batch([alert(1), {"numpy": np.float32(1.5), "arr": np.arange(2), "obj": object}])
    assert p.read_bytes() == b""  # buffered
    s.flush()
    rows = _read_jsonl(p)
    assert rows[0]["stats"] == {"n": 50, "mean": 3.25}
    assert rows[1]["numpy"] == 1.5 and rows[1]["arr"] == [0, 1]
    s.close()
    s2 = JsonlSink(p)
    s2.write_batch([alert(2)])
    s2.close()
    assert len(_read_jsonl(p)) == 3
    with pytest.raises(SinkError, match="can't write"):
        JsonlSink(tmp_path / "x.jsonl").write_batch([42])


def test_jsonl_sink_writes_through_when_the_buffer_fills(tmp_path: Path) -> None:
    s = JsonlSink(tmp_path / "o.jsonl", buffer_bytes=100)
    s.write_batch([alert(i) for i in range(3)])
    assert len(_read_jsonl(tmp_path / "o.jsonl")) == 3


def test_sqlite_sink_is_idempotent_and_commits_on_flush(tmp_path: Path) -> None:
    p = tmp_path / "alerts.db"
    s = SqliteAlertSink(p)
    s.write_batch([alert(1), alert(2)])
    assert SqliteAlertSink.read(p) == []  # not committed yet
    s.flush()
    s.write_batch([alert(1, score=99.0)])  # same id: replaced, not duplicated
    s.close()
    rows = SqliteAlertSink.read(p)
    assert sorted((r["id"], r["score"]) for r in rows) == [("a1", 99.0), ("a2", 9.5)]
    cols = [row[1] for row in sqlite3.connect(p).execute("PRAGMA table_info(alerts)")]
    assert cols == list(Alert.__dataclass_fields__)
    assert rows[0]["event_ids"] == [] and rows[0]["latency_ms"] == 12.0


def test_dead_letter_sink_counts(tmp_path: Path) -> None:
    s = DeadLetterSink(tmp_path / "dead.jsonl")
    s.write_batch([DeadLetter("wrong_type", "why", "raw", "src", 7), {"reason": "r", "raw": "", "position": 1}])
    s.close()
    assert s.count == 2 and _read_jsonl(tmp_path / "dead.jsonl")[0] == {
        "reason": "wrong_type", "message": "why", "raw": "raw", "source": "src", "position": 7}


def test_memory_sink_can_fail_flush() -> None:
    s = MemorySink()
    s.write_batch([1, 2])
    s.fail_flush = True
    with pytest.raises(SinkError):
        s.flush()
    assert s.durable == [] and s.items == [1, 2]


def test_console_sink_prints_readable_lines_and_rate_limits() -> None:
    out = io.StringIO()
    now = [0.0]
    console = Console(file=out, width=300, color_system=None)
    sink = ConsoleAlertSink(console, limit_per_s=3, clock=lambda: now[0])
    sink.write_batch([alert(i, severity="critical" if i == 0 else "warning") for i in range(10)])
    now[0] = 1.5
    sink.write_batch([alert(20, stats={}, latency_ms=None)])
    sink.close()
    lines = out.getvalue().splitlines()
    assert lines[0] == (
        "2023-11-14 22:13:20.000 CRIT  u0  amount_z  score 7.50 (threshold 4.00)  n=50 mean=3.25  12 ms"
    )
    assert lines[3] == "(7 more alerts not shown)"
    assert lines[4].startswith("2023-11-14 22:13:20.020 WARN  u20  amount_z  score 27.50")
    assert len(lines) == 5 and sink.printed == 4


def test_jsonl_sink_cuts_a_torn_last_line_before_appending(tmp_path):
    from vigil.io.sinks import JsonlSink

    path = tmp_path / "a.jsonl"
    path.write_bytes(b'{"a":1}\n{"b":2}\n{"c":')  # a process was killed mid-write
    s = JsonlSink(path)
    s.write_batch([{"d": 4}])
    s.close()
    assert path.read_text().splitlines() == ['{"a":1}', '{"b":2}', '{"d":4}']


def test_stdin_reader_thread_ends_on_close_while_the_pipe_stays_open():
    """Was: the thread stayed blocked in a read holding stdin's lock, and the interpreter aborted at exit."""
    from vigil.io.files import StdinSource
    from vigil.io.schema import Schema

    r_fd, w_fd = os.pipe()
    os.write(w_fd, b'{"user":"a","ts":1700000000000,"amount":1}\n')
    stream = os.fdopen(r_fd, "rb")
    try:
        reader = StdinSource(Schema("user", "ts", fields=("amount",)), stream=stream).open()
        got = None
        for _ in range(500):  # the line arrives; the writer keeps the pipe open
            got = reader.read_batch(10, 20)
            if got is not None and len(got):
                break
        assert got is not None and got.keys.tolist() == ["a"]
        reader.close()
        reader._thread.join(timeout=5)
        assert not reader._thread.is_alive()  # not blocked in a read: it saw the close
    finally:
        os.close(w_fd)
        stream.close()
