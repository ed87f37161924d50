"""``vigil generate``: synthetic streams with labelled anomalies (card transactions, a server fleet)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from vigil.cli.common import check_output_file, err, fail
from vigil.errors import ConfigError, VigilError

app = typer.Typer(help="Write synthetic streams with labelled anomalies.", no_args_is_help=True)


@app.command("transactions")
def generate_transactions_cmd(
    out: Annotated[str, typer.Option("--out", "-o", help="File to write, or - for stdout.")] = "-",
    to: Annotated[str | None, typer.Option(
        "--to", help="Produce to Kafka instead: kafka://HOST:PORT/TOPIC (keyed by user).")] = None,  # fmt: skip
    rate: Annotated[float, typer.Option(help="With --to: events/s to pace at; 0 = as fast as possible.")] = 0,
    events: Annotated[int, typer.Option(help="How many transactions.")] = 1_000_000,
    users: Annotated[int, typer.Option(help="How many card holders.")] = 20_000,
    seed: Annotated[int, typer.Option(help="Seed: the same seed writes the same bytes.")] = 7,
    fmt: Annotated[str, typer.Option("--format", help="jsonl or csv.")] = "jsonl",
    cashout_share: Annotated[float, typer.Option(
        help="Share of events in test_then_cashout episodes (tiny payments, then a large one within 10 min: "
             "what the fraud pipeline's `pattern` step looks for); 0 leaves them out.")] = 0.004,  # fmt: skip
) -> None:
    """Write a synthetic card-transaction stream with labelled fraud.

    One record per line: `user`, `ts` (event time, epoch ms), `amount`, `merchant`, `category`,
    `country`, `txn_id`, `label` (1 = fraud) and `pattern` (amount_spike, card_testing,
    velocity_burst, test_then_cashout, or the legitimate large_purchase, bursty_shopper, travel, normal); CSV adds
    `arrival_ms` and `episode`. Records arrive out of event-time order by up to 2 s, as they would
    from many terminals. Exactly `--events` records; from 300 events on, every pattern is in them.

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
        fail(ConfigError("must be 'jsonl' or 'csv'", field="--format", value=fmt))
    if events < 1 or users < 1:
        fail(ConfigError("must be >= 1", field="--events" if events < 1 else "--users", value=min(events, users)))
    if not 0 <= cashout_share < 0.5:
        fail(ConfigError("must be in [0, 0.5)", field="--cashout-share", value=cashout_share))
    try:
        if to is None and out != "-":
            check_output_file(out, "--out")
        spec = TransactionSpec(events=events, users=users, seed=seed, test_then_cashout_share=cashout_share)
        cols = generate_transactions(spec)
    except ValueError as exc:  # too few card holders for the events
        fail(ConfigError(str(exc), field="--users", value=users))
    except ConfigError as exc:
        fail(exc)
    s = summary(cols)
    say_users(events, users)
    if to is not None:
        from rich.progress import Progress

        from vigil.io.kafka import parse_kafka_url
        from vigil.io.kafka_sink import produce_records

        try:
            bootstrap, topic = parse_kafka_url(to)
        except ConfigError as exc:
            fail(exc)
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
            fail(ConfigError("needs a file for csv", field="--out", value=out))
        write_csv(cols, out)
    if out != "-":
        err.print(f"wrote {s['events']:,} transactions ({s.get('fraud_share', 0):.1%} fraud) to {out}")


def say_users(events: int, users: int) -> None:
    """Say so when fewer card holders take part than asked (a short stream: each needs a history)."""
    from vigil.io.generators.transactions import TransactionSpec, active_users

    active = active_users(TransactionSpec(events=events, users=users))
    if active < users:
        err.print(f"{active:,} of the {users:,} card holders take part: {events:,} events are about "
                  f"{events // active:,} per holder, the least that gives them the history an anomaly stands out from")


@app.command("fleet")
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
        for path, option in ((out, "--out"), (labels, "--labels")):
            if path is not None and path != "-" and to is None:
                check_output_file(path, option)
        generate_fleet(hosts=hosts, days=days, step_s=step, seed=seed, out=out, to=to, labels=labels, err=err,
                       scheduled_jobs=scheduled_jobs)
    except (VigilError, ValueError) as exc:
        fail(exc if isinstance(exc, VigilError) else ConfigError(str(exc), field="fleet"))


from vigil.cli.services import generate_services_cmd  # noqa: E402 - the microservice shop simulator

app.command("services")(generate_services_cmd)


def register(root: typer.Typer) -> None:
    """``vigil generate ...``."""
    root.add_typer(app, name="generate")
