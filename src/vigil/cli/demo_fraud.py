"""``vigil demo``: the card-fraud detector, live in the terminal, scored against the labels."""

from __future__ import annotations

import gc
import os
import time
from typing import Any

import numpy as np
from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn
from rich.table import Table

from vigil.cli.common import strict_json
from vigil.errors import ConfigError
from vigil.types import Alert


class LatencySink:
    """Collects the latency of every alert (the engine stamps it when the alert is raised)."""

    def __init__(self) -> None:
        self.latency_ms: list[float] = []
        self.count = 0

    def write_batch(self, items: list[Alert]) -> None:
        """Record the latencies."""
        self.count += len(items)
        self.latency_ms.extend(a.latency_ms for a in items if a.latency_ms is not None)

    def flush(self) -> None:
        """Nothing to make durable."""

    def close(self) -> None:
        """Nothing to release."""


CASHOUT_SHARE = 0.004
"""Share of the demo's events in test_then_cashout episodes (the generator leaves them out by default)."""


def run_demo(
    *,
    events: int,
    users: int,
    rate: float | None,
    seed: int,
    as_json: bool,
    live: bool,
    out_dir: str,
    show_alerts: int,
) -> dict[str, Any]:
    """Generate, run, evaluate; print the summary (and JSON as the last line when asked)."""
    from vigil.apps.fraud import fraud_pipeline
    from vigil.io.generators.transactions import TransactionSpec, generate_transactions, summary
    from vigil.io.replay import ReplaySource
    from vigil.io.sinks import ConsoleAlertSink, JsonlSink, SqliteAlertSink

    console = Console(stderr=as_json, highlight=False)
    t0 = time.perf_counter()
    with console.status(f"generating {events:,} card transactions for {users:,} users (seed {seed})…"):
        try:
            spec = TransactionSpec(events=events, users=users, seed=seed, test_then_cashout_share=CASHOUT_SHARE)
            cols = generate_transactions(spec)
        except ValueError as exc:  # too few card holders for the events
            raise ConfigError(str(exc), field="--users", value=users) from None
    info = summary(cols)
    # the generated columns live for the whole run: keep the garbage collector from walking their
    # million strings on every full collection (it shows up as latency spikes)
    gc.collect()
    gc.freeze()
    console.print(
        f"[bold]Vigil demo[/] · card-fraud detector · {info['events']:,} transactions, {info['users']:,} users, "
        f"{info.get('fraud_share', 0):.1%} fraud · generated in {time.perf_counter() - t0:.1f}s"
    )
    pace = f"paced at {rate:,.0f} events/s" if rate else "as fast as possible"
    console.print(f"replaying {pace}; rules (velocity) and statistics (1-minute z-score) side by side\n")

    src = ReplaySource(
        cols["user"], cols["ts_ms"], {"amount": cols["amount"]},
        {k: cols[k] for k in ("txn_id", "merchant", "category", "country", "label", "pattern")},
        rate=rate, name="transactions",
    )  # fmt: skip
    os.makedirs(os.path.join(out_dir, "fraud"), exist_ok=True)
    latency = LatencySink()
    sinks: list[Any] = [latency, JsonlSink(os.path.join(out_dir, "fraud", "alerts.jsonl")),
                        SqliteAlertSink(os.path.join(out_dir, "fraud", "alerts.sqlite"))]  # fmt: skip
    if live and show_alerts > 0:
        sinks.insert(0, ConsoleAlertSink(console=console, limit_per_s=show_alerts))
    managed = demo_alert_manager("fraud", os.path.join(out_dir, "fraud", "alerts.db"))
    sinks.append(managed)
    pipeline = fraud_pipeline(src).alerts_to(*sinks)
    st, tap = _run_live(pipeline, len(cols["ts_ms"]), console, live, latency, out_dir)
    out = _result(st, tap, latency, rate, seed)
    out["notifications"] = _notification_counts(managed)
    out["alerts_file"] = os.path.join(out_dir, "fraud", "alerts.jsonl")
    _print_summary(console, out, st)
    console.print(f"alerts written to {out['alerts_file']} (and alerts.sqlite beside it)")
    if as_json:
        print(strict_json(out), flush=True)
    return out


def _run_live(pipeline: Any, total: int, console: Console, live: bool, latency: LatencySink, out_dir: str,
              stop_at: int | None = None) -> tuple[Any, Any]:  # fmt: skip
    """Run with a progress bar and a stats line (alerts print above them); stop after ``stop_at`` events."""
    from vigil.apps.evaluate import LabelTap
    from vigil.engine.runner import EmbeddedRunner

    tap = LabelTap()
    progress = Progress(
        TextColumn("[bold blue]events"), BarColumn(), TaskProgressColumn(),
        TextColumn("{task.completed:>12,.0f} / {task.total:,.0f}"), TimeRemainingColumn(), console=console,
    )  # fmt: skip
    task = progress.add_task("events", total=total)

    def stats_table(st: Any) -> Table:
        t = Table.grid(padding=(0, 3))
        lat = np.percentile(latency.latency_ms, 99) if latency.latency_ms else float("nan")
        t.add_row(
            f"[b]{st.events_per_s:,.0f}[/] events/s", f"alerts [b]{st.alerts:,}[/]",
            f"late [b]{st.late_events:,}[/]", f"dead letters [b]{st.dead_letters:,}[/]",
            f"keys [b]{st.keys:,}[/]", f"p99 latency [b]{lat:.1f}[/] ms",
        )  # fmt: skip
        return t

    live_view = Live(Group(progress), console=console, refresh_per_second=8, transient=False) if live else None
    holder: dict[str, Any] = {}

    def on_progress(st: Any) -> None:
        progress.update(task, completed=st.events_in)
        if live_view is not None:
            live_view.update(Group(progress, stats_table(st)))
        if stop_at is not None and st.events_in >= stop_at:
            holder["runner"].stop()

    runner = EmbeddedRunner(pipeline, progress=on_progress, progress_interval_s=0.1, taps=(tap,), out_dir=out_dir)
    holder["runner"] = runner
    try:
        if live_view is not None:
            with live_view:
                st = runner.run()
        else:
            st = runner.run()
    except KeyboardInterrupt:
        runner.stop()
        raise
    return st, tap


#: the demo's alert policy: one group per card holder, a critical velocity alert inhibits the same card
#: holder's amount warnings, and grouping runs on the stream's event time (a replay passes hours in seconds)
DEMO_POLICY: dict[str, Any] = {
    "clock": "event",
    "resolve_after": "10m",
    "route": {"group_by": ["key"], "group_wait": "30s", "group_interval": "5m", "repeat_interval": "4h"},
    "inhibit_rules": [{"source_matchers": ["severity=critical"], "target_matchers": ["severity=warning"],
                       "equal": ["key"]}],
}


def demo_alert_manager(pipeline: str, store_path: str) -> Any:
    """The alert manager behind the demo: raw anomalies in, grouped notifications out (recorded in the store)."""
    from vigil.alerting.runtime import ManagedAlerts

    if os.path.exists(store_path):  # each demo run starts a fresh alert history
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(store_path + suffix):
                os.remove(store_path + suffix)
    state = os.path.splitext(store_path)[0] + ".state.json"
    if os.path.exists(state):
        os.remove(state)
    return ManagedAlerts(DEMO_POLICY, pipeline=pipeline, store_path=store_path)


def _notification_counts(managed: Any) -> dict[str, int]:
    managed.close()  # the run is over: drain the groups still waiting, then count
    c, by = managed.counters, managed.sent_by_reason
    paging = sum(v for k, v in by.items() if k in ("new", "update", "repeat", "revised"))
    return {"raw_anomalies": c["raw_alerts_in"], "alerts": c["logical_alerts"],
            "notifications": c["notifications_out"], "paging_notifications": paging,
            "resolution_notifications": by.get("resolved", 0) + by.get("retracted", 0),
            "inhibited": c["suppressed_inhibited"], "deduplicated": c["suppressed_dedup"]}  # fmt: skip


def _result(st: Any, tap: Any, latency: LatencySink, rate: float | None, seed: int) -> dict[str, Any]:
    from vigil.apps.evaluate import score_run

    result = score_run(tap.columns())
    lat = np.asarray(latency.latency_ms) if latency.latency_ms else np.array([np.nan])
    return {
        "events": st.events_in,
        "alerts": st.alerts,
        "precision": result["precision"],
        "recall": result["recall"],
        "by_pattern": result["by_pattern"],
        "latency_ms": {p: round(float(np.percentile(lat, q)), 3) for p, q in (("p50", 50), ("p95", 95), ("p99", 99))},
        "events_per_s": round(st.events_per_s, 1),
        "late_events": st.late_events,
        "dead_letters": st.dead_letters,
        "flagged_events": result["flagged_events"],
        "fraud_events": result["fraud_events"],
        "rate": rate,
        "seed": seed,
    }


def run_kafka_demo(
    *, bootstrap: str, events: int, users: int, rate: float | None, seed: int, as_json: bool, live: bool,
    out_dir: str, show_alerts: int,
) -> dict[str, Any]:  # fmt: skip
    """The same demo through a Kafka broker: producer process → topic → pipeline → alerts topic."""
    import subprocess
    import sys
    import time

    from confluent_kafka.admin import AdminClient, NewTopic

    from vigil.apps.fraud import fraud_pipeline
    from vigil.errors import SourceError
    from vigil.io.kafka_sink import KafkaAlertSink
    from vigil.io.kafka_source import KafkaSource
    from vigil.io.schema import Schema
    from vigil.io.sinks import ConsoleAlertSink

    console = Console(stderr=as_json, highlight=False)
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    try:
        admin.list_topics(timeout=5)
    except Exception:  # noqa: BLE001 - any failure means: no broker there
        raise SourceError(f"no Kafka broker answers at {bootstrap}; start the local one with `make kafka-up`") from None
    run = time.strftime("%Y%m%d-%H%M%S")
    tx_topic, alert_topic = f"vigil-demo.transactions.{run}", f"vigil-demo.alerts.{run}"
    for fut in admin.create_topics([NewTopic(t, num_partitions=3, replication_factor=1)
                                    for t in (tx_topic, alert_topic)]).values():  # fmt: skip
        fut.result(30)
    pace = f"at {rate:,.0f} events/s" if rate else "as fast as it can"
    console.print(f"[bold]Vigil demo through Kafka[/] · {bootstrap} · a producer process writes {events:,} "
                  f"transactions to [cyan]{tx_topic}[/] {pace}; alerts go to [cyan]{alert_topic}[/]\n")  # fmt: skip
    producer = subprocess.Popen(
        [sys.executable, "-m", "vigil.cli.main", "generate", "transactions", "--to",
         f"kafka://{bootstrap}/{tx_topic}", "--rate", str(rate or 0), "--events", str(events), "--users",
         str(users), "--seed", str(seed)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    schema = Schema("user", "ts", fields=("amount",), extra=("txn_id", "label", "pattern"))
    src = KafkaSource(bootstrap, tx_topic, schema, group_id=f"vigil-demo-{run}")
    latency = LatencySink()
    kafka_alerts = KafkaAlertSink(bootstrap, alert_topic)
    sinks: list[Any] = [latency, kafka_alerts]
    if live and show_alerts > 0:
        sinks.insert(0, ConsoleAlertSink(console=console, limit_per_s=show_alerts))
    pipeline = fraud_pipeline(src, name="fraud-kafka").alerts_to(*sinks)
    try:
        st, tap = _run_live(pipeline, events, console, live, latency, out_dir, stop_at=events)
    finally:
        if producer.poll() is None:
            producer.terminate()
        producer.wait()
    out = _result(st, tap, latency, rate, seed)
    out.update({"kafka": bootstrap, "transactions_topic": tx_topic, "alerts_topic": alert_topic})
    _print_summary(console, out, st)
    console.print(f"alerts are in the topic {alert_topic} (keyed by user); latency is from the producer's record "
                  "timestamp to the alert")  # fmt: skip
    if as_json:
        print(strict_json(out), flush=True)
    return out


def _print_summary(console: Console, out: dict[str, Any], st: Any) -> None:
    t = Table(title="Summary", show_header=False, title_justify="left")
    t.add_row("events", f"{out['events']:,} in {st.elapsed_s:.1f}s ({out['events_per_s']:,.0f}/s)")
    t.add_row("alerts", f"{out['alerts']:,} (amount_z {st.fired.get('amount_z', 0):,}, velocity "
                        f"{st.fired.get('velocity', 0):,}) · flagged events {out['flagged_events']:,}")  # fmt: skip
    t.add_row("precision / recall", f"[b]{out['precision']}[/] / [b]{out['recall']}[/]")
    lat = out["latency_ms"]
    t.add_row("latency event→alert", f"p50 {lat['p50']} ms · p95 {lat['p95']} ms · p99 {lat['p99']} ms")
    t.add_row("late / dead letters", f"{out['late_events']:,} / {out['dead_letters']:,}")
    n = out.get("notifications")
    if n:
        t.add_row("raw anomalies → notifications",
                  f"[b]{n['raw_anomalies']:,}[/] raw → {n['alerts']:,} alerts (one per card holder and detector) → "
                  f"[b]{n['paging_notifications']:,}[/] firing notifications, grouped per card holder "
                  f"(+ {n['resolution_notifications']:,} resolved; {n['inhibited']:,} warnings inhibited by a "
                  "critical alert on the same card)")  # fmt: skip
    console.print(t)
    pt = Table(title="By pattern", title_justify="left")
    for col in ("pattern", "kind", "events", "flagged", "recall / flagged share"):
        pt.add_column(col, justify="right" if col not in ("pattern", "kind") else "left")
    for name, e in out["by_pattern"].items():
        share = e.get("recall", e.get("flagged_share"))
        pt.add_row(name, "fraud" if e["fraud"] else "legitimate", f"{e['events']:,}", f"{e['flagged']:,}",
                   f"{share:.3f}" if share is not None else "-")  # fmt: skip
    console.print(pt)
