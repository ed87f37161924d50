"""``vigil demo``: the card-fraud detector, the server fleet detector and the feedback loop, scored live."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vigil.cli.common import fail
from vigil.errors import ConfigError, VigilError

app = typer.Typer(help=(
    "The card-fraud detector on a synthetic stream, scored against its labels (`vigil demo`); "
    "`vigil demo servers` runs the multi-metric server detector on a simulated fleet.\n\n"
    "Generates a labelled stream (amount spikes, card testing, velocity bursts, and legitimate "
    "behaviour that looks odd), replays it at `--rate` events/s through the embedded engine, prints "
    "alerts as they fire, then a summary: precision and recall (overall and per pattern), latency from "
    "event emission to alert (p50/p95/p99) and throughput.\n\n"
    "Examples: `vigil demo` · `vigil demo --rate 0 --json` · `vigil demo --events 200000 --no-live` · "
    "`make kafka-up && vigil demo --kafka` · `vigil demo servers --json`"
), rich_markup_mode="markdown")


@app.callback(invoke_without_command=True)
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
    from vigil.cli.demo_fraud import run_demo, run_kafka_demo

    if ctx.invoked_subcommand is not None:
        return
    if events < 1 or users < 1:
        fail(ConfigError("must be >= 1", field="--events" if events < 1 else "--users", value=min(events, users)))
    from vigil.worker import check_out_dir

    try:
        check_out_dir(out)
    except ConfigError as exc:
        fail(exc)
    if kafka:
        try:
            run_kafka_demo(bootstrap=bootstrap, events=events, users=users, rate=rate or None, seed=seed,
                           as_json=json_, live=live and not json_, out_dir=str(out), show_alerts=show_alerts)
        except VigilError as exc:
            fail(exc, 1)
        return
    from vigil.cli.generate import say_users

    say_users(events, users)
    try:
        run_demo(events=events, users=users, rate=rate or None, seed=seed, as_json=json_, live=live and not json_,
                 out_dir=str(out), show_alerts=show_alerts)  # fmt: skip
    except ConfigError as exc:
        fail(exc)
    except VigilError as exc:
        fail(exc, 1)


@app.command("servers")
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


@app.command("feedback")
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
    from vigil.cli.feedback_demo import demo_feedback_cmd

    try:
        demo_feedback_cmd(hosts=hosts, days=days, step=step, seed=seed, window=window, k=k,
                          scheduled_jobs=scheduled_jobs, live_h=live_h, label_hours=label_hours,
                          max_factor=max_factor, headroom=headroom, retrain=retrain,
                          keep=str(keep) if keep else None, json_=json_)  # fmt: skip
    except VigilError as exc:
        fail(exc, 1)


@app.command("selfheal")
def demo_selfheal(
    seeds: Annotated[int, typer.Option(help="Seeds per fault type (each runs twice: with and without playbooks).")] = 2,
    first_seed: Annotated[int, typer.Option(help="The first seed.")] = 1,
    services: Annotated[int, typer.Option(help="Services in the simulated shop (8-42).")] = 16,
    rate: Annotated[float, typer.Option(help="Frontend requests/s at the daily peak.")] = 20.0,
    clean: Annotated[int, typer.Option(help="Fault-free runs (oddities only) that must trigger no action.")] = 1,
    temporal: Annotated[bool, typer.Option(
        "--temporal", help="Run the playbooks as Temporal workflows (a worker in this process; start a server "
        "with `make temporal-up`) instead of in-process.")] = False,
    address: Annotated[str, typer.Option(envvar="VIGIL_TEMPORAL_ADDRESS", help="With --temporal: the server.")] = (
        "127.0.0.1:7233"
    ),
    out: Annotated[Path, typer.Option(help="Folder for the incident and remediation stores (replaced each run).")] = (
        Path("vigil-out/selfheal")
    ),
    json_: Annotated[bool, typer.Option("--json", help="Print the summary as JSON on the last line.")] = False,
) -> None:
    """Faults in a simulated shop, detected, correlated, diagnosed and healed by playbooks; MTTR with and without.

    Each scenario is a simulated microservice shop (10-s windows, 20 minutes of normal traffic first) with one
    fault: a **bad deploy** (healed by the `rollback-bad-deploy` playbook) or a **noisy neighbour** slowing one
    zone's replicas of a service (healed by `drain-degraded-zone`, a traffic shift away from that zone), plus
    legitimate oddities (traffic spike, batch job, slow warm-up) that must not trigger any action. Per-service
    latency/error alerts are correlated into incidents (time, call-graph distance, shared traces); the RCA ranks
    causes 30 s after an incident opens; the playbooks call the simulator's control API over HTTP (idempotency
    keys, bearer token) and the shop really heals. Every scenario also runs without playbooks (people fix it at
    the fault's scripted end) for the manual MTTR.

    JSON keys: `rca_top1`, `rca_top3` (root service first / in the top 3, first diagnosis of each fault),
    `mttr_s.auto` / `mttr_s.manual` `{p50, p95}` (fault start → its incidents resolved: nothing firing for
    2 min), `fault_to_remediation_s` `{p50, p95}`, `actions_on_false_incidents`, and `runs` (every scenario).
    Afterwards: `vigil incidents list --store OUT/incidents.db`, `vigil remediation list --store OUT/remediation.db`,
    or both in the web console (each incident's subgraph, causes and actions):
    `vigil console --incidents OUT/incidents.db --remediation OUT/remediation.db`.

    Examples: `vigil demo selfheal` · `vigil demo selfheal --seeds 5 --json` ·
    `make temporal-up && vigil demo selfheal --temporal`
    """
    from vigil.cli.demo_selfheal import run_selfheal_demo

    if seeds < 1:
        fail(ConfigError("must be >= 1", field="--seeds", value=seeds))
    try:
        run_selfheal_demo(seeds=list(range(first_seed, first_seed + seeds)), services=services, rate=rate,
                          clean=clean, temporal_address=address if temporal else None, out=out, as_json=json_)
    except ConfigError as exc:
        fail(exc)
    except VigilError as exc:
        fail(exc, 1)


@app.command("services")
def demo_services(
    seeds: Annotated[int, typer.Option(help="Simulator runs (each injects every fault type once).")] = 3,
    first_seed: Annotated[int, typer.Option(help="Seed of the first run (training uses 1000 and up).")] = 1,
    services: Annotated[int, typer.Option(help="Services in the simulated shop (8-42).")] = 30,
    model: Annotated[Path | None, typer.Option(
        help="The GNN's ONNX file (default models/services-gnn.onnx when it exists; without one L3 falls back).")
    ] = None,  # fmt: skip
    per_fault_min: Annotated[float, typer.Option(help="Minutes of timeline per injected fault.")] = 15.0,
    json_: Annotated[bool, typer.Option("--json", help="Print the summary as JSON on the last line.")] = False,
) -> None:
    """The services app on the simulated shop: layered detection scored against the ground truth.

    Each run simulates a shop with every fault type once (latency, error burst, CPU hog, memory leak,
    dependency outage, bad deploy, network delay, noisy neighbour) and legitimate oddities (traffic spikes,
    scheduled batches, slow warm-ups after good deploys) that must not alert. Spans go through RED windows per
    service and edge, L1 SLO burn-rate and SLA rules, L2 Holt-Winters residuals and the L3 GNN, as the
    orchestrator decides per service. The summary gives recall per fault type, precision, detection delay
    (event time), false alerts per service-day, and the ablation L1 / L1+L2 / L1+L2+L3.

    Examples: `vigil demo services` · `vigil demo services --seeds 10 --json` ·
    `vigil train --services-gnn models/services-gnn.onnx && vigil demo services`
    """
    from vigil.cli.demo_services import run_services_demo

    try:
        run_services_demo(seeds=seeds, first_seed=first_seed, services=services, model=model,
                          per_fault_min=per_fault_min, as_json=json_)  # fmt: skip
    except VigilError as exc:
        fail(exc, 1)


def register(root: typer.Typer) -> None:
    """``vigil demo`` and its subcommands."""
    root.add_typer(app, name="demo")
