"""Kafka side of the prototype: write the workload to a topic, read it back, read alerts with read_committed.

Runs in any venv with confluent-kafka and numpy (.venv or .venv-flink)::

    python kafkaio.py produce --topic txns --n 1000000          # 4 partitions, key = user, timestamp = ts
    python kafkaio.py expect --topic txns --variant bucket       # expected alerts (reference implementation)
    python kafkaio.py check --topic txns --alerts txns-alerts --variant bucket   # exact comparison

The workload is /work/shared/bench/perf/workload.py (VIGIL_WORKLOAD_DIR to point elsewhere): JSON lines
``{"user":"u0001234","ts":1700000000123,"amount":23.4567}``. ``--late N`` adds N records, after half of the
stream, whose event time is a minute before the stream's start: they must come out on the late side output.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import zscore  # noqa: E402


def _workload():
    sys.path.insert(0, os.environ.get("VIGIL_WORKLOAD_DIR", "/work/shared/bench/perf"))
    import workload

    return workload


def make_records(n: int, keys: int, seed: int, late: int) -> list[tuple[str, int, str]]:
    """(user, ts, json line) in arrival order, with `late` injected late records after half the stream."""
    wl = _workload()
    ev = wl.generate(n, keys, seed)
    # the workload starts in 2023; the broker would delete such records at its next retention check (it ages
    # records by their timestamp), so the stream is moved to start at the current minute
    ev["ts"] = ev["ts"] - int(ev["ts"].min()) + int(time.time() // 60 * 60_000)
    lines = list(wl.iter_json_lines(ev))
    users = [f"u{k:07d}" for k in ev["key"].tolist()]
    ts = ev["ts"].tolist()
    recs = list(zip(users, ts, lines))
    if late:
        rng = np.random.default_rng(seed + 1)
        t0 = int(ev["ts"].min())
        half = len(recs) // 2
        picks = rng.integers(0, half, late)
        extra = []
        for j, i in enumerate(picks.tolist()):
            u = users[i]
            # a minute before the stream's start: behind every partition's watermark once records have flowed
            line = json.dumps({"user": u, "ts": t0 - 60_000 + j, "amount": round(float(ev["amount"][i]), 4), "late": 1},
                              separators=(",", ":"))
            extra.append((u, t0 - 60_000 + j, line))
        step = max(1, (len(recs) - half) // late)
        for j, r in enumerate(extra):
            recs.insert(half + 1 + j * (step + 1), r)
    return recs


def produce(bootstrap: str, topic: str, recs, partitions: int = 4) -> float:
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    fs = admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
    for f in fs.values():
        f.result()
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "batch.num.messages": 10000,
                  "compression.type": "lz4", "queue.buffering.max.messages": 1_000_000, "enable.idempotence": True})
    t0 = time.perf_counter()
    for u, ts, line in recs:
        while True:
            try:
                p.produce(topic, line.encode(), key=u.encode(), timestamp=ts)
                break
            except BufferError:
                p.poll(0.05)
    p.flush(120)
    return time.perf_counter() - t0


def ensure_topic(bootstrap: str, topic: str, n: int, keys: int, seed: int, late: int, partitions: int = 4) -> int:
    """Create and fill `topic` unless it already holds the expected number of records; returns the count."""
    want = n + late
    have = topic_size(bootstrap, topic)
    if have == want:
        return have
    if have:
        raise SystemExit(f"topic {topic} has {have} records, expected {want}: delete it or pick another name")
    recs = make_records(n, keys, seed, late)
    s = produce(bootstrap, topic, recs, partitions)
    print(f"produced {len(recs)} records to {topic} in {s:.1f}s", file=sys.stderr)
    return len(recs)


def topic_size(bootstrap: str, topic: str) -> int:
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "vigil-size", "enable.auto.commit": False})
    try:
        md = c.list_topics(topic, timeout=10)
        t = md.topics.get(topic)
        if t is None or t.error is not None:
            return 0
        total = 0
        for p in t.partitions:
            lo, hi = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            total += hi - lo
        return total
    finally:
        c.close()


def read_topic(bootstrap: str, topic: str, committed: bool = True, idle_s: float = 5.0, expect: int | None = None):
    """All records of `topic` as (partition, offset, value str); read_committed by default.

    Stops when every partition has reached its end (the last stable offset for read_committed) and nothing new
    came for `idle_s`, or once `expect` records were read and nothing new came for `idle_s`.
    """
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"vigil-check-{time.time_ns()}",
                  "enable.auto.commit": False, "auto.offset.reset": "earliest",
                  "isolation.level": "read_committed" if committed else "read_uncommitted",
                  "enable.partition.eof": True})
    md = c.list_topics(topic, timeout=10)
    if topic not in md.topics or md.topics[topic].error is not None:
        c.close()
        return []
    parts = list(md.topics[topic].partitions)
    c.assign([TopicPartition(topic, p, 0) for p in parts])
    out = []
    last_new = time.monotonic()
    at_eof: set[int] = set()
    try:
        while True:
            msgs = c.consume(10000, timeout=0.5)
            for m in msgs:
                if m.error():
                    if m.error().code() == -191:  # _PARTITION_EOF
                        at_eof.add(m.partition())
                        continue
                    raise RuntimeError(m.error())
                at_eof.discard(m.partition())
                out.append((m.partition(), m.offset(), m.value().decode()))
                last_new = time.monotonic()
            quiet = time.monotonic() - last_new
            if (len(at_eof) == len(parts) or (expect is not None and len(out) >= expect)) and quiet >= idle_s:
                return out
            if quiet > max(idle_s, 60):
                return out
    finally:
        c.close()


def expected_alerts(input_records, variant: str, late_lines: set | None = None) -> tuple[list[tuple], int]:
    """Reference alerts for the input as (user, ts, amount, z), and the number of records left out as late.

    per-event: each user's records in arrival order; the buffered variants: the records the job declared late
    removed (``late_lines``; by default those marked ``late``), each user's records by event time, ties in arrival
    order. Arrival order within a user is partition order: the producer keys records by user. (Which injected
    records are late depends on how the source interleaved the partitions before the watermark passed them:
    Flink's watermark is the minimum over partitions, so the job's own late output is taken as given.)
    """
    by_user: dict[str, list] = {}
    late = 0
    for seq, (_p, _o, line) in enumerate(sorted(input_records)):
        r = json.loads(line)
        if variant != "per-event" and (line in late_lines if late_lines is not None else r.get("late")):
            late += 1
            continue
        by_user.setdefault(r["user"], []).append((r["ts"], seq, r["amount"]))
    alerts = []
    for u, rows in by_user.items():
        if variant != "per-event":
            rows.sort()
        st: dict = {}
        zs = zscore.score_reference(st, [u] * len(rows), [x for _t, _s, x in rows])
        alerts.extend((u, t, x, z) for (t, _s, x), z in zip(rows, zs) if zscore.is_alert(z))
    return alerts, late


def check(bootstrap: str, topic: str, alerts_topic: str, variant: str, idle_s: float = 5.0) -> dict:
    """Compare the read_committed alerts (and late records) with the reference: exact, no duplicate, no loss."""
    inp = read_topic(bootstrap, topic, committed=False, idle_s=1.0)
    late_out = None
    if variant in ("keyed", "bucket", "sqlbatch"):
        late_out = [v for _p, _o, v in read_topic(bootstrap, f"{alerts_topic}-late", idle_s=2.0)]
    want, want_late = expected_alerts(inp, variant, set(late_out) if late_out is not None else None)
    got_raw = read_topic(bootstrap, alerts_topic, idle_s=idle_s, expect=len(want))
    got = [json.loads(v) for _p, _o, v in got_raw]
    keys = Counter((a["user"], a["ts"], a["amount"]) for a in got)
    dups = sum(c - 1 for c in keys.values() if c > 1)
    want_keys = {(u, t, x): z for u, t, x, z in want}
    missing = [k for k in want_keys if k not in keys]
    extra = [k for k in keys if k not in want_keys]
    z_err = max((abs(a["z"] - want_keys[(a["user"], a["ts"], a["amount"])]) for a in got
                 if (a["user"], a["ts"], a["amount"]) in want_keys), default=0.0)
    res = {"input": len(inp), "expected": len(want), "alerts": len(got), "duplicates": dups,
           "missing": len(missing), "unexpected": len(extra), "max_z_error": z_err}
    if late_out is not None:
        injected = sum(1 for _p, _o, v in inp if '"late":1' in v)
        res["late"] = len(late_out)
        res["late_injected"] = injected
        # every late output is an injected late record, once
        res["late_ok"] = len(set(late_out)) == len(late_out) and all(json.loads(v).get("late") for v in late_out)
    res["exact"] = dups == 0 and not missing and not extra and z_err < 1e-9 and res.get("late_ok", True)
    return res


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("cmd", choices=["produce", "expect", "check"])
    p.add_argument("--bootstrap", default="127.0.0.1:19092")
    p.add_argument("--topic", default="txns")
    p.add_argument("--alerts", default=None)
    p.add_argument("--variant", default="bucket")
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--keys", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--late", type=int, default=100)
    a = p.parse_args(argv)
    if a.cmd == "produce":
        print(ensure_topic(a.bootstrap, a.topic, a.n, a.keys, a.seed, a.late))
    elif a.cmd == "expect":
        want, late = expected_alerts(read_topic(a.bootstrap, a.topic, committed=False, idle_s=1.0), a.variant)
        print(json.dumps({"expected": len(want), "late": late}))
    else:
        print(json.dumps(check(a.bootstrap, a.topic, a.alerts or f"{a.topic}-alerts", a.variant)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
