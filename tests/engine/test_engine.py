"""The embedded runner end to end on in-memory sources (no services)."""

import threading

import numpy as np
import pytest

from vigil.dataflow.pipeline import Pipeline
from vigil.detectors import SlidingZScore, VelocityRule
from vigil.engine.runner import EmbeddedRunner
from vigil.errors import ConfigError
from vigil.eventtime import TumblingWindows
from vigil.io.replay import ReplaySource
from vigil.io.sinks import MemorySink
from vigil.types import Alert


def _src(keys, ts, values, **kw):
    return ReplaySource(np.array(keys, object), np.array(ts, np.int64), {"amount": np.array(values, float)},
                         {"id": np.array([f"e{i}" for i in range(len(ts))], object)}, **kw)


def test_spike_raises_one_alert_with_evidence(tmp_path):
    rng = np.random.default_rng(0)
    n = 300
    vals = 50 + rng.normal(0, 1, n)
    vals[250] = 90
    alerts = MemorySink()
    p = (Pipeline("t").source(_src(["k"] * n, np.arange(n) * 100, vals))
         .detect("z", SlidingZScore(field="amount", window="60s", threshold=4, baseline_halflife=None))
         .alerts_to(alerts))
    st = EmbeddedRunner(p, out_dir=str(tmp_path)).run()
    assert st.events == n and st.alerts == 1
    a = alerts.items[0]
    assert isinstance(a, Alert) and a.event_id == "e250" and a.key == "k" and a.detector == "z"
    assert a.threshold == 4 and a.score > 4 and a.stats["count"] >= 10 and a.stats["basis"] == 1
    assert a.event_ts_ms == 25_000 and a.latency_ms is not None and "sd" in a.message
    # deterministic ids: the same input gives the same alert id
    alerts2 = MemorySink()
    p2 = (Pipeline("t").source(_src(["k"] * n, np.arange(n) * 100, vals))
          .detect("z", SlidingZScore(field="amount", window="60s", threshold=4, baseline_halflife=None))
          .alerts_to(alerts2))
    EmbeddedRunner(p2, out_dir=str(tmp_path)).run()
    assert alerts2.items[0].id == a.id


def test_late_events_go_to_the_late_output_and_are_counted(tmp_path):
    ts = [1000, 2000, 10_000, 3000, 9500, 20_000, 100]  # watermark 2s: 3000 and 100 are late after 10_000
    late = MemorySink()
    alerts = MemorySink()
    p = (Pipeline("t").source(_src(["a"] * len(ts), ts, [1.0] * len(ts)))
         .watermark("2s").detect("v", VelocityRule(window="60s", max_count=100)).alerts_to(alerts).late_to(late))
    st = EmbeddedRunner(p, out_dir=str(tmp_path)).run()
    assert st.late_events == 2 and st.events == 5
    assert sorted(r["ts_ms"] for r in late.items) == [100, 3000]
    assert all(r["behind_ms"] > 0 and r["key"] == "a" for r in late.items)


def test_allowed_lateness_keeps_slightly_late_events(tmp_path):
    ts = [1000, 10_000, 7000, 3000]
    late = MemorySink()
    p = (Pipeline("t").source(_src(["a"] * 4, ts, [1.0] * 4))
         .watermark("2s", allowed_lateness="2s").detect("v", VelocityRule()).alerts_to(MemorySink()).late_to(late))
    st = EmbeddedRunner(p, out_dir=str(tmp_path)).run()
    assert [r["ts_ms"] for r in late.items] == [3000] and st.late_events == 1


def test_default_late_file_is_written_only_when_needed(tmp_path):
    p = (Pipeline("quiet").source(_src(["a"] * 3, [1, 2, 3], [1.0] * 3))
         .detect("v", VelocityRule()).alerts_to(MemorySink()))
    EmbeddedRunner(p, out_dir=str(tmp_path)).run()
    assert not (tmp_path / "quiet" / "late.jsonl").exists()
    p = (Pipeline("loud").source(_src(["a"] * 3, [10_000, 1, 2], [1.0] * 3))
         .detect("v", VelocityRule()).alerts_to(MemorySink()))
    EmbeddedRunner(p, out_dir=str(tmp_path)).run()
    assert len((tmp_path / "loud" / "late.jsonl").read_text().splitlines()) == 2


def test_window_step_emits_every_window_at_end_of_input(tmp_path):
    out = MemorySink()
    ts = np.arange(0, 180_000, 1000)
    p = (Pipeline("w").source(_src(["a"] * len(ts), ts, np.ones(len(ts))))
         .window("per_min", TumblingWindows(60_000), field="amount", to=out))
    st = EmbeddedRunner(p, out_dir=str(tmp_path)).run()
    assert [(r["start_ms"], r["count"]) for r in out.items] == [(0, 60), (60_000, 60), (120_000, 60)]
    assert st.windows_emitted == 3


class FirstSeenThenQuiet:
    """A per-event operator: alert on a key's first event, and again when it stays quiet for 10 s."""

    def process(self, event, ctx):
        seen = ctx.state("seen")
        if seen.get() is None:
            seen.set(1)
            yield Alert(id=f"first-{ctx.key}", key=ctx.key, event_id=str(event.ts), detector="first", score=1.0,
                        threshold=0.0, event_ts_ms=event.ts, detect_ts_ms=0)
        ctx.register_timer(event.ts + 10_000)
        if ctx.state("last").get() is not None:
            ctx.delete_timer(ctx.state("last").get() + 10_000)
        ctx.state("last").set(event.ts)

    def on_timer(self, ts, ctx):
        yield {"key": ctx.key, "quiet_since": ts - 10_000}


def test_keyed_operator_state_and_timers(tmp_path):
    alerts, other = MemorySink(), MemorySink()
    keys = ["a", "b", "a", "a", "b"]
    ts = [0, 1000, 2000, 30_000, 31_000]
    p = (Pipeline("op").source(_src(keys, ts, [1.0] * 5)).watermark("1s")
         .process("first", FirstSeenThenQuiet(), to=other).alerts_to(alerts))
    EmbeddedRunner(p, out_dir=str(tmp_path)).run()
    assert sorted(a.key for a in alerts.items) == ["a", "b"]
    # b's timer (11 s) fires once the watermark passes it (before the event at 31 s); a's timer at 12 s
    # was deleted by a's event at 30 s, which arrived while the watermark was still at 1 s; the rest fire
    # at the end of input
    assert other.items == [{"key": "b", "quiet_since": 1000}, {"key": "a", "quiet_since": 30_000},
                           {"key": "b", "quiet_since": 31_000}]


class EchoOperator:
    """Emits one record per event (so the output sink sees every batch)."""

    def process(self, event, ctx):
        yield {"key": ctx.key, "ts": event.ts}

    def on_timer(self, ts, ctx):
        return ()


def test_blocked_sink_stops_the_source_instead_of_growing_memory(tmp_path):
    """Backpressure: while the sink is blocked, the source stops reading after a bounded number of batches."""
    n = 50_000
    src = _src([f"k{i % 50}" for i in range(n)], np.arange(n) * 10, np.ones(n))
    reads = []
    real_open = src.open

    def counting_open(part, resume=None):
        reader = real_open(part, resume)
        real_read = reader.read_batch

        def read_batch(max_items, timeout_ms):
            r = real_read(max_items, timeout_ms)
            if r is not None:
                reads.append(reader.position())
            return r

        reader.read_batch = read_batch
        return PausableReplayReader(reader)

    paused = threading.Event()

    class PausableReplayReader:
        """The reader as a Kafka reader would be: the engine pauses it when its input queue is full."""

        def __init__(self, inner):
            self._inner = inner

        def __getattr__(self, name):
            return getattr(self._inner, name)

        @property
        def at_end(self):
            return self._inner.at_end

        def pause(self):
            reads_when_paused.append(len(reads))
            paused.set()

        def resume(self):
            pass

    reads_when_paused: list[int] = []
    src.open = counting_open
    gate = threading.Event()

    class GatedSink(MemorySink):
        def write_batch(self, items):
            gate.wait()
            super().write_batch(items)

    sink = GatedSink()
    p = (Pipeline("bp").source(src).micro_batches(max_rows=500, queue_batches=2)
         .process("echo", EchoOperator(), to=sink))
    runner = EmbeddedRunner(p, out_dir=str(tmp_path))
    result = {}
    t = threading.Thread(target=lambda: result.setdefault("st", runner.run()), daemon=True)
    t.start()
    # the engine pauses the source once its input queue is full (the sink holds everything behind it); from then
    # on the source thread is blocked on that queue: nothing more is read until the sink moves
    assert paused.wait(timeout=120), "the source was never paused"
    # bounded: 2 queued + 1 being decoded in the source, 1 in the engine, 2 queued + 1 held by the sink
    assert len(reads) == reads_when_paused[0] <= 8, reads
    gate.set()
    t.join(timeout=30)
    assert result["st"].events == n and len(sink.items) == n and len(reads) == n // 500


def test_key_ttl_bounds_state_under_key_churn(tmp_path):
    """Keys idle past the TTL are expired; their slots are reused, so memory stays bounded."""
    n = 50_000
    keys = [f"user{i // 5}" for i in range(n)]  # every key lives for 5 events, then never again
    p = (Pipeline("churn").source(_src(keys, np.arange(n) * 1000, np.ones(n))).key_ttl("30s")
         .micro_batches(max_rows=1000)
         .detect("v", VelocityRule(window="10s", max_count=100)).alerts_to(MemorySink()))
    runner = EmbeddedRunner(p, out_dir=str(tmp_path))
    st = runner.run()
    assert st.keys_expired > 9_000
    assert runner.keys.capacity < 500  # 10,000 keys went through a few hundred slots
    assert p.steps[0].detector.win.capacity <= 1024


def test_stop_ends_a_paced_run_and_flushes(tmp_path):
    n = 1_000_000
    runner = None

    class StopOnFirstAlert(MemorySink):
        """Asks the run to stop when the first alert arrives: a stop mid-stream, whatever the machine's speed."""

        def write_batch(self, items):
            super().write_batch(items)
            runner.stop()

    sink = StopOnFirstAlert()
    p = (Pipeline("stop").source(_src(["a"] * n, np.arange(n), np.ones(n), rate=10_000))
         .detect("v", VelocityRule(window="1s", max_count=5)).alerts_to(sink))
    runner = EmbeddedRunner(p, out_dir=str(tmp_path))
    st = runner.run()
    assert 0 < st.events < n and st.finished and sink.flushes >= 1 and sink.items


def test_pipeline_validation_names_the_step():
    with pytest.raises(ConfigError, match="step `z`.*unique"):
        Pipeline("p").detect("z", VelocityRule()).detect("z", VelocityRule())
    with pytest.raises(ConfigError, match="has no source"):
        Pipeline("p").detect("z", VelocityRule()).validate()
    with pytest.raises(ConfigError, match="`max_delay` is not a duration; got 'soon'"):
        Pipeline("p").watermark("soon")


def test_processing_time_mode_stamps_records_on_arrival(tmp_path):
    late = MemorySink()
    clock = iter(range(10_000_000_000, 10_000_000_000 + 10**9, 10**6))  # 1 ms per call
    ts = [5_000, 1_000, 9_000, 100]  # out of order in event time: would be late in event-time mode
    p = (Pipeline("pt").source(_src(["a"] * 4, ts, [1.0] * 4)).watermark("0s").processing_time()
         .detect("v", VelocityRule()).alerts_to(MemorySink()).late_to(late))
    st = EmbeddedRunner(p, out_dir=str(tmp_path), wall_clock_ns=lambda: next(clock)).run()
    assert st.events == 4 and st.late_events == 0 and not late.items


def test_scores_output_has_every_event_of_every_step(tmp_path):
    scores = MemorySink()
    n = 50
    p = (Pipeline("s").source(_src(["a", "b"] * 25, np.arange(n) * 100, np.ones(n)))
         .detect("z", SlidingZScore(field="amount", baseline_halflife=None)).detect("v", VelocityRule())
         .alerts_to(MemorySink()).scores_to(scores))
    EmbeddedRunner(p, out_dir=str(tmp_path)).run()
    assert len(scores.items) == 2 * n
    row = scores.items[-1]
    assert set(row) == {"step", "key", "ts_ms", "event_id", "score", "calibrated", "flag", "ready"}
    assert {r["step"] for r in scores.items} == {"z", "v"} and row["event_id"] == "e49"


class _Boom:
    """A step that raises on its second batch (a bug, or data it can't handle)."""

    kind = "boom"

    def __init__(self, name="boom"):
        self.name, self.calls = name, 0

    def open(self):
        pass

    def on_batch(self, batch, keys, wm_rows, out):
        self.calls += 1
        if self.calls == 2:
            raise KeyError("amont")

    def on_late(self, *a):
        pass

    def on_watermark(self, *a):
        pass

    def reset_slots(self, slots):
        pass

    def snapshot(self):
        return {}

    def restore(self, state):
        pass

    def state_key(self):
        return "boom"

    def sinks(self):
        return []


class _BadSink(MemorySink):
    path = "bad.jsonl"

    def write_batch(self, items):
        raise ZeroDivisionError("division by zero")


def test_a_failing_step_stops_the_run_naming_the_step_and_outputs_are_flushed(tmp_path):
    from vigil.errors import describe

    alerts = MemorySink()
    n = 2000
    p = (Pipeline("boomrun").source(_src(["k"] * n, np.arange(n) * 10, [1.0] * n))
         .micro_batches(max_rows=100).detect("v", VelocityRule(window="60s", max_count=100))
         .step(_Boom()).alerts_to(alerts))
    with pytest.raises(KeyError) as exc:  # re-raised as it is, on the calling thread
        EmbeddedRunner(p, out_dir=str(tmp_path)).run()
    assert describe(exc.value) == "step `boom` failed on a batch: KeyError: 'amont'"
    assert alerts._closed  # the sink thread stopped and every output was closed
    assert all(not t.name.startswith("vigil-boomrun-") for t in threading.enumerate())  # every thread ended


def test_a_failing_sink_stops_the_run_naming_the_sink(tmp_path):
    from vigil.errors import describe

    n = 500
    p = (Pipeline("t").source(_src(["k"] * n, np.arange(n) * 10, [1.0] * n))
         .detect("v", VelocityRule(window="60s", max_count=3)).alerts_to(_BadSink()))
    with pytest.raises(ZeroDivisionError) as exc:
        EmbeddedRunner(p, out_dir=str(tmp_path)).run()
    assert describe(exc.value) == "output _BadSink (bad.jsonl) failed: ZeroDivisionError: division by zero"
