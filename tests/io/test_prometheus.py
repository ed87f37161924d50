"""PrometheusScrapeSource against a real prometheus-node-exporter, plus rate/reset/failure logic with a fake fetch."""

from __future__ import annotations

import subprocess
import time
import urllib.request
from collections import defaultdict

import pytest

from vigil.errors import ConfigError
from vigil.io.prometheus import PrometheusScrapeSource
from vigil.testing.system import debian_program, free_port

NODE_EXPORTER = "/usr/bin/prometheus-node-exporter"
COLLECTORS = ["--collector.disable-defaults", "--collector.cpu", "--collector.meminfo", "--collector.loadavg",
              "--collector.netdev", "--collector.diskstats"]


@pytest.fixture(scope="module")
def node_exporter():
    """A real node_exporter on 127.0.0.1:<free port>; yields its host:port."""
    debian_program(NODE_EXPORTER, "prometheus-node-exporter")
    port = free_port()
    proc = subprocess.Popen([NODE_EXPORTER, f"--web.listen-address=127.0.0.1:{port}", *COLLECTORS],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    instance = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                with urllib.request.urlopen(f"http://{instance}/metrics", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"node_exporter did not come up on {instance}: {proc.stderr.read().decode()[-2000:]}")
            time.sleep(0.05)
        yield instance
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _scrapes(reader, n, max_items=100_000, timeout_ms=5000):
    """The records of the next n scrapes (each as one list of rows) and their dead letters."""
    out, dead = [], []
    rows = []
    while len(out) < n:
        before = reader.position()
        b = reader.read_batch(max_items, timeout_ms)
        if b is not None:
            rows += list(zip(b.keys.tolist(), b.ts_ms.tolist(), b.extra["metric"].tolist(), b.cols["value"].tolist()))
            dead += b.dead
        if reader.position() > before:
            out.append(rows)
            rows = []
    return out, dead


def test_node_exporter_samples_and_rates(node_exporter):
    src = PrometheusScrapeSource([f"http://{node_exporter}/metrics"], interval_s=0.5, rate=True,
                                 metrics=["node_cpu_seconds_total", "node_load1", "node_memory_MemAvailable_bytes"])
    r = src.open()
    try:
        (first, second), dead = _scrapes(r, 2)
    finally:
        r.close()
        r.close()
    assert dead == []
    assert {h for h, *_ in first + second} == {node_exporter}
    # first scrape: gauges only; counters need a previous value
    assert {m for _, _, m, _ in first} == {"node_load1", "node_memory_MemAvailable_bytes"}
    cpu = [(m, v) for _, _, m, v in second if m.startswith("node_cpu_seconds_total:")]
    assert cpu, "no node_cpu_seconds_total rates on the second scrape"
    assert all(m.startswith("node_cpu_seconds_total:cpu=") and ",mode=" in m for m, _ in cpu)
    assert any(m.endswith(",mode=idle") for m, _ in cpu) and any(m.endswith(",mode=user") for m, _ in cpu)
    per_cpu = defaultdict(float)
    for m, v in cpu:
        assert 0 <= v < 2, (m, v)  # CPU seconds per second
        per_cpu[m.split(":cpu=")[1].split(",")[0]] += v
    assert all(0.5 < total < 1.6 for total in per_cpu.values()), per_cpu  # the modes of a CPU add up to ~1 s/s
    t1, t2 = first[0][1], second[0][1]
    assert 300 <= t2 - t1 <= 3000
    assert r.stats["scrapes"] == 2 and r.stats["failed"] == 0 and r.position() == 2


def test_raw_counters_labels_and_max_items(node_exporter):
    src = PrometheusScrapeSource([node_exporter], interval_s=60, metrics="node_cpu_seconds_total", max_scrapes=1)
    r = src.open()
    sizes, rows = [], []
    while not r.at_end:
        b = r.read_batch(3, 5000)
        if b is not None:
            sizes.append(len(b))
            rows += list(zip(b.extra["metric"].tolist(), b.cols["value"].tolist(), b.ts_ms.tolist()))
            assert r.position() == (1 if r.at_end else 0)
    r.close()
    assert max(sizes) == 3 and sum(sizes) == len(rows) >= 4
    assert all(v > 0 for m, v, _ in rows if m.endswith("mode=idle"))
    assert len({t for *_, t in rows}) == 1  # the scrape time


def test_unreachable_target_gives_dead_letters_not_exceptions(node_exporter):
    dead_port = free_port()
    src = PrometheusScrapeSource([node_exporter, f"127.0.0.1:{dead_port}"], interval_s=0.2, metrics="node_load1",
                                 timeout_s=2, max_scrapes=2)
    r = src.open()
    (first, second), dead = _scrapes(r, 2)
    r.close()
    assert [m for _, _, m, _ in first] == ["node_load1"] and [m for _, _, m, _ in second] == ["node_load1"]
    assert len(dead) == 2 and r.stats["failed"] == 2
    assert all(d.reason == "unreachable" and d.message.startswith("target unreachable: ") for d in dead)
    assert [d.position for d in dead] == [0, 1] and dead[0].raw == f"http://127.0.0.1:{dead_port}/metrics"
    assert r.at_end


# -- logic, with a fake fetch ------------------------------------------------------------------------


class FakeTarget:
    def __init__(self, bodies):
        self.bodies = list(bodies)

    def __call__(self, url, timeout_s, max_bytes):
        body = self.bodies.pop(0)
        if isinstance(body, Exception):
            raise body
        return "text/plain; version=0.0.4", body


COUNTER = "# TYPE reqs_total counter\nreqs_total{code=\"200\",instance=\"web-7\"} %s\n# TYPE temp gauge\ntemp %s\n"


def test_rates_are_reset_aware_and_survive_failed_scrapes():
    walls = iter([100.0, 102.0, 104.0, 106.0, 110.0])
    fetch = FakeTarget([COUNTER % (10, 1), COUNTER % (30, 2), COUNTER % (5, 3), RuntimeError("boom"),
                        COUNTER % (45, 4)])
    now = [0.0]

    def sleep(s):
        now[0] += s

    src = PrometheusScrapeSource(["fake:1"], interval_s=1, rate=True, fetch=fetch, wall_clock=lambda: next(walls),
                                 clock=lambda: now[0], sleep=sleep)
    r = src.open()
    got = []
    for _ in range(5):
        b = r.read_batch(100, 5000)  # > interval_s: sleeps (manual clock) until due, then waits for the fetch
        got.append((list(zip(b.keys.tolist(), b.extra["metric"].tolist(), b.cols["value"].tolist())),
                    [d.message for d in b.dead]))
    assert got[0] == ([("fake:1", "temp", 1.0)], [])
    assert got[1][0] == [("web-7", "reqs_total:code=200", 10.0), ("fake:1", "temp", 2.0)]  # (30-10)/2 s
    assert got[2][0][0] == ("web-7", "reqs_total:code=200", 2.5)  # reset: 5 since the restart, over 2 s
    assert got[3] == ([], ["scrape failed: RuntimeError: boom"])
    assert got[4][0][0] == ("web-7", "reqs_total:code=200", 40 / 6)  # across the failed scrape
    assert r.position() == 5 and r.stats["failed"] == 1


def test_unparseable_body_and_pacing_never_blocks_past_timeout():
    fetch = FakeTarget(["temp{ 1\n", "temp NaN\ntemp2 3\n"])
    src = PrometheusScrapeSource(["fake:1"], interval_s=30, fetch=fetch)
    r = src.open(resume=7)
    assert r.position() == 7
    b = r.read_batch(10, 1000)
    assert len(b) == 0 and b.dead[0].reason == "scrape_failed" and b.dead[0].position == 7
    assert b.dead[0].message.startswith("unparseable exposition")
    t0 = time.monotonic()
    assert r.read_batch(10, 50) is None  # next scrape due in 30 s
    assert time.monotonic() - t0 < 0.5
    assert r.position() == 8
    r.close()


def test_config_errors():
    with pytest.raises(ConfigError, match="targets"):
        PrometheusScrapeSource("127.0.0.1:9100")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="targets"):
        PrometheusScrapeSource(["ftp://x/metrics"])
    with pytest.raises(ConfigError, match="interval_s"):
        PrometheusScrapeSource(["x:1"], interval_s=0)
    with pytest.raises(ConfigError, match="metrics"):
        PrometheusScrapeSource(["x:1"], metrics="node_(")
