"""``vigil alertmanager --from kafka://HOST:PORT/TOPIC``: the alert manager as a process of its own, beside a job."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from vigil.cli.common import err, fail
from vigil.errors import ConfigError, VigilError


def alertmanager(
    from_: Annotated[str, typer.Option("--from", help="The alerts topic: kafka://HOST:PORT/TOPIC.")],
    policy: Annotated[Path | None, typer.Option(
        help="The alert policy: a YAML file (the policy itself, or a pipeline file's `alerting:` section). "
             "Default: one group per detector and key, recorded in the store.")] = None,  # fmt: skip
    store: Annotated[Path, typer.Option(help="The alert store (SQLite), shared with `vigil alerts` and the console.")
                     ] = Path("vigil-out/alertmanager/alerts.db"),
    name: Annotated[str, typer.Option(help="The pipeline name in alerts' labels.")] = "pipeline",
    group_id: Annotated[str, typer.Option(help="Consumer group (where a restart resumes).")] = "vigil-alertmanager",
    watermark_delay: Annotated[float, typer.Option(
        help="Seconds the event-time watermark trails the newest alert (alerts resolve in event time).")] = 60.0,
    metrics_port: Annotated[int | None, typer.Option(show_default=False, help=(
        "Serve Prometheus metrics (alerts per state, alerts read) on this port; 0: any free port."))] = None,
    metrics_host: Annotated[str, typer.Option(help="Address of the metrics endpoint.")] = "127.0.0.1",
    console_port: Annotated[int | None, typer.Option(show_default=False, help=(
        "Serve the web console over the store on this port (token-protected, 127.0.0.1)."))] = None,
) -> None:
    """The alert manager beside a pipeline whose alerts go to Kafka — as Alertmanager runs beside Prometheus.

    Reads the alerts topic `read_committed` and runs grouping, inhibition, silences, notifiers (from the
    policy's receivers) and the alert store, so a Flink job needs no SQLite. Ctrl-C or SIGTERM stops cleanly
    (flushed, offsets committed).

    Examples: `vigil alertmanager --from kafka://127.0.0.1:9092/alerts` ·
    `vigil alertmanager --from kafka://kafka:29092/alerts --policy pipelines/fraud-flink.yaml --metrics-port 9464`
    """
    import signal

    from vigil.alerting.feed import AlertFeed
    from vigil.alerting.runtime import ManagedAlerts
    from vigil.yamlfile import read_yaml

    try:
        raw = read_yaml(policy, "--policy") if policy is not None else {"route": {"group_by": ["alertname", "key"]}}
        if isinstance(raw, dict) and "alerting" in raw:
            raw = raw["alerting"] or {}
        if not isinstance(raw, dict):
            raise ConfigError("must be a mapping (the alert policy)", field="--policy", value=str(policy))
        managed = ManagedAlerts(raw, pipeline=name, store_path=store)
        feed = AlertFeed(from_, managed, group_id=group_id, watermark_delay_ms=int(watermark_delay * 1000))
    except VigilError as exc:
        fail(exc)
    cleanups: list[Callable[[], object]] = []
    if metrics_port is not None:
        from prometheus_client import CollectorRegistry, Gauge

        from vigil.ops.metrics import serve

        registry = CollectorRegistry()
        states = Gauge("vigil_alerts", "Alerts per state (from the alert manager).", ["state"], registry=registry)
        read = Gauge("vigil_alertmanager_alerts_read", "Alerts read from the topic.", registry=registry)

        def publish(by_state: dict[str, int]) -> None:
            for state, n in by_state.items():
                states.labels(state).set(n)

        managed.state_listeners.append(publish)
        read.set_function(lambda: feed.counts["alerts"])
        try:
            server, port = serve(registry, metrics_host, metrics_port)
        except ConfigError as exc:
            fail(exc)
        err.print(f"metrics: http://{metrics_host}:{port}/metrics")
        cleanups += [server.shutdown, server.server_close]
    if console_port is not None:
        from vigil.alerting.store import AlertStore
        from vigil.console.launch import start_console

        store.parent.mkdir(parents=True, exist_ok=True)
        db = AlertStore(str(store))
        handle, _ = start_console(store=db, manager=managed, pipeline_name=name, port=console_port, console=err)
        cleanups += [handle.stop, db.close]
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, lambda *_: feed.stop())
    err.print(f"alert manager: reading {from_} (read_committed), store {store}")
    try:
        feed.run()
    finally:
        managed.close()
        for c in cleanups:  # in order: each server stops before its resources close
            c()
    err.print(f"stopped: {feed.counts['alerts']:,} alerts read, {feed.counts['unreadable']:,} unreadable")


def register(root: typer.Typer) -> None:
    """``vigil alertmanager``."""
    root.command("alertmanager")(alertmanager)
