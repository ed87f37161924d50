"""The ``vigil`` command."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from vigil.cli.alerts import alerts_app, silence_app
from vigil.errors import ConfigError, VigilError

app = typer.Typer(
    name="vigil",
    help=(
        "Vigil finds anomalies in event streams in real time.\n\n"
        "Start with `vigil demo` (the card-fraud detector, live), then write a pipeline YAML "
        "(see pipelines/fraud.yaml) and `vigil run` it."
    ),
    no_args_is_help=True,
    rich_markup_mode="markdown",
    pretty_exceptions_enable=False,
)
generate_app = typer.Typer(help="Write synthetic streams with labelled anomalies.", no_args_is_help=True)
bench_app = typer.Typer(help="Measure speed (results are figures, never pass/fail).", no_args_is_help=True)
checkpoint_app = typer.Typer(help="Look into checkpoints.", no_args_is_help=True)
collect_app = typer.Typer(help="Collect metrics from this machine.", no_args_is_help=True)
models_app = typer.Typer(help="The model registry: versions, promotion, rollback.", no_args_is_help=True)
app.add_typer(models_app, name="models")
app.add_typer(collect_app, name="collect")
app.add_typer(generate_app, name="generate")
app.add_typer(checkpoint_app, name="checkpoint")
app.add_typer(bench_app, name="bench")
app.add_typer(alerts_app, name="alerts")
app.add_typer(silence_app, name="silence")

err = Console(stderr=True, highlight=False, soft_wrap=True)


@app.callback()
def _root() -> None:
    """Vigil finds anomalies in event streams in real time."""
    _dump_stacks_on_sigusr1()


def _fail(exc: Exception, code: int = 2) -> None:
    err.print(f"[bold red]error:[/] {exc}")
    raise typer.Exit(code)


demo_app = typer.Typer(help=(
    "The card-fraud detector on a synthetic stream, scored against its labels (`vigil demo`); "
    "`vigil demo servers` runs the multi-metric server detector on a simulated fleet.\n\n"
    "Generates a labelled stream (amount spikes, card testing, velocity bursts, and legitimate "
    "behaviour that looks odd), replays it at `--rate` events/s through the embedded engine, prints "
    "alerts as they fire, then a summary: precision and recall (overall and per pattern), latency from "
    "event emission to alert (p50/p95/p99) and throughput.\n\n"
    "Examples: `vigil demo` · `vigil demo --rate 0 --json` · `vigil demo --events 200000 --no-live` · "
    "`make kafka-up && vigil demo --kafka` · `vigil demo servers --json`"
), rich_markup_mode="markdown")
app.add_typer(demo_app, name="demo")


@demo_app.callback(invoke_without_command=True)
def demo(
    ctx: typer.Context,
    events: Annotated[int, typer.Option(help="How many transactions to generate.")] = 1_000_000,
    users: Annotated[int, typer.Option(help="How many card holders.")] = 20_000,
    rate: Annotated[float, typer.Option(help="Replay pace in events/s of wall clock; 0 = as fast as possible.")] = (
        50_000
    ),
    seed: Annotated[int, typer.Option(help="Seed of the generator (same seed, same stream, same result).")] = 7,
    json_: Annotated[bool, typer.Option("--json", help="Print the summary as JSON on the last line.")] = False,
    live: Annotated[bool, typer.Option(help="Show the live progress display and alerts as they fire.")] = True,
    show_alerts: Annotated[int, typer.Option(help="Alerts printed per second at most (0: none).")] = 4,
    out: Annotated[Path, typer.Option(help="Folder for alerts, late events and dead letters.")] = Path("vigil-out"),
    kafka: Annotated[bool, typer.Option(
        "--kafka", help="Go through a Kafka broker: a producer process writes the stream to a topic, the "
        "pipeline consumes it and writes alerts to another topic (start one with `make kafka-up`).")] = False,
    bootstrap: Annotated[str, typer.Option(help="With --kafka: the broker.")] = "127.0.0.1:9092",
) -> None:
    """Run the card-fraud detector on a synthetic stream and score it against the labels.

    Generates a labelled stream (amount spikes, card testing, velocity bursts, and legitimate
    behaviour that looks odd), replays it at `--rate` events/s through the embedded engine, prints
    alerts as they fire, then a summary: precision and recall (overall and per pattern), latency
    from event emission to alert (p50/p95/p99) and throughput.

    Examples: `vigil demo` · `vigil demo --rate 0 --json` · `vigil demo --events 200000 --no-live` ·
    `make kafka-up && vigil demo --kafka`
    """
    from vigil.cli.demo import run_demo, run_kafka_demo

    if ctx.invoked_subcommand is not None:
        return
    if kafka:
        try:
            run_kafka_demo(bootstrap=bootstrap, events=events, users=users, rate=rate or None, seed=seed,
                           as_json=json_, live=live and not json_, out_dir=str(out), show_alerts=show_alerts)
        except VigilError as exc:
            _fail(exc, 1)
        return
    run_demo(events=events, users=users, rate=rate or None, seed=seed, as_json=json_, live=live and not json_,
             out_dir=str(out), show_alerts=show_alerts)  # fmt: skip


@demo_app.command("servers")
def demo_servers(
    hosts: Annotated[int, typer.Option(help="Hosts in the simulated fleet.")] = 100,
    days: Annotated[float, typer.Option(help="Days of event time.")] = 2.0,
    step: Annotated[int, typer.Option(help="Seconds between samples of a metric.")] = 10,
    seed: Annotated[int, typer.Option(help="Seed of the simulator.")] = 7,
    window: Annotated[float, typer.Option(help="Seconds per joined window.")] = 60.0,
    k: Annotated[int, typer.Option(help="Alert when at least k of the 6 metrics agree.")] = 2,
    model: Annotated[bool, typer.Option(help="Train and serve the Isolation Forest over the windows.")] = True,
    json_: Annotated[bool, typer.Option("--json", help="Print the summary as JSON on the last line.")] = False,
) -> None:
    """The multi-metric server detector on a simulated fleet with labelled incidents.

    Hosts with daily load patterns; incidents (CPU saturation, memory leak, network storm, disk
    filling, noisy neighbour) move several metrics at once. Samples are joined per host and window
    into feature vectors, scored per metric (and by an Isolation Forest trained offline on the first
    day), and alerted only when k of n metrics agree. The summary gives recall per incident type,
    precision, time to detect and false alerts per host-day with and without k-of-n.
    """
    from vigil.cli.demo_servers import run_servers_demo

    run_servers_demo(hosts=hosts, days=days, step_s=step, seed=seed, window_s=window, k=k, model=model,
                     as_json=json_)  # fmt: skip


@demo_app.command("feedback")
def demo_feedback(
    hosts: Annotated[int, typer.Option(help="Hosts in the simulated fleet.")] = 100,
    days: Annotated[float, typer.Option(help="Days of event time.")] = 2.0,
    step: Annotated[int, typer.Option(help="Seconds between samples of a metric.")] = 10,
    seed: Annotated[int, typer.Option(help="Seed of the simulator.")] = 7,
    window: Annotated[float, typer.Option(help="Seconds per joined window.")] = 60.0,
    k: Annotated[int, typer.Option(help="Alert when at least k of the 6 metrics agree.")] = 2,
    scheduled_jobs: Annotated[float, typer.Option(
        help="Share of hosts running an hourly scheduled job (the recurring false alerts to teach away).")] = 0.15,
    live_h: Annotated[float, typer.Option(
        "--live-h", help="Hours of shadow mode before alerting goes live and the operator starts labelling.")] = 9.0,
    label_hours: Annotated[float, typer.Option(help="Hours of alerts the scripted operator labels.")] = 1.0,
    max_factor: Annotated[float, typer.Option(help="A learned bar is at most this times the base threshold.")] = 2.0,
    headroom: Annotated[float, typer.Option(help="A learned bar is this times the score labelled normal.")] = 1.2,
    retrain: Annotated[bool, typer.Option(help="Also refit the model with the labels and judge it.")] = True,
    keep: Annotated[Path | None, typer.Option(
        help="Keep the alert store, suppression versions and registry in this folder.")] = None,  # fmt: skip
    json_: Annotated[bool, typer.Option("--json", help="Print the result as JSON on the last line.")] = False,
) -> None:
    """An operator labels the first hour of alerts on the server simulator; false alerts before and after.

    Some hosts run an hourly job that moves two metrics, so the k-of-n vote fires on it again and again. A
    scripted operator labels every alert of the first hour of alerting (true positive when it matches an
    incident); Vigil learns per-host, per-metric bars from the false positives (bounded, versioned, reversible)
    and applies them to the rest of the run. The summary gives false alerts per host-day and recall, before
    and after, on the part after the labelled hour; `--retrain` also refits the Isolation Forest with the labels.

    Examples: `vigil demo feedback` · `vigil demo feedback --hosts 40 --json` · `vigil demo feedback --keep fb/`
    """
    from vigil.cli.feedback import demo_feedback_cmd

    try:
        demo_feedback_cmd(hosts=hosts, days=days, step=step, seed=seed, window=window, k=k,
                          scheduled_jobs=scheduled_jobs, live_h=live_h, label_hours=label_hours,
                          max_factor=max_factor, headroom=headroom, retrain=retrain,
                          keep=str(keep) if keep else None, json_=json_)  # fmt: skip
    except VigilError as exc:
        _fail(exc, 1)


feedback_app = typer.Typer(help="The per-key bars learned from operators' true/false-positive labels.",
                           no_args_is_help=True)
app.add_typer(feedback_app, name="feedback")
_FbDb = Annotated[Path, typer.Option("--db", help="The pipeline's alert store (the bars live beside it).")]


@feedback_app.command("show")
def feedback_show(db: _FbDb = Path("vigil-out/alerts.db")) -> None:
    """The bars in force and the last versions (learned by the running pipeline every 30 s from new labels)."""
    from vigil.cli.feedback import feedback_admin_cmd

    feedback_admin_cmd("show", db=str(db), version=None, who="", why="", console=Console(highlight=False))


@feedback_app.command("rollback")
def feedback_rollback(
    db: _FbDb = Path("vigil-out/alerts.db"),
    version: Annotated[str | None, typer.Option(help="The version to go back to (default: the previous).")] = None,
    who: Annotated[str, typer.Option(help="Recorded in the history.")] = os.environ.get("USER", "operator"),
    why: Annotated[str, typer.Option(help="Recorded in the history.")] = "",
) -> None:
    """Put an earlier set of bars back in force (the running pipeline picks it up at its next learning pass)."""
    from vigil.cli.feedback import feedback_admin_cmd

    try:
        feedback_admin_cmd("rollback", db=str(db), version=version, who=who, why=why,
                           console=Console(highlight=False))  # fmt: skip
    except VigilError as exc:
        _fail(exc)


@feedback_app.command("clear")
def feedback_clear(
    db: _FbDb = Path("vigil-out/alerts.db"),
    who: Annotated[str, typer.Option(help="Recorded in the history.")] = os.environ.get("USER", "operator"),
    why: Annotated[str, typer.Option(help="Recorded in the history.")] = "",
) -> None:
    """Drop every learned bar (recorded as a version, so it can be rolled back too)."""
    from vigil.cli.feedback import feedback_admin_cmd

    try:
        feedback_admin_cmd("clear", db=str(db), version=None, who=who, why=why, console=Console(highlight=False))
    except VigilError as exc:
        _fail(exc)


@app.command("retrain")
def retrain_(
    db: Annotated[Path, typer.Option("--db", help="Alert store with the operators' feedback (alerts.db).")],
    input: Annotated[Path | None, typer.Option(
        "--input", help="Metric samples: Influx lines (as `vigil generate fleet` writes) or Telegraf JSON; "
        "default: the simulator (--hosts/--days/--seed/--scheduled-jobs).")] = None,  # fmt: skip
    pipeline: Annotated[Path | None, typer.Option(
        "--pipeline", help="Take config, registry and model name from this pipeline's servers step.")] = None,
    registry: Annotated[Path | None, typer.Option(
        "--registry", help="Registry folder (default: the pipeline's, $VIGIL_MODEL_REGISTRY, or ./models).")] = None,
    name: Annotated[str | None, typer.Option("--name", help="Model name (default: the pipeline's).")] = None,
    incidents: Annotated[Path | None, typer.Option(
        "--incidents",
        help="Incident table CSV (`vigil generate fleet --labels`) to label the held-back slice.")] = None,
    hosts: Annotated[int, typer.Option(help="Simulator: hosts.")] = 20,
    days: Annotated[float, typer.Option(help="Simulator: days.")] = 1.0,
    seed: Annotated[int, typer.Option(help="Simulator seed, and the forest's.")] = 7,
    scheduled_jobs: Annotated[float, typer.Option(help="Simulator: share of hosts with an hourly job.")] = 0.0,
    warmup_h: Annotated[float, typer.Option("--warmup-h", help="Simulator: warm-up hours.")] = 3.0,
    window: Annotated[float, typer.Option(help="Seconds per joined window (without --pipeline).")] = 60.0,
    k: Annotated[int, typer.Option(help="k of the k-of-n vote (without --pipeline).")] = 2,
    until: Annotated[str, typer.Option(help="The original training rows: the first DURATION of the data.")] = "4h",
    holdout_from: Annotated[str | None, typer.Option(
        help="Held-back slice from this DURATION after the data's start (default: after the last label).")] = None,
    trees: Annotated[int, typer.Option(help="Trees of the new forest.")] = 100,
    fp_weight: Annotated[float, typer.Option(help="Share of the training mass the false positives carry.")] = 0.1,
    min_gain: Annotated[float, typer.Option(help="Promote only when average precision improves by more.")] = 0.0,
    reason: Annotated[str, typer.Option(help="History reason when promoted.")] = "retrained with feedback",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Evaluate only: register and promote nothing.")] = False,
    json_: Annotated[bool, typer.Option("--json", help="Print the report as JSON on the last line.")] = False,
) -> None:
    """Refit the server model with the alert store's feedback; promote it only if it does better.

    False-positive windows are added as normal, true-positive ones removed; the new version is judged against
    the promoted one on a held-back labelled slice (average precision), registered with that evaluation, and
    promoted only when strictly better. A refit without the labels is reported as a control.

    Examples: `vigil retrain --db vigil-out/servers/alerts.db --pipeline pipelines/servers-kafka.yaml --input
    fleet.influx --incidents incidents.csv` · `vigil retrain --db fb/alerts.db --registry fb/registry --name
    servers --hosts 40 --days 2 --scheduled-jobs 0.15 --warmup-h 9 --until 9h --dry-run`
    """
    from vigil.cli.feedback import retrain_cmd

    try:
        retrain_cmd(db=str(db), registry=str(registry) if registry else None, name=name,
                    pipeline=str(pipeline) if pipeline else None, input_path=str(input) if input else None,
                    incidents=str(incidents) if incidents else None, hosts=hosts, days=days, seed=seed,
                    scheduled_jobs=scheduled_jobs, warmup_h=warmup_h, window=window, k=k, until=until,
                    holdout_from=holdout_from, n_estimators=trees, fp_weight=fp_weight, min_gain=min_gain,
                    reason=reason, dry_run=dry_run, json_=json_, console=err)  # fmt: skip
    except VigilError as exc:
        _fail(exc, 1)


@generate_app.command("transactions")
def generate_transactions_cmd(
    out: Annotated[str, typer.Option("--out", "-o", help="File to write, or - for stdout.")] = "-",
    to: Annotated[str | None, typer.Option(
        "--to", help="Produce to Kafka instead: kafka://HOST:PORT/TOPIC (keyed by user).")] = None,  # fmt: skip
    rate: Annotated[float, typer.Option(help="With --to: events/s to pace at; 0 = as fast as possible.")] = 0,
    events: Annotated[int, typer.Option(help="How many transactions.")] = 1_000_000,
    users: Annotated[int, typer.Option(help="How many card holders.")] = 20_000,
    seed: Annotated[int, typer.Option(help="Seed: the same seed writes the same bytes.")] = 7,
    fmt: Annotated[str, typer.Option("--format", help="jsonl or csv.")] = "jsonl",
) -> None:
    """Write a synthetic card-transaction stream with labelled fraud.

    One record per line: `user`, `ts` (event time, epoch ms), `amount`, `merchant`, `category`,
    `country`, `txn_id`, `label` (1 = fraud) and `pattern` (amount_spike, card_testing,
    velocity_burst, or the legitimate large_purchase, bursty_shopper, travel, normal). Records
    arrive out of event-time order by up to 2 s, as they would from many terminals.

    Examples: `vigil generate transactions -o tx.jsonl --events 100000` ·
    `vigil generate transactions | vigil run pipelines/fraud-stdin.yaml` ·
    `vigil generate transactions --to kafka://127.0.0.1:9092/transactions --rate 20000`
    """
    from vigil.io.generators.transactions import (
        TransactionSpec,
        generate_transactions,
        iter_records,
        summary,
        write_csv,
        write_jsonl,
    )

    if fmt not in ("jsonl", "csv"):
        _fail(ConfigError("must be 'jsonl' or 'csv'", field="--format", value=fmt))
    cols = generate_transactions(TransactionSpec(events=events, users=users, seed=seed))
    s = summary(cols)
    if to is not None:
        from rich.progress import Progress

        from vigil.io.kafka import parse_kafka_url
        from vigil.io.kafka_sink import produce_records

        try:
            bootstrap, topic = parse_kafka_url(to)
        except ConfigError as exc:
            _fail(exc)
        with Progress(console=err, transient=True) as bar:
            task = bar.add_task(f"producing to {topic}", total=s["events"])
            # paced: a live stream, so send within milliseconds; unpaced: batch up for throughput
            conf = {"linger.ms": 2} if rate else None
            n = produce_records(bootstrap, topic, iter_records(cols), key_field="user", rate=rate or None,
                                progress=lambda k: bar.update(task, completed=k), producer_config=conf)  # fmt: skip
        err.print(f"produced {n:,} transactions ({s.get('fraud_share', 0):.1%} fraud) to {to}")
        return
    if fmt == "jsonl":
        write_jsonl(cols, sys.stdout.buffer if out == "-" else out)
    else:
        if out == "-":
            _fail(ConfigError("needs a file for csv", field="--out", value=out))
        write_csv(cols, out)
    if out != "-":
        err.print(f"wrote {s['events']:,} transactions ({s.get('fraud_share', 0):.1%} fraud) to {out}")


@generate_app.command("fleet")
def generate_fleet_cmd(
    out: Annotated[str, typer.Option("--out", "-o", help="File to write, or - for stdout.")] = "-",
    to: Annotated[str | None, typer.Option("--to", help="Produce to Kafka instead: kafka://HOST:PORT/TOPIC.")] = None,
    hosts: Annotated[int, typer.Option(help="Hosts in the fleet.")] = 20,
    days: Annotated[float, typer.Option(help="Days of samples (fractions allowed).")] = 1.0,
    step: Annotated[int, typer.Option(help="Seconds between two samples of a metric.")] = 10,
    seed: Annotated[int, typer.Option(help="Seed: the same seed writes the same bytes.")] = 7,
    labels: Annotated[str | None, typer.Option(help="Also write the incident table (CSV) here.")] = None,
    scheduled_jobs: Annotated[float, typer.Option(
        help="Share of hosts running an hourly job that moves two metrics (recurring false alerts).")] = 0.0,
) -> None:
    """Write the server simulator's samples as Influx line protocol, with labelled incidents.

    Per host: cpu, mem, net_in, net_out, disk_io, disk_used, one line per sample
    (`cpu,host=host-0003 value=41.2 1704067200000000000`), in arrival order (a little disorder, a few very
    late samples, dropped samples and metric outages); the incidents (CPU saturation, memory leak, network
    storm, disk filling, noisy neighbour) are listed by `--labels`.

    Examples: `vigil generate fleet -o fleet.influx --labels incidents.csv && vigil run pipelines/servers.yaml` ·
    `vigil generate fleet --to kafka://127.0.0.1:9092/metrics --hosts 50`
    """
    from vigil.cli.fleet import generate_fleet

    try:
        generate_fleet(hosts=hosts, days=days, step_s=step, seed=seed, out=out, to=to, labels=labels, err=err,
                       scheduled_jobs=scheduled_jobs)
    except (VigilError, ValueError) as exc:
        _fail(exc if isinstance(exc, VigilError) else ConfigError(str(exc), field="fleet"))


from vigil.cli.services import generate_services_cmd  # noqa: E402 - the services simulator, imported light

generate_app.command("services")(generate_services_cmd)
from vigil.cli.rca import rca_cmd  # noqa: E402 - root-cause ranking, offline prototype

app.command("rca")(rca_cmd)

from vigil.cli.console import console_cmd  # noqa: E402 - registered here, imported light

app.command("console")(console_cmd)


@app.command("apply")
def apply_(
    pipeline: Annotated[Path, typer.Argument(help="The changed pipeline YAML (same `name` as the running one).")],
    out: Annotated[Path, typer.Option(help="The running pipeline's --out folder.")] = Path("vigil-out"),
    dry_run: Annotated[bool, typer.Option(help="Validate and show the changes; record nothing.")] = False,
    rollback: Annotated[bool, typer.Option(help="Make the previous version current again (or --version).")] = False,
    version: Annotated[str | None, typer.Option(help="With --rollback: the version to go back to.")] = None,
    history: Annotated[bool, typer.Option(help="Show the versions and what each changed.")] = False,
    who: Annotated[str, typer.Option(help="Recorded in the history.")] = os.environ.get("USER", "operator"),
    why: Annotated[str, typer.Option(help="Recorded in the history.")] = "",
    wait: Annotated[float, typer.Option(help="Seconds to wait for the running pipeline to confirm.")] = 5.0,
) -> None:
    """Change a running pipeline's thresholds, rules and severities live: validated, versioned, reversible.

    The file is validated, compared with the running version, and refused (exit 2) if a change can't be
    applied without a restart — a window size, the metrics joined, the source, the steps themselves — naming
    the step, field and value. Otherwise it becomes the next version in `<out>/<name>/config/`, which the
    running `vigil run` applies between two batches, keeping every key's state.

    Examples: `vigil apply pipelines/fraud.yaml --dry-run` · `vigil apply pipelines/fraud.yaml --why "too noisy"`
    · `vigil apply pipelines/fraud.yaml --rollback` · `vigil apply pipelines/fraud.yaml --history`
    """
    from vigil.cli.apply import apply_cmd, history_cmd, rollback_cmd

    con = Console(highlight=False)
    try:
        if history:
            history_cmd(str(pipeline), out=str(out), console=con)
        elif rollback or version is not None:
            rollback_cmd(str(pipeline), version, out=str(out), who=who, why=why, wait_s=wait, console=con)
        else:
            apply_cmd(str(pipeline), out=str(out), dry_run=dry_run, who=who, why=why, wait_s=wait, console=con)
    except VigilError as exc:
        _fail(exc)


@app.command()
def validate(pipeline: Annotated[Path, typer.Argument(help="Pipeline YAML file.")]) -> None:
    """Check a pipeline file without running it (every error names the step, field and value)."""
    from vigil.config import load_pipeline

    try:
        p = load_pipeline(str(pipeline))
    except ConfigError as exc:
        _fail(exc)
    err.print(f"[green]ok[/]: pipeline `{p.name}` with steps {', '.join(s.name for s in p.steps)}")


@app.command()
def run(
    pipeline: Annotated[Path, typer.Argument(help="Pipeline YAML file (see pipelines/).")],
    out: Annotated[Path, typer.Option(help="Default folder for late events and dead letters.")] = Path("vigil-out"),
    quiet: Annotated[bool, typer.Option(help="No progress display.")] = False,
    until_end: Annotated[bool, typer.Option(
        help="Stop when a Kafka source has reached the end of every partition (default: run until Ctrl-C).")] = False,
    restarts: Annotated[int, typer.Option(
        help="Restart from the last checkpoint this many times after an aborted Kafka transaction.")] = 5,
    metrics: Annotated[bool, typer.Option(help="Serve Prometheus metrics at /metrics during the run.")] = True,
    metrics_port: Annotated[int | None, typer.Option(show_default=False, help=(
        "Port of the metrics endpoint; 0: any free port. Default 9464 (the exporter convention); if it is taken, "
        "the run goes on without metrics, while a port given here must be free."))] = None,  # fmt: skip
    metrics_host: Annotated[str, typer.Option(
        help="Address of the metrics endpoint (0.0.0.0 to be scraped from outside a container).")] = "127.0.0.1",
    console: Annotated[bool, typer.Option(help="Serve the web console (127.0.0.1, token-protected) during the run.")
                       ] = True,
    console_port: Annotated[int, typer.Option(help="Port of the console; if 8765 is taken, any free port.")] = 8765,
) -> None:
    """Run a pipeline on the embedded runtime until its source ends (Ctrl-C stops cleanly).

    With `checkpoints:` in the file, a restarted run resumes from the last checkpoint; with
    `delivery: exactly-once`, Kafka outputs and source offsets commit together at each checkpoint.
    Prometheus metrics are served at http://127.0.0.1:9464/metrics (`--metrics-port`, `--no-metrics`);
    deploy/grafana/vigil-dashboard.json is a Grafana dashboard over them.

    Example: `vigil generate transactions -o tx.jsonl && vigil run pipelines/fraud.yaml`
    """
    from vigil.cli.runview import run_with_view
    from vigil.config import load_pipeline

    server = registry = None
    if metrics:
        from prometheus_client import CollectorRegistry

        from vigil.ops.metrics import serve

        registry = CollectorRegistry()
        try:
            server, port = serve(registry, metrics_host, 9464 if metrics_port is None else metrics_port)
            err.print(f"metrics: http://{metrics_host}:{port}/metrics")
        except ConfigError as exc:
            if metrics_port is not None:
                _fail(exc)
            err.print(f"[yellow]no metrics endpoint[/]: {exc}")  # e.g. a second run on this machine
            registry = None
    attempt = 0
    try:
        while True:
            try:
                p = load_pipeline(str(pipeline), overrides={"stop_at_end": True} if until_end else None)
            except ConfigError as exc:
                _fail(exc)
            try:
                managed = _ensure_alerting(p, out)
                run_with_view(p, out_dir=str(out), quiet=quiet, console=err,
                              attach=lambda runner, m=managed: _attach(runner, pipeline, out, registry, m,
                                                                       console_port if console else None))  # fmt: skip
                return
            except VigilError as exc:
                if type(exc).__name__ == "TransactionAborted" and attempt < restarts:
                    attempt += 1
                    err.print(f"[yellow]{exc}[/]; restarting from the last checkpoint ({attempt}/{restarts})")
                    continue
                _fail(exc, 1)
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()


@bench_app.command("engine")
def bench_engine(
    json_: Annotated[bool, typer.Option("--json", help="Print the figures as JSON on the last line.")] = False,
    n: Annotated[int, typer.Option(help="Events in the workload.")] = 1_000_000,
    keys: Annotated[int, typer.Option(help="Keys in the workload.")] = 10_000,
    shared: Annotated[Path | None, typer.Option(
        help="Folder with workload.py and bench_pure_python.py (default ../shared/bench/perf; "
             "otherwise a checkout of this project's shared bench folder).")] = None,  # fmt: skip
    out: Annotated[Path, typer.Option(help="Where to write the results JSON.")] = Path("bench/results/engine.json"),
    repeats: Annotated[int, typer.Option(help="Runs of each measurement; the median is reported.")] = 3,
) -> None:
    """Throughput of the engine against the pure-Python reference on the shared workload.

    Runs (a) the pure-Python exact 60 s window z-score reference, (b) Vigil's engine on columnar
    batches with the same detector semantics, (c) Vigil from a JSON-lines file to an alerts file;
    (b) and (c) in a process of their own, so the reference's objects don't count in Vigil's memory.
    """
    from vigil.cli.bench import run_engine_bench

    try:
        run_engine_bench(n=n, keys=keys, shared=shared, as_json=json_, out=out, repeats=repeats)
    except VigilError as exc:
        _fail(exc, 1)


@app.command()
def score(
    config: Annotated[str, typer.Argument(help="Detector config YAML ({kind, params} or the full shape), or a "
                                               "bundled name such as `nab`.")],
    input: Annotated[Path, typer.Argument(help="CSV, JSON lines or Parquet: a time column, value column(s), "
                                               "optionally a key column.")],
    output: Annotated[Path, typer.Argument(help="Where to write per-row scores (.csv, .jsonl or .parquet).")],
    train: Annotated[Path | None, typer.Option(help="Fit offline-trained detectors on this file first.")] = None,
    batch_rows: Annotated[int, typer.Option(help="Rows per micro-batch.")] = 65_536,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    json_: Annotated[bool, typer.Option("--json", help="Print the summary as JSON on the last line.")] = False,
) -> None:
    """Backtest a detector on a file: the batch face of the streaming engine, strictly causal.

    Rows are replayed in event-time order through the same detector code as a live pipeline and
    each row gets its raw score, calibrated score, alert flag and (for multi-column input) per-column
    contributions, written in the input's row order. Unreadable rows are reported, never fatal.

    Example: `vigil score nab ../shared/datasets/nab/data/realKnownCause/nyc_taxi.csv taxi-scores.csv`
    """
    import json as _json

    from vigil.cli.score import score_file

    try:
        summary = score_file(config, str(input), str(output), train_path=str(train) if train else None,
                             progress=progress and not json_, batch_rows=batch_rows)  # fmt: skip
    except VigilError as exc:
        _fail(exc, 1)
    if json_:
        print(_json.dumps(summary, default=str))
    else:
        err.print(f"wrote {output}: " + ", ".join(f"{k} {v}" for k, v in summary.items() if not isinstance(v, dict)))


@bench_app.command("nab")
def bench_nab(
    config: Annotated[str, typer.Option(help="Detector config (path or bundled name).")] = "nab",
    data: Annotated[Path | None, typer.Option(help="NAB data folder (default ../shared/datasets/nab/data; "
                                                    "otherwise a checkout of numenta/NAB: its data/).")] = None,
    labels: Annotated[Path | None, typer.Option(help="combined_windows.json (default beside the data).")] = None,
    scorer: Annotated[Path | None, typer.Option(help="Folder of nab_score.py (default ../shared/bench/nab).")] = None,
    results: Annotated[Path, typer.Option(help="Where the NAB-format result files go.")] = Path("bench/results/nab"),
    file: Annotated[list[str] | None, typer.Option("--file", help="Score only these files (not comparable).")] = None,
    json_: Annotated[bool, typer.Option("--json", help="Print the profile scores as JSON on the last line.")] = False,
) -> None:
    """Run one fixed detector config over all 58 NAB series and score it with NAB's method.

    Prints our three profile scores beside the published scoreboard, and points/s.
    """
    from vigil.cli.bench_nab import run_nab_bench

    try:
        run_nab_bench(config, data_dir=data, labels=labels, scorer_dir=scorer, results_dir=results, as_json=json_,
                      files=file or None)  # fmt: skip
    except VigilError as exc:
        _fail(exc, 1)


@bench_app.command("servers")
def bench_servers(
    json_: Annotated[bool, typer.Option("--json", help="Print the figures as JSON on the last line.")] = False,
    hosts: Annotated[int, typer.Option(help="Hosts, each with 6 metrics.")] = 10_000,
    minutes: Annotated[float, typer.Option(help="Minutes of event time at 1 sample/s per metric.")] = 10.0,
    out: Annotated[Path, typer.Option(help="Where to write the results JSON.")] = Path("bench/results/servers.json"),
) -> None:
    """Samples/s of the server pipeline: per-host windowed join, Isolation Forest, k-of-n alerting.

    10,000 hosts x 6 metrics x 1 sample/s for 10 minutes (36M samples) by default, generated in
    event-time chunks, in a process of its own (its peak RSS is reported).
    """
    from vigil.cli.bench_servers import run_servers_bench

    try:
        run_servers_bench(hosts=hosts, minutes=minutes, as_json=json_, out=out)
    except VigilError as exc:
        _fail(exc, 1)


@bench_app.command("detectors")
def bench_detectors(
    json_: Annotated[bool, typer.Option("--json", help="Print the figures as JSON on the last line.")] = False,
    n: Annotated[int, typer.Option(help="Events in the workload.")] = 1_000_000,
    keys: Annotated[int, typer.Option(help="Keys in the workload.")] = 10_000,
    river_n: Annotated[int, typer.Option(help="Events given to River's HalfSpaceTrees (it is slow).")] = 100_000,
    shared: Annotated[Path | None, typer.Option(
        help="Folder with workload.py (default ../shared/bench/perf).")] = None,  # fmt: skip
    out: Annotated[Path, typer.Option(help="Where to write the results JSON.")] = Path("bench/results/detectors.json"),
) -> None:
    """Events/s and ROC AUC of every detector on the shared workload, next to River's HalfSpaceTrees."""
    from vigil.cli.bench_detectors import run_detectors_bench

    try:
        run_detectors_bench(n, keys, shared, json_, out, river_n=river_n)
    except VigilError as exc:
        _fail(exc, 1)


@collect_app.command("host")
def collect_host_cmd(
    interval: Annotated[float, typer.Option("--interval", "-i", help="Seconds between samples.")] = 1.0,
    fmt: Annotated[str, typer.Option("--format", help="influx (line protocol) or json (Telegraf's JSON).")] = "influx",
    out: Annotated[str, typer.Option("--out", "-o", help="-, a file (appended), or kafka://HOST:PORT/TOPIC.")] = "-",
    count: Annotated[int | None, typer.Option(help="Stop after this many samples (default: until Ctrl-C).")] = None,
    host: Annotated[str | None, typer.Option(help="Host tag (default: this machine's name).")] = None,
) -> None:
    """Sample this machine (CPU per mode, memory, disk and network I/O rates, load) at an interval.

    Writes what Telegraf would: Influx line protocol or Telegraf-style JSON, to stdout, a file or a
    Kafka topic. Examples: `vigil collect host --count 5` ·
    `vigil collect host -i 10 -o kafka://127.0.0.1:9092/metrics`
    """
    from vigil.cli.collect import collect_host

    try:
        n = collect_host(interval_s=interval, format=fmt, out=out, count=count, host=host)  # type: ignore[arg-type]
    except VigilError as exc:
        _fail(exc)
    if out != "-":
        err.print(f"{n} samples written to {out}")


RegistryOpt = Annotated[Path | None, typer.Option(
    "--registry", help="Registry folder (default: the config's, $VIGIL_MODEL_REGISTRY, or ./models).")]  # fmt: skip
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]


@app.command()
def train(
    input: Annotated[str, typer.Option("--input", help="Normal data: CSV, JSON lines, Parquet or kafka://HOST:PORT/"
                                       "TOPIC of JSON records (--config); Influx or Telegraf metrics, a file or "
                                       "kafka://... (--pipeline).")],
    config: Annotated[Path | None, typer.Option("--config", help="Training YAML (name, features, ...).")] = None,
    pipeline: Annotated[Path | None, typer.Option(
        "--pipeline", help="Or: train the global model of this pipeline's `servers` step.")] = None,  # fmt: skip
    until: Annotated[str, typer.Option(help="With --pipeline: train on the first DURATION of the input.")] = "4h",
    registry: RegistryOpt = None,
    promote: Annotated[bool, typer.Option(help="Promote the new version too.")] = False,
    reason: Annotated[str, typer.Option(help="History reason when --promote.")] = "trained",
    json_: JsonOpt = False,
) -> None:
    """Fit an Isolation Forest on normal data and register it as a new model version.

    The new version is validated on a held-back slice; serving pipelines pick up a version when it is
    promoted (`vigil models promote`).

    Examples: `vigil train --config train.yaml --input normal.csv` ·
    `vigil train --pipeline pipelines/servers-kafka.yaml --input fleet.influx --until 6h --promote` ·
    `vigil train --config train.yaml --input kafka://127.0.0.1:9092/normal-transactions`
    """
    if (config is None) == (pipeline is None):
        _fail(ConfigError("give exactly one of --config (a feature table) or --pipeline (a servers step)",
                          field="train", value=None))  # fmt: skip
    try:
        if pipeline is not None:
            from vigil.cli.fleet import train_servers_cmd

            train_servers_cmd(str(pipeline), str(input), until=until, promote=promote, reason=reason, console=err)
            return
        from vigil.cli.models import train_cmd

        assert config is not None
        train_cmd(config, input, registry=registry, promote=promote, reason=reason, as_json=json_, console=err)
    except VigilError as exc:
        _fail(exc, 1)


@models_app.command("list")
def models_list(registry: RegistryOpt = None, json_: JsonOpt = False) -> None:
    """Every model, its versions and which one is promoted."""
    from vigil.cli.models import list_cmd

    try:
        list_cmd(registry, as_json=json_, console=Console(highlight=False))
    except VigilError as exc:
        _fail(exc, 1)


@models_app.command("show")
def models_show(
    name: Annotated[str, typer.Argument(help="Model name.")],
    version: Annotated[str | None, typer.Argument(help="Version (default: the promoted one).")] = None,
    registry: RegistryOpt = None,
    json_: JsonOpt = False,
) -> None:
    """A version's metadata, validation report and the promotion history."""
    from vigil.cli.models import show_cmd

    try:
        show_cmd(name, version, registry, as_json=json_, console=Console(highlight=False))
    except VigilError as exc:
        _fail(exc, 1)


@models_app.command("promote")
def models_promote(
    name: Annotated[str, typer.Argument(help="Model name.")],
    version: Annotated[str, typer.Argument(help="Version to serve, e.g. v3.")],
    reason: Annotated[str, typer.Option("--reason", help="Why (kept in the history).")],
    registry: RegistryOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Serve this version; running pipelines pick it up between micro-batches, without a restart."""
    from vigil.cli.models import promote_cmd

    try:
        promote_cmd(name, version, reason, registry, as_json=json_, console=Console(highlight=False))
    except VigilError as exc:
        _fail(exc, 1)


@models_app.command("rollback")
def models_rollback(
    name: Annotated[str, typer.Argument(help="Model name.")],
    reason: Annotated[str, typer.Option("--reason", help="Why (kept in the history).")],
    registry: RegistryOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Serve the version promoted before the current one."""
    from vigil.cli.models import rollback_cmd

    try:
        rollback_cmd(name, reason, registry, as_json=json_, console=Console(highlight=False))
    except VigilError as exc:
        _fail(exc, 1)


@checkpoint_app.command("inspect")
def checkpoint_inspect(
    path: Annotated[Path, typer.Argument(help="A checkpoint file (.vck), or a pipeline's checkpoint directory.")],
    json_: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Show what a checkpoint holds: source positions, watermark, keys, each step's state and size.

    Given a directory, shows the newest readable checkpoint and reports any corrupt or truncated one
    it passed over (the engine would pass over it too).

    Example: `vigil checkpoint inspect vigil-state/fraud`
    """
    from vigil.cli.checkpoint import inspect

    try:
        inspect(path, as_json=json_, console=Console(highlight=False))
    except (VigilError, FileNotFoundError) as exc:
        _fail(exc, 1)


def _ensure_alerting(p: Any, out: Path) -> Any:
    """The pipeline's alert manager: its `alerting:` one, or a default.

    The default groups per detector and key and records in `<out>/<pipeline>/alerts.db`, so that every run has
    an alert lifecycle, `vigil alerts` and the console.
    """
    from vigil.alerting.runtime import ManagedAlerts

    for s in p.alert_sinks:
        if isinstance(s, ManagedAlerts):
            return s
    from vigil.config.spec import _feedback_base

    managed = ManagedAlerts({"route": {"group_by": ["alertname", "key"]}}, pipeline=p.name,
                            store_path=out / p.name / "alerts.db", feedback=True, feedback_base=_feedback_base(p))
    p.alerts_to(managed)
    return managed


def _attach(runner: Any, pipeline: Path, out: Path, registry: Any, managed: Any, console_port: int | None) -> Any:
    """What `vigil run` hooks onto its runner: metrics, live reconfiguration (`vigil apply`) and the console."""
    from vigil.cli.apply import history_for
    from vigil.config.spec import load_spec
    from vigil.control import LiveControl

    cleanups: list[Any] = []
    if registry is not None:
        from vigil.ops.metrics import PipelineMetrics

        metrics = PipelineMetrics(runner, registry)
        managed.state_listeners.append(metrics.set_alert_states)
        cleanups.append(metrics.close)
    if console_port is not None:
        cleanups += _start_console(runner, managed, console_port)
    spec = load_spec(str(pipeline))
    h = history_for(spec.name, str(out))
    text = pipeline.read_text(encoding="utf-8")
    cur = h.current()
    if cur is not None and cur[1] == text:
        version = cur[0]
    else:
        version = h.record(text, action="start", who="vigil run", why=str(pipeline))
        if cur is not None:
            err.print(f"config {version} from {pipeline} (it differs from {cur[0]}, in force before; "
                      f"see `vigil apply {pipeline} --history`)")  # fmt: skip
    runner.control = LiveControl(h, spec, version, base_dir=str(pipeline.resolve().parent))
    return lambda: [c() for c in cleanups]


def _start_console(runner: Any, managed: Any, port: int) -> list[Any]:
    """Serve the console beside the run (a recorder tap feeds its live charts); return the cleanups."""
    from vigil.alerting.store import AlertStore
    from vigil.cli.console import start_console
    from vigil.console.recorder import StreamRecorder

    recorder = StreamRecorder()
    runner.taps = (*runner.taps, recorder)
    managed.store_path.parent.mkdir(parents=True, exist_ok=True)
    store = AlertStore(str(managed.store_path))
    try:
        handle, _ = start_console(store=store, runner=runner, recorder=recorder, pipeline_name=runner.p.name,
                                  port=port, console=err)  # fmt: skip
    except VigilError:
        try:
            handle, _ = start_console(store=store, runner=runner, recorder=recorder, pipeline_name=runner.p.name,
                                      port=0, console=err)  # fmt: skip
        except VigilError as exc:
            err.print(f"[yellow]no console[/]: {exc}")
            store.close()
            return []
    return [handle.stop, store.close]


def _dump_stacks_on_sigusr1() -> None:
    """`kill -USR1 <pid>` prints every thread's stack to stderr: what a stuck pipeline is doing."""
    import faulthandler
    import signal

    if hasattr(signal, "SIGUSR1"):
        try:
            faulthandler.register(signal.SIGUSR1, all_threads=True)
        except (ValueError, OSError, AttributeError):  # stderr without a file descriptor (embedded, test runners)
            pass


#: `vigil --help` in panels, in the order a newcomer needs them
_PANELS = {
    "Start here": ("demo", "generate", "run", "validate"),
    "Operate a running pipeline": ("console", "alerts", "silence", "apply", "feedback", "checkpoint"),
    "Models and detectors": ("score", "train", "models", "retrain", "collect"),
    "Measure": ("bench",),
}


def _arrange_help() -> None:
    rank = {n: i for i, names in enumerate(_PANELS.values()) for n in names}
    panel = {n: p for p, names in _PANELS.items() for n in names}
    order = {n: j for names in _PANELS.values() for j, n in enumerate(names)}

    def name_of(info: Any) -> str:
        return info.name or (info.callback.__name__.rstrip("_").replace("_", "-") if info.callback else "")

    for infos in (app.registered_commands, app.registered_groups):
        for info in infos:
            info.rich_help_panel = panel.get(name_of(info), "More")
        infos.sort(key=lambda i: (rank.get(name_of(i), 99), order.get(name_of(i), 99)))


_arrange_help()


def main() -> None:  # pragma: no cover
    """Entry point of ``python -m vigil.cli.main``."""
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
