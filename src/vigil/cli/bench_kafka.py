"""``vigil bench kafka``: the fraud pipeline between real Kafka topics — throughput, latency, recovery.

What is measured, on the shared workload (``workload.py``: 1M card events over 10k users), against the broker
at ``--bootstrap`` (``make kafka-up``):

* ``consume_eps`` / ``consume_eps_alo``: the workload is produced as JSON into a fresh 4-partition topic first;
  then the shipped fraud pipeline (``pipelines/fraud-kafka.yaml``, its source, checkpoints and alerts pointed
  at fresh topics) runs over it in a process of its own, exactly-once and then at-least-once, until the end of
  every partition. Events per second of the run (process start-up excluded, final checkpoint included).
* ``latency_ms``: ``{"alo": {"p50", "p99"}, "eo": {"p50", "p99"}}`` from an event's creation (the producer's
  ``produce`` call) to its alert being readable by a consumer (``read_committed`` for exactly-once), with
  events produced at a paced ``--rate`` (50,000/s) while the pipeline runs.
* ``recovery_s``: with events flowing at the paced rate, the worker is SIGKILLed and started again at once
  (as a supervisor would): seconds from the kill until the new worker has committed everything that had been
  written when the old one died. ``recovery_duplicates`` counts alert ids seen twice ``read_committed``
  (exactly-once: 0).

Each figure comes from one run on this machine (the broker, the producer and the pipeline share its cores).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from vigil.errors import VigilError

PARTITIONS = 4
DEADLINE_S = 120.0


# --- the workload in Kafka -----------------------------------------------------------------------------------

def _values(ev: dict[str, Any]) -> tuple[list[bytes], list[bytes]]:
    """The workload's events as the fraud pipeline's JSON (``user``, ``ts``, ``amount``, ``txn_id``)."""
    import orjson

    keys = [f"u{k}".encode() for k in ev["key"].tolist()]
    vals = [
        orjson.dumps({"user": f"u{k}", "ts": t, "amount": a, "txn_id": f"t{i}"})
        for i, (k, t, a) in enumerate(zip(ev["key"].tolist(), ev["ts"].tolist(), ev["amount"].tolist(), strict=True))
    ]
    return keys, vals


class Broker:
    """The bench's topics on one broker (made fresh, deleted at the end)."""

    def __init__(self, bootstrap: str) -> None:
        from confluent_kafka.admin import AdminClient

        self.bootstrap = bootstrap
        self.admin = AdminClient({"bootstrap.servers": bootstrap})
        self.run = uuid.uuid4().hex[:8]
        self.topics: list[str] = []
        try:
            self.admin.list_topics(timeout=5)
        except Exception as exc:  # noqa: BLE001 - KafkaException: the broker doesn't answer
            raise VigilError(f"no Kafka broker answers at {bootstrap} ({exc}); start the local one with "
                             "`make kafka-up`, or pass --bootstrap HOST:PORT") from None  # fmt: skip

    def topic(self, name: str, partitions: int = PARTITIONS) -> str:
        """A fresh topic ``vigil-bench.<run>.<name>``, once every partition has a leader."""
        from confluent_kafka.admin import NewTopic

        full = f"vigil-bench.{self.run}.{name}"
        fut = self.admin.create_topics([NewTopic(full, num_partitions=partitions, replication_factor=1)])
        fut[full].result(timeout=60)
        self.topics.append(full)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            md = self.admin.list_topics(topic=full, timeout=5).topics.get(full)
            if md is not None and md.error is None and len(md.partitions) == partitions and all(
                p.leader >= 0 for p in md.partitions.values()
            ):
                return full
            time.sleep(0.1)
        raise VigilError(f"topic {full}: partitions have no leader after 30 s")

    def end_offsets(self, topic: str) -> dict[int, int]:
        """Each partition's end offset (what has been written)."""
        from confluent_kafka import Consumer, TopicPartition

        c = Consumer({"bootstrap.servers": self.bootstrap, "group.id": f"vigil-bench-probe-{self.run}"})
        try:
            return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(PARTITIONS)}
        finally:
            c.close()

    def committed(self, topic: str, group: str) -> dict[int, int]:
        """The offsets ``group`` has committed on ``topic`` (0 where none)."""
        from confluent_kafka import Consumer, TopicPartition

        c = Consumer({"bootstrap.servers": self.bootstrap, "group.id": group, "enable.auto.commit": False,
                      "isolation.level": "read_committed"})  # fmt: skip
        try:
            got = c.committed([TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=10)
            return {tp.partition: max(tp.offset, 0) for tp in got}
        finally:
            c.close()

    def close(self) -> None:
        """Delete the bench's topics."""
        if self.topics:
            for fut in self.admin.delete_topics(self.topics, operation_timeout=10).values():
                try:
                    fut.result(timeout=15)
                except Exception:  # noqa: BLE001 - best effort: the broker's data dir is a scratch area
                    pass


def produce_all(bootstrap: str, topic: str, keys: list[bytes], vals: list[bytes]) -> float:
    """Produce every event as fast as the broker takes them; returns events/s."""
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "batch.size": 1_000_000,
                  "queue.buffering.max.messages": 1_000_000, "enable.idempotence": True})  # fmt: skip
    t0 = time.perf_counter()
    for k, v in zip(keys, vals, strict=True):
        while True:
            try:
                p.produce(topic, v, key=k)
                break
            except BufferError:
                p.poll(0.05)
    if p.flush(120) != 0:
        raise VigilError(f"producing the workload into {topic}: messages undelivered after 120 s")
    return len(vals) / (time.perf_counter() - t0)


class PacedProducer(threading.Thread):
    """Produce events ``first..`` at ``rate`` per second, noting each one's creation time (``sent_ns``)."""

    def __init__(self, bootstrap: str, topic: str, keys: list[bytes], vals: list[bytes], *, rate: float,
                 first: int, last: int) -> None:  # fmt: skip
        super().__init__(daemon=True)
        from confluent_kafka import Producer

        self.p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 1, "enable.idempotence": True})
        self.topic, self.keys, self.vals, self.rate = topic, keys, vals, rate
        self.first, self.last = first, min(last, len(vals))
        self.sent_ns = np.zeros(len(vals), dtype=np.int64)
        self.next = first
        self.halt = threading.Event()

    def run(self) -> None:
        """Produce at the paced rate until ``last`` (or ``halt``), then flush."""
        t0 = time.perf_counter_ns()
        wall0 = time.time_ns() - t0
        i = self.first
        while i < self.last and not self.halt.is_set():
            now = time.perf_counter_ns()
            due = min(self.last, self.first + int((now - t0) * self.rate / 1e9))
            stamp = wall0 + now
            for j in range(i, due):
                self.sent_ns[j] = stamp
                try:
                    self.p.produce(self.topic, self.vals[j], key=self.keys[j])
                except BufferError:
                    self.p.poll(0.01)
                    self.p.produce(self.topic, self.vals[j], key=self.keys[j])
            self.p.poll(0)
            i = self.next = due
            time.sleep(0.0005)
        self.p.flush(60)


class AlertReader(threading.Thread):
    """Reads an alerts topic (``read_committed`` or not), noting when each alert became readable."""

    def __init__(self, bootstrap: str, topic: str, *, committed: bool) -> None:
        super().__init__(daemon=True)
        from confluent_kafka import Consumer

        self.c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"vigil-bench-reader-{uuid.uuid4().hex[:8]}",
                           "auto.offset.reset": "earliest", "enable.auto.commit": False,
                           "isolation.level": "read_committed" if committed else "read_uncommitted",
                           "fetch.wait.max.ms": 5})  # fmt: skip
        self.c.subscribe([topic])
        self.seen: list[tuple[str, str, int]] = []  # (alert id, event id, readable at ns)
        self.halt = threading.Event()

    def run(self) -> None:
        """Read until ``halt``."""
        import orjson

        try:
            while not self.halt.is_set():
                msgs = self.c.consume(10_000, 0.05)
                now = time.time_ns()
                for m in msgs:
                    if m.error() is None:
                        a = orjson.loads(m.value() or b"{}")
                        self.seen.append((str(a.get("id")), str(a.get("event_id")), now))
        finally:
            self.c.close()


# --- the pipeline, in a process of its own ---------------------------------------------------------------------

def bench_pipeline(template: Path, *, bootstrap: str, source: str, alerts: str, group: str, delivery: str,
                   state_dir: Path, checkpoint_interval: str) -> dict[str, Any]:  # fmt: skip
    """The shipped fraud pipeline with its source, delivery, checkpoints and alerts pointed at the bench's."""
    try:
        spec = yaml.safe_load(template.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise VigilError(f"can't read the fraud pipeline {template} ({exc}); pass --pipeline "
                         "(pipelines/fraud-kafka.yaml in a checkout of Vigil)") from None  # fmt: skip
    spec["name"] = "fraud-bench"
    spec["source"] = {**spec["source"], "url": f"kafka://{bootstrap}/{source}", "group_id": group,
                      "dead_letter_topic": f"{source}-dead-letters"}  # fmt: skip
    spec["delivery"] = delivery
    spec["checkpoints"] = {"dir": str(state_dir), "interval": checkpoint_interval}
    spec["alerts"] = [{"kind": "kafka", "url": f"kafka://{bootstrap}/{alerts}"}]
    return spec


READY = "vigil-bench-worker-ready"


class WorkerProcess:
    """``python -m vigil.cli.bench_kafka PIPELINE``: one pipeline run, its figures on stdout's last line."""

    def __init__(self, spec: dict[str, Any], folder: Path, *, until_end: bool) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "pipeline.yaml"
        path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
        cmd = [sys.executable, "-m", "vigil.cli.bench_kafka", str(path), "--out", str(folder / "out")]
        self.proc = subprocess.Popen(cmd + (["--until-end"] if until_end else []), stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)  # fmt: skip

    def result(self, timeout: float = DEADLINE_S) -> dict[str, Any]:
        """Wait for the run to end; its figures."""
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
            raise VigilError(f"the pipeline did not finish within {timeout:.0f} s:\n{err[-2000:]}") from None
        if self.proc.returncode != 0 or not out.strip():
            raise VigilError(f"the pipeline failed (exit {self.proc.returncode}):\n{err[-2000:]}")
        return dict(json.loads(out.strip().splitlines()[-1]))

    def stop(self) -> dict[str, Any]:
        """SIGTERM (a clean stop: final checkpoint); its figures.

        Sent once the worker says it is ``ready`` (its handler installed): a worker restarted into a stream it
        has already caught up with is stopped at once, and a SIGTERM during its imports would kill it instead.
        """
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            if line.strip() == READY:
                break
        self.proc.send_signal(signal.SIGTERM)
        return self.result()

    def kill(self) -> None:
        """SIGKILL: no final checkpoint, no flush."""
        self.proc.kill()
        self.proc.wait()


def _wait(cond: Callable[[], bool], what: str, timeout: float = DEADLINE_S, every: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise VigilError(f"{what}: not after {timeout:.0f} s")
        time.sleep(every)


def _caught_up(broker: Broker, topic: str, group: str, ends: dict[int, int]) -> Callable[[], bool]:
    return lambda: all(broker.committed(topic, group).get(p, 0) >= e for p, e in ends.items())


# --- the three measurements ------------------------------------------------------------------------------------

def measure_throughput(broker: Broker, template: Path, tmp: Path, topic: str, delivery: str, interval: str,
                       n: int) -> dict[str, Any]:  # fmt: skip
    """The pipeline over the whole pre-filled topic until the end of every partition."""
    tag = "eo" if delivery == "exactly-once" else "alo"
    spec = bench_pipeline(template, bootstrap=broker.bootstrap, source=topic, alerts=broker.topic(f"alerts-{tag}"),
                          group=f"vigil-bench-{broker.run}-{tag}", delivery=delivery, state_dir=tmp / f"state-{tag}",
                          checkpoint_interval=interval)  # fmt: skip
    res = WorkerProcess(spec, tmp / f"run-{tag}", until_end=True).result()
    if res["events_in"] + res["dead_letters"] != n:
        raise VigilError(f"{delivery} run read {res['events_in']:,} events of {n:,}")
    return res


def measure_latency(broker: Broker, template: Path, tmp: Path, keys: list[bytes], vals: list[bytes], *,
                    delivery: str, interval: str, rate: float, seconds: float,
                    say: Callable[[str], None]) -> dict[str, Any]:  # fmt: skip
    """Creation → alert readable, at a paced rate, while the pipeline runs."""
    tag = "eo" if delivery == "exactly-once" else "alo"
    topic, alerts = broker.topic(f"paced-{tag}"), broker.topic(f"paced-alerts-{tag}")
    group = f"vigil-bench-{broker.run}-paced-{tag}"
    spec = bench_pipeline(template, bootstrap=broker.bootstrap, source=topic, alerts=alerts, group=group,
                          delivery=delivery, state_dir=tmp / f"state-paced-{tag}", checkpoint_interval=interval)
    warm = 5_000
    worker = WorkerProcess(spec, tmp / f"paced-{tag}", until_end=False)
    reader = AlertReader(broker.bootstrap, alerts, committed=delivery == "exactly-once")
    reader.start()
    try:
        produce_all(broker.bootstrap, topic, keys[:warm], vals[:warm])  # the worker is up and has caught up
        _wait(_caught_up(broker, topic, group, broker.end_offsets(topic)), "the pipeline reading the warm-up events")
        last = warm + int(rate * seconds)
        say(f"latency ({tag}): {last - warm:,} events at {rate:,.0f}/s…")
        prod = PacedProducer(broker.bootstrap, topic, keys, vals, rate=rate, first=warm, last=last)
        t0 = time.perf_counter()
        prod.start()
        prod.join()
        achieved = (last - warm) / (time.perf_counter() - t0)
        _wait(_caught_up(broker, topic, group, broker.end_offsets(topic)), "the pipeline catching up")
        time.sleep(0.5)  # the last alerts' fetch
    finally:
        reader.halt.set()
        reader.join(10)
        stats = worker.stop()
    lat = [(at - prod.sent_ns[int(ev[1:])]) / 1e6 for _, ev, at in reader.seen
           if ev.startswith("t") and warm <= int(ev[1:]) < last]  # fmt: skip
    if not lat:
        raise VigilError(f"latency ({tag}): no alerts on the paced events")
    arr = np.asarray(lat)
    return {"p50": round(float(np.percentile(arr, 50)), 1), "p99": round(float(np.percentile(arr, 99)), 1),
            "alerts": len(lat), "achieved_rate": round(achieved), "events_in": stats["events_in"]}  # fmt: skip


def measure_recovery(broker: Broker, template: Path, tmp: Path, keys: list[bytes], vals: list[bytes], *,
                     interval: str, rate: float, say: Callable[[str], None]) -> dict[str, Any]:  # fmt: skip
    """SIGKILL the exactly-once worker mid-stream, start it again at once: seconds until it has caught up."""
    topic, alerts = broker.topic("recovery"), broker.topic("recovery-alerts")
    group = f"vigil-bench-{broker.run}-recovery"
    spec = bench_pipeline(template, bootstrap=broker.bootstrap, source=topic, alerts=alerts, group=group,
                          delivery="exactly-once", state_dir=tmp / "state-recovery", checkpoint_interval=interval)
    prod = PacedProducer(broker.bootstrap, topic, keys, vals, rate=rate, first=0, last=len(vals))
    worker = WorkerProcess(spec, tmp / "recovery", until_end=False)
    prod.start()
    try:
        # running steadily: it has committed a few seconds of the stream
        _wait(lambda: sum(broker.committed(topic, group).values()) >= 3 * rate, "the first checkpoints", every=0.1)
        worker.kill()
        killed = time.perf_counter()
        ends = broker.end_offsets(topic)
        say(f"recovery: SIGKILLed at {sum(ends.values()):,} events written; restarting…")
        worker = WorkerProcess(spec, tmp / "recovery", until_end=False)
        _wait(_caught_up(broker, topic, group, ends), "the restarted pipeline catching up", every=0.02)
        recovery_s = time.perf_counter() - killed
    finally:
        prod.halt.set()
        prod.join(30)
        stats = worker.stop()
    reader = AlertReader(broker.bootstrap, alerts, committed=True)
    reader.start()
    _wait(lambda: len(reader.seen) > 0, "reading the recovered alerts", timeout=30)
    time.sleep(1.0)
    reader.halt.set()
    reader.join(10)
    ids = [a for a, _, _ in reader.seen]
    return {"recovery_s": round(recovery_s, 2), "recovery_duplicates": len(ids) - len(set(ids)),
            "recovery_alerts": len(ids), "recovery_events": stats["events_in"]}  # fmt: skip


def run_kafka_bench(*, bootstrap: str, shared: Path | None, pipeline: Path, n: int, keys: int, rate: float,
                    latency_s: float, checkpoint_interval: str, as_json: bool,
                    out: Path) -> dict[str, Any]:  # fmt: skip
    """All of the module docstring's figures; printed, and saved to ``out``."""
    from rich.console import Console

    from vigil.cli.bench_engine import _import_shared, find_shared

    console = Console(stderr=True, highlight=False)
    _import_shared(find_shared(shared, "bench", "perf"))
    from workload import generate  # type: ignore[import-not-found]

    broker = Broker(bootstrap)
    try:
        with tempfile.TemporaryDirectory(prefix="vigil-bench-kafka-") as d:
            tmp = Path(d)
            with console.status(f"workload: {n:,} events, {keys:,} keys → JSON…"):
                kk, vv = _values(generate(n, keys))
            topic = broker.topic("events")
            with console.status(f"producing {n:,} events into a {PARTITIONS}-partition topic…"):
                produce_eps = produce_all(bootstrap, topic, kk, vv)
            console.print(f"produced {n:,} events at {produce_eps:,.0f}/s")
            runs = {}
            for delivery in ("exactly-once", "at-least-once"):
                with console.status(f"the fraud pipeline, {delivery}, over the {n:,} events (own process)…"):
                    runs[delivery] = measure_throughput(broker, pipeline, tmp, topic, delivery, checkpoint_interval, n)
                r = runs[delivery]
                console.print(f"{delivery}: {r['events_per_s']:,.0f} events/s ({r['alerts']:,} alerts, "
                              f"{r['checkpoints']} checkpoints)")  # fmt: skip
            latency = {}
            for tag, delivery in (("alo", "at-least-once"), ("eo", "exactly-once")):
                latency[tag] = measure_latency(broker, pipeline, tmp, kk, vv, delivery=delivery,
                                               interval=checkpoint_interval, rate=rate, seconds=latency_s,
                                               say=console.print)  # fmt: skip
                console.print(f"latency ({tag}): p50 {latency[tag]['p50']} ms, p99 {latency[tag]['p99']} ms "
                              f"over {latency[tag]['alerts']:,} alerts")  # fmt: skip
            recovery = measure_recovery(broker, pipeline, tmp, kk, vv, interval=checkpoint_interval, rate=rate,
                                        say=console.print)  # fmt: skip
            console.print(f"recovery: {recovery['recovery_s']} s after SIGKILL, "
                          f"{recovery['recovery_duplicates']} duplicate alerts")  # fmt: skip
    finally:
        broker.close()
    eo, alo = runs["exactly-once"], runs["at-least-once"]
    result = {
        "runtime": "embedded",
        "events": n,
        "keys": keys,
        "partitions": PARTITIONS,
        "consume_eps": round(eo["events_per_s"]),
        "consume_eps_alo": round(alo["events_per_s"]),
        "latency_ms": {k: {"p50": v["p50"], "p99": v["p99"]} for k, v in latency.items()},
        "recovery_s": recovery["recovery_s"],
        "recovery_duplicates": recovery["recovery_duplicates"],
        "produce_eps": round(produce_eps),
        "paced_rate": rate,
        "latency_alerts": {k: v["alerts"] for k, v in latency.items()},
        "latency_achieved_rate": {k: v["achieved_rate"] for k, v in latency.items()},
        "alerts": {"eo": eo["alerts"], "alo": alo["alerts"]},
        "checkpoint_interval": checkpoint_interval,
        "pipeline": str(pipeline),
        "python": sys.version.split()[0],
        "cpu_count": os.cpu_count(),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    if as_json:
        print(json.dumps(result), flush=True)
    return result


def _worker_main() -> None:  # pragma: no cover - run as a subprocess
    """One pipeline run (SIGTERM stops it cleanly); its figures as JSON on stdout."""
    import argparse
    import logging

    from vigil.worker import Worker, settle_gc

    ap = argparse.ArgumentParser(description="The pipeline side of `vigil bench kafka` (internal)")
    ap.add_argument("pipeline", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--until-end", action="store_true")
    a = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    worker = Worker.from_file(a.pipeline, out_dir=a.out, overrides={"stop_at_end": True} if a.until_end else None)
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, lambda *_: worker.stop())
    print(READY, file=sys.stderr, flush=True)  # SIGTERM now stops it cleanly (WorkerProcess.stop waits for this)
    settle_gc()  # as `vigil run` does
    st = worker.run()
    print(json.dumps({"events_in": st.events_in, "events_per_s": st.events_per_s, "elapsed_s": st.elapsed_s,
                      "alerts": st.alerts, "checkpoints": st.checkpoints, "dead_letters": st.dead_letters}),
          flush=True)  # fmt: skip


if __name__ == "__main__":  # pragma: no cover
    _worker_main()
