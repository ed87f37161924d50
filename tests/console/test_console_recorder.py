"""The stream recorder keeps what "around the alert" needs: every alerting key's recent window (bounded by its
memory budget) however many quiet keys stream by, an LRU of the others, and the two lags of the health bar."""

from __future__ import annotations

import httpx
import numpy as np

from vigil.alerting.store import AlertStore
from vigil.console.app import create_app
from vigil.console.recorder import StreamRecorder
from vigil.console.server import serve_console
from vigil.detectors.base import Verdicts
from vigil.engine.stats import RunStats
from vigil.testing.clock import ManualClock
from vigil.types import Batch

TOKEN = "recorder-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
T0 = 1_700_000_000_000
PER_KEY = 8 * 5  # bytes a point: event time and 4 columns (x; the step's score, calibrated score and flag)


def feed(rec, keys, ts, values, flags):
    n = len(keys)
    flag = np.asarray(flags, bool)
    v = Verdicts(np.abs(np.asarray(values, float)), np.zeros(n), flag, flag, np.ones(n, bool), {})
    rec(Batch(np.zeros(n, np.int32), np.asarray(ts, np.int64), {"x": np.asarray(values, float)}),
        np.asarray(keys, object), {"x_z": v})


def test_an_alerting_key_keeps_its_window_while_thousands_of_quiet_keys_stream_by():
    rec = StreamRecorder(max_keys=100, points=50)
    feed(rec, ["card-7"] * 20, T0 + np.arange(20) * 1000, [10.0] * 19 + [900.0], [0] * 19 + [1])
    for b in range(50):  # 5,000 other keys, none anomalous: far more than max_keys
        keys = [f"quiet-{b}-{i}" for i in range(100)]
        feed(rec, keys, np.full(100, T0 + 60_000 + b), np.ones(100), np.zeros(100))
    s = rec.series("card-7", around_ms=T0 + 19_000, span_ms=60_000)
    assert s is not None and s["fields"]["x"][-1] == 900.0 and s["steps"]["x_z"]["flag"][-1] is True
    assert len(s["ts_ms"]) == 20 and len(rec) == 101 and rec.evicted == 4900
    assert next(k for k in rec.keys(limit=1000) if k["key"] == "card-7")["pinned"] is True


def test_pinned_keys_are_bounded_by_memory_and_the_oldest_alert_goes_first():
    cap = 5
    rec = StreamRecorder(max_keys=3, points=4, memory_bytes=(3 + cap) * (4 * PER_KEY + 16))
    for i in range(8):  # eight alerting keys, one after another
        feed(rec, [f"alert-{i}"], [T0 + i], [1.0], [1])
    assert rec.stats()["alert_capacity"] == cap and rec.stats()["alert_keys"] == cap
    pinned = {k["key"] for k in rec.keys(limit=100) if k["pinned"]}
    assert pinned == {f"alert-{i}" for i in range(3, 8)}  # the five latest alerts
    # the older ones went back among the others (max_keys of them) as they were pushed out
    assert [k["key"] for k in rec.keys(limit=100) if not k["pinned"]] == ["alert-2", "alert-1", "alert-0"]
    feed(rec, ["alert-3"], [T0 + 100], [1.0], [1])  # alert-3 alerts again: now the latest
    feed(rec, ["alert-8"], [T0 + 101], [1.0], [1])  # so alert-4 makes room, not alert-3
    pinned = {k["key"] for k in rec.keys(limit=100) if k["pinned"]}
    assert pinned == {"alert-3", "alert-5", "alert-6", "alert-7", "alert-8"}
    assert rec.series("alert-4") is not None and rec.series("alert-0") is None  # alert-4 pushed alert-0 out
    assert rec._cap <= 3 + cap


def test_random_streams_keep_the_invariants():
    rng = np.random.default_rng(11)
    cap, max_keys, points = 20, 30, 6
    rec = StreamRecorder(max_keys=max_keys, points=points, memory_bytes=(max_keys + cap) * (points * PER_KEY + 16))
    history: dict[str, list[int]] = {}
    last_flag: dict[str, int] = {}
    t = T0
    for b in range(200):
        n = int(rng.integers(1, 120))
        keys = [f"k{int(k)}" for k in rng.integers(0, 300, n)]
        flags = rng.random(n) < (0.4 if b % 10 == 0 else 0.02)  # now and then more alerts than room
        ts = t + np.arange(n)
        t += n
        feed(rec, keys, ts, ts.astype(float), flags)
        for k, x, f in zip(keys, ts.tolist(), flags.tolist(), strict=True):
            history.setdefault(k, []).append(x)
            if f:
                last_flag[k] = x
        kept = rec.keys(limit=10_000)
        rows = [rec._rows.get(k["key"], rec._pinned.get(k["key"])) for k in kept]
        assert len(set(rows)) == len(rows) == len(rec) <= max_keys + cap  # no two keys share a ring
        assert sum(k["pinned"] for k in kept) <= cap and rec._cap <= max_keys + cap
        for k in kept:  # what a ring holds is the key's own latest points, its very latest among them
            got = rec.series(k["key"])["ts_ms"]
            assert got == history[k["key"]][-len(got):] and 0 < len(got) <= points
        latest = sorted(last_flag, key=last_flag.get)[-cap:]  # the keys that alerted last are all kept
        assert {k["key"] for k in kept if k["pinned"]} == set(latest)


def test_health_tells_event_time_lag_from_processing_lag():
    """A replay of last year's data is not a year late: the watermark is measured against the newest event."""

    class Runner:  # what the health bar reads of a running EmbeddedRunner
        def __init__(self):
            self.stats = RunStats(watermark_ms=T0 + 55_000)
            self.p = type("P", (), {"steps": []})()

    wall = ManualClock((T0 + 400 * 86_400_000) / 1000)  # the console runs 400 days after the data's time
    rec = StreamRecorder(clock=wall.ms)
    feed(rec, ["a", "b"], [T0 + 60_000, T0 + 58_000], [1.0, 2.0], [0, 0])
    wall.advance(3.5)
    runner = Runner()
    with AlertStore(":memory:") as store:
        app = create_app(store=store, runner=runner, recorder=rec, token=TOKEN, pipeline_name="replay",
                         clock=wall.ms)
        handle, url = serve_console(app)
        try:
            h = httpx.get(url + "api/health", headers=AUTH, timeout=30).json()
            assert h["event_lag_ms"] == 5_000 and h["processing_lag_ms"] == 3_500
            assert h["newest_event_ms"] == T0 + 60_000 and "watermark_lag_ms" not in h
            runner.stats.finished = True  # a finished run lags behind nothing
            h = httpx.get(url + "api/health", headers=AUTH, timeout=30).json()
            assert h["event_lag_ms"] is None and h["processing_lag_ms"] is None and h["stats"]["finished"]
        finally:
            handle.stop()
