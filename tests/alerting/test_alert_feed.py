"""`vigil alertmanager --from kafka://…`: the alert manager as its own process, fed by a real broker's alerts topic.

The topic is written the way a pipeline on Flink (or the embedded engine's Kafka sink) writes it: in
transactions. Only committed alerts reach the store; a restart resumes after the committed offsets.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import orjson
import pytest

from vigil.alerting.feed import AlertFeed
from vigil.alerting.runtime import ManagedAlerts
from vigil.alerting.store import AlertStore
from vigil.types import Alert

pytestmark = pytest.mark.kafka
DEADLINE_S = 60
T0 = 1_700_000_000_000


def _alert(key: str, i: int, t: int) -> Alert:
    return Alert(id=f"a{key}{i}", key=key, event_id=f"e{key}{i}", detector="amount_z", score=9.0, threshold=4.0,
                 event_ts_ms=t, detect_ts_ms=t, message=f"{key} spent a lot")  # fmt: skip


def _produce(bootstrap: str, topic: str, alerts: list[Alert], *, commit: bool = True) -> None:
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap, "transactional.id": f"t-{topic}-{commit}-{time.monotonic_ns()}"})
    p.init_transactions(30)
    p.begin_transaction()
    for a in alerts:
        p.produce(topic, orjson.dumps(a.to_dict()), key=a.key.encode())
    p.produce(topic, b"not an alert")  # counted as unreadable, never stops the feed
    p.flush(30)
    (p.commit_transaction if commit else p.abort_transaction)(30)


def _feed_until(feed: AlertFeed, n: int) -> None:
    deadline = time.monotonic() + DEADLINE_S

    def until(f: AlertFeed) -> None:
        if f.counts["alerts"] >= n or time.monotonic() > deadline:
            f.stop()

    feed.run(on_poll=until)
    assert feed.counts["alerts"] == n, feed.counts


def test_only_committed_alerts_reach_the_store_and_a_restart_resumes(kafka_bootstrap, kafka_topic, tmp_path):
    topic = kafka_topic(partitions=2)
    url = f"kafka://{kafka_bootstrap}/{topic}"
    store = tmp_path / "alerts.db"
    policy = {"route": {"group_by": ["alertname", "key"]}, "clock": "event"}
    _produce(kafka_bootstrap, topic, [_alert("aborted", 0, T0)], commit=False)
    _produce(kafka_bootstrap, topic, [_alert(k, 0, T0 + i) for i, k in enumerate("abc")])

    managed = ManagedAlerts(policy, pipeline="fraud", store_path=store, tick_interval_s=None)
    _feed_until(AlertFeed(url, managed, group_id=f"g-{topic}", watermark_delay_ms=60_000), 3)
    managed.close()
    with AlertStore(str(store)) as db:
        keys = sorted(r["labels"]["key"] for r in db.alerts())
    assert keys == ["a", "b", "c"]  # the aborted transaction's alert never arrives

    # a restart with the same group reads only what came after its committed offsets
    _produce(kafka_bootstrap, topic, [_alert("d", 1, T0 + 10 * 60_000)])
    managed = ManagedAlerts(policy, pipeline="fraud", store_path=store, tick_interval_s=None)
    feed = AlertFeed(url, managed, group_id=f"g-{topic}", watermark_delay_ms=60_000)
    _feed_until(feed, 1)
    managed.close()
    assert feed.counts["unreadable"] == 1
    with AlertStore(str(store)) as db:
        rows = {r["labels"]["key"]: r for r in db.alerts()}
    assert sorted(rows) == ["a", "b", "c", "d"]
    # event time moved 10 minutes past a, b and c: with the default resolve timeout they resolved
    assert rows["d"]["status"] == "firing"
    assert {rows[k]["status"] for k in "abc"} == {"resolved"}, {k: rows[k]["status"] for k in "abc"}


def test_the_command_serves_metrics_and_stops_cleanly_on_sigterm(kafka_bootstrap, kafka_topic, tmp_path):
    topic = kafka_topic(partitions=1)
    _produce(kafka_bootstrap, topic, [_alert(k, 0, T0) for k in "xy"])
    store = tmp_path / "am" / "alerts.db"
    proc = subprocess.Popen(
        [sys.executable, "-m", "vigil.cli.main", "alertmanager", "--from", f"kafka://{kafka_bootstrap}/{topic}",
         "--store", str(store), "--name", "fraud", "--group-id", f"g-{topic}", "--metrics-port", "0"],
        stderr=subprocess.PIPE, text=True, env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stderr.readline, "")), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + DEADLINE_S
        body = ""
        while time.monotonic() < deadline:
            m = next((re.search(r"metrics: (http://\S+)", ln) for ln in list(lines) if "metrics:" in ln), None)
            if m:
                body = urllib.request.urlopen(m.group(1), timeout=5).read().decode()
                if "vigil_alertmanager_alerts_read 2.0" in body and 'state="firing"} 2.0' in body:
                    break
            time.sleep(0.2)
        assert "vigil_alertmanager_alerts_read 2.0" in body, "".join(lines)
        assert re.search(r'vigil_alerts\{state="firing"\} 2\.0', body), body
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=DEADLINE_S)
        reader.join(timeout=5)
    assert rc == 0, "".join(lines)
    assert "stopped: 2 alerts read, 1 unreadable" in "".join(lines)
    with AlertStore(str(store)) as db:
        assert sorted(r["labels"]["key"] for r in db.alerts()) == ["x", "y"]


def test_a_bad_url_fails_with_one_clear_line(tmp_path: Path):
    out = subprocess.run([sys.executable, "-m", "vigil.cli.main", "alertmanager", "--from", "http://nope/alerts",
                          "--store", str(tmp_path / "a.db")], capture_output=True, text=True)  # fmt: skip
    assert out.returncode != 0
    assert "kafka://" in out.stderr and "Traceback" not in out.stderr, out.stderr
