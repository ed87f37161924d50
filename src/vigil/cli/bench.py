"""``vigil bench``: speed and accuracy figures (never pass/fail), each against its comparison in the same run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vigil.cli.common import fail
from vigil.errors import VigilError

app = typer.Typer(help="Measure speed (results are figures, never pass/fail).", no_args_is_help=True)


@app.command("engine")
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
    from vigil.cli.bench_engine import run_engine_bench

    try:
        run_engine_bench(n=n, keys=keys, shared=shared, as_json=json_, out=out, repeats=repeats)
    except VigilError as exc:
        fail(exc, 1)


@app.command("nab")
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
        fail(exc, 1)


@app.command("servers")
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
        fail(exc, 1)


@app.command("detectors")
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
        fail(exc, 1)


@app.command("kafka")
def bench_kafka(
    json_: Annotated[bool, typer.Option("--json", help="Print the figures as JSON on the last line.")] = False,
    bootstrap: Annotated[str, typer.Option(help="The Kafka broker (`make kafka-up` starts one here).")
                         ] = "127.0.0.1:9092",  # fmt: skip
    pipeline: Annotated[Path, typer.Option(help="The fraud pipeline whose steps run (its source, checkpoints and "
                                                "alerts are pointed at the bench's topics).")
                        ] = Path("pipelines/fraud-kafka.yaml"),  # fmt: skip
    n: Annotated[int, typer.Option(help="Events in the workload (produced into a 4-partition topic).")] = 1_000_000,
    keys: Annotated[int, typer.Option(help="Keys (users) in the workload.")] = 10_000,
    rate: Annotated[float, typer.Option(help="Events/s of the paced stream the latency is measured on.")] = 50_000,
    latency_seconds: Annotated[float, typer.Option(help="Seconds of the paced stream per delivery mode.")] = 10.0,
    checkpoint_interval: Annotated[str, typer.Option(
        help="Checkpoint interval: exactly-once alerts become readable at each checkpoint.")] = "100ms",  # fmt: skip
    shared: Annotated[Path | None, typer.Option(help="Folder with workload.py (default ../shared/bench/perf).")
                      ] = None,  # fmt: skip
    out: Annotated[Path, typer.Option(help="Where to write the results JSON.")] = Path("bench/results/kafka.json"),
) -> None:
    """The fraud pipeline between real Kafka topics: events/s, creation-to-alert latency, recovery after SIGKILL.

    Produces the shared workload into fresh topics on the broker and runs the pipeline in a process of its
    own: `consume_eps` (exactly-once) and `consume_eps_alo` over the whole topic; `latency_ms` p50/p99 per
    delivery mode at a paced --rate, from the producer's send to the alert being readable (read_committed for
    exactly-once); `recovery_s` from a SIGKILL to the restarted worker having committed everything written
    before it. The topics are deleted afterwards. Needs a broker: `make kafka-up`.
    """
    from vigil.cli.bench_kafka import run_kafka_bench

    try:
        run_kafka_bench(bootstrap=bootstrap, shared=shared, pipeline=pipeline, n=n, keys=keys, rate=rate,
                        latency_s=latency_seconds, checkpoint_interval=checkpoint_interval, as_json=json_,
                        out=out)  # fmt: skip
    except VigilError as exc:
        fail(exc, 1)


def register(root: typer.Typer) -> None:
    """``vigil bench ...``."""
    root.add_typer(app, name="bench")
