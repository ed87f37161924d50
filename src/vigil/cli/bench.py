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


@app.command("multivariate")
def bench_multivariate(
    config: Annotated[list[str] | None, typer.Option("--config", help="Detector config (path or bundled name); "
                                                     "repeat for several. Default: smap_msl.")] = None,  # fmt: skip
    data: Annotated[Path | None, typer.Option(help="SMAP/MSL folder (default ../shared/datasets/smap_msl).")] = None,
    channel: Annotated[list[str] | None, typer.Option(
        "--channel", help="Only these channels (not comparable).")] = None,  # fmt: skip
    out: Annotated[Path, typer.Option(help="Where to write the results JSON.")] = Path(
        "bench/results/multivariate.json"
    ),
    json_: Annotated[bool, typer.Option("--json", help="Print the summary as JSON on the last line.")] = False,
) -> None:
    """Detector configs on the 82 SMAP/MSL telemetry channels, beside scikit-learn's Isolation Forest and random.

    Macro best-F1 without point adjustment, AUC-PR, AUC-ROC, point-adjusted F1 (inflated) and P/R/F1 at
    each config's own default threshold; causal (warm-up on the training split, prequential on the test split).
    """
    from vigil.cli.bench_multivariate import run_multivariate_bench

    try:
        run_multivariate_bench(config or None, data_dir=data, channels=channel or None, out=out, as_json=json_)
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


@app.command("alerts")
def bench_alerts(
    json_: Annotated[bool, typer.Option("--json", help="Print the figures as JSON on the last line.")] = False,
    holders: Annotated[int, typer.Option(help="Card holders in the storm (6 payments each).")] = 100_000,
    console_alerts: Annotated[int, typer.Option(help="Alerts in the store the console is measured on.")] = 1_000_000,
    console_store: Annotated[Path | None, typer.Option(
        help="Reuse this store for the console (written there first if missing).")] = None,  # fmt: skip
    out: Annotated[Path, typer.Option(help="Where to write the results JSON.")] = Path("bench/results/alerts.json"),
) -> None:
    """The alert path when everything alerts, and the console over a million stored alerts.

    The manager's alerts/s, the storm's events/s and peak RSS against the same stream without alerts, and the
    console's API latency (see ``vigil.cli.bench_alerts``).
    """
    from vigil.cli.bench_alerts import run_alerts_bench

    try:
        run_alerts_bench(holders=holders, console_alerts=console_alerts, console_store=console_store, as_json=json_,
                         out=out)  # fmt: skip
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


@app.command("flink")
def bench_flink(
    json_: Annotated[bool, typer.Option("--json", help="Print the figures as JSON on the last line.")] = False,
    bootstrap: Annotated[str, typer.Option(help="The Kafka broker (`make kafka-up` starts one here).")
                         ] = "127.0.0.1:9092",  # fmt: skip
    pipeline: Annotated[Path, typer.Option(help="The fraud pipeline whose steps run on both runtimes (its source, "
                                                "checkpoints and alerts are pointed at the bench's topics).")
                        ] = Path("pipelines/fraud-flink.yaml"),  # fmt: skip
    n: Annotated[int, typer.Option(help="Events in the workload (produced into a 4-partition topic).")] = 1_000_000,
    keys: Annotated[int, typer.Option(help="Keys (users) in the workload.")] = 10_000,
    parallelism: Annotated[int, typer.Option(min=1, help="Parallelism of both Flink jobs.")] = 1,
    shared: Annotated[Path | None, typer.Option(help="Folder with workload.py (default ../shared/bench/perf).")
                      ] = None,  # fmt: skip
    out: Annotated[Path, typer.Option(help="Where to write the results JSON.")] = Path("bench/results/flink.json"),
) -> None:
    """Events/s per core of the fraud pipeline: embedded, as a Flink job, and a plain per-event PyFlink job.

    Starts a standalone Flink cluster of its own (flink.sh, free ports) for the two Flink jobs and stops it after;
    per-core figures are events / CPU seconds of the TaskManagers (and their Python workers) during each job, so
    other load on the machine does not count. Keys: `embedded_eps`, `flink_eps_per_core`,
    `per_event_eps_per_core`, `ratio_vs_per_event`. Needs `make kafka-up` and `make flink-venv`.
    """
    from vigil.cli.bench_flink import run_flink_bench

    try:
        run_flink_bench(bootstrap=bootstrap, shared=shared, pipeline=pipeline, n=n, keys=keys, parallelism=parallelism,
                        as_json=json_, out=out)  # fmt: skip
    except VigilError as exc:
        fail(exc, 1)


@app.command("rca")
def bench_rca(
    json_: Annotated[bool, typer.Option("--json", help="Print the figures as JSON (one line).")] = False,
    seeds: Annotated[int, typer.Option(help="Incidents per fault type (one seed each).")] = 10,
    first_seed: Annotated[int, typer.Option(help="First seed (the method was tuned on seeds >= 1000).")] = 1,
    services: Annotated[str, typer.Option(help="Shop sizes, cycled over the seeds.")] = "20,30,40",
    faults: Annotated[str | None, typer.Option(help="Fault types, comma-separated (default: all eight).")] = None,
    jobs: Annotated[int, typer.Option(help="Incidents run in this many processes.")] = 1,
    out: Annotated[Path, typer.Option(help="Where to write the results JSON.")] = Path("bench/results/rca.json"),
) -> None:
    """Root-cause ranking on the services simulator: top-1/top-3/kind per fault type, time per incident.

    Every fault type (latency, error_burst, cpu_hog, memory_leak, dependency_outage, bad_deploy,
    network_delay, noisy_neighbour) is injected --seeds times, with traffic spikes, a batch job and slow
    warm-ups after good deploys around it, and ranked 3 minutes after injection (`inject`) and 1 minute after
    a plain detector's first alert (`alert`). Latency: `rank_causes` alone, and series-from-spans + rank;
    p95 overall and at 40 services. Targets (top-1 >= 0.8, top-3 >= 0.95 per fault type, p95 <= 2 s at 40
    services) are shown, not enforced. About 15-30 s per incident on one core.
    """
    from vigil.apps.services.sim import FAULT_TYPES
    from vigil.cli.bench_rca import run_rca_bench
    from vigil.errors import ConfigError

    chosen = FAULT_TYPES if faults is None else tuple(f.strip() for f in faults.split(",") if f.strip())
    bad = [f for f in chosen if f not in FAULT_TYPES]
    if bad:
        fail(ConfigError(f"unknown fault types {bad}; choose from {', '.join(FAULT_TYPES)}", field="--faults",
                         value=faults), 2)  # fmt: skip
    try:
        sizes = [int(x) for x in services.split(",") if x.strip()]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 8 or max(sizes) > 42:
        fail(ConfigError("give shop sizes between 8 and 42, comma-separated", field="--services", value=services), 2)
    if seeds < 1 or jobs < 1:
        fail(ConfigError("must be at least 1", field="--seeds" if seeds < 1 else "--jobs",
                         value=seeds if seeds < 1 else jobs), 2)  # fmt: skip
    run_rca_bench(seeds=seeds, first_seed=first_seed, sizes=sizes, faults=chosen, jobs=jobs, as_json=json_, out=out)


@app.command("traces")
def bench_traces(
    json_: Annotated[bool, typer.Option("--json", help="Print the figures as JSON on the last line.")] = False,
    minutes: Annotated[float, typer.Option(help="Simulated minutes of traces (~190k spans a minute).")] = 10.0,
    rate: Annotated[float, typer.Option(help="Frontend requests/s at the daily peak.")] = 200.0,
    services: Annotated[int, typer.Option(help="Services in the shop (8-42).")] = 30,
    seed: Annotated[int, typer.Option(help="The simulator's seed.")] = 7,
    repeats: Annotated[int, typer.Option(help="Timed passes; the best is reported.")] = 3,
    out: Annotated[Path, typer.Option(help="Where to write the results JSON.")] = Path("bench/results/traces.json"),
) -> None:
    """`spans_per_s`: OTLP protobuf -> span columns -> RED windows, service graph and verdicts, on one core.

    The simulator's traces (`vigil generate services`) as 8,192-span ExportTraceServiceRequest messages (not
    timed), then per request the otlp source's decoder and the service_graph step with the watermark 5 s
    behind the data. With the services app's layered detection in the build, also `spans_per_s_layered` (the
    decoded rows through its L1/L2/L3 verdicts) and `gnn_ms` (p50, p99 per graph snapshot); else null.
    Example: `vigil bench traces --json --minutes 5`.
    """
    from vigil.cli.bench_traces import run_traces_bench

    try:
        run_traces_bench(minutes=minutes, rate=rate, services=services, seed=seed, repeats=repeats, as_json=json_,
                         out=out)  # fmt: skip
    except VigilError as exc:
        fail(exc, 1)


def register(root: typer.Typer) -> None:
    """``vigil bench ...``."""
    root.add_typer(app, name="bench")
