"""`vigil generate services` (the microservice shop simulator) and `vigil rca` (root-cause ranking, offline)."""

from __future__ import annotations

import json
import os
import time
from typing import Annotated, Any

import typer
from rich.console import Console

err = Console(stderr=True, highlight=False, soft_wrap=True)

def generate_services_cmd(
    out: Annotated[str | None, typer.Option("--out", "-o", help="Directory to write to.")] = None,
    kafka: Annotated[str | None, typer.Option(help="Kafka bootstrap HOST:PORT to produce to instead.")] = None,
    otlp: Annotated[str | None, typer.Option(help="OTLP/HTTP base URL to POST to instead.")] = None,
    fmt: Annotated[str, typer.Option("--format", help="With --out: otlp-proto, jsonl or columns.")] = "otlp-proto",
    minutes: Annotated[float, typer.Option(help="Simulated minutes.")] = 60.0,
    services: Annotated[int, typer.Option(help="Services in the shop (8-42).")] = 30,
    seed: Annotated[int, typer.Option(help="Seed: the same seed writes the same bytes.")] = 7,
    faults: Annotated[str, typer.Option(help="all, none, or a comma list of fault types.")] = "all",
    rate: Annotated[float, typer.Option(help="Frontend requests/s at the daily peak.")] = 50.0,
    legit: Annotated[bool, typer.Option(help="Add legitimate oddities and good deploys.")] = True,
    truth: Annotated[str | None, typer.Option(help="Ground-truth JSON file (default DIR/ground_truth.json).")] = None,
    window: Annotated[int, typer.Option(help="Simulated seconds per step (60; 10 when steering).")] = 0,
    pace: Annotated[float, typer.Option(help="Simulated seconds per wall second; 0 = as fast as possible.")] = 0.0,
    control: Annotated[str | None, typer.Option(help="Serve the control API on HOST:PORT while running.")] = None,
    stepped: Annotated[bool, typer.Option(help="With --control: advance only on POST /step.")] = False,
    control_token_env: Annotated[str | None, typer.Option(
        help="With --control: POSTs need `Authorization: Bearer $NAME` (the token is read from this variable).")
    ] = None,
    topics: Annotated[str, typer.Option(help="With --kafka: traces,metrics topics.")] = "otlp_spans,otlp_metrics",
) -> None:  # fmt: skip
    """Simulate a microservice shop and write its OpenTelemetry traces and metrics, with ground truth.

    A shop of `--services` services (frontend, cart, checkout, payment, shipping, currency, catalog,
    recommendation, ads, email, ..., Redis, MySQL, Postgres, MongoDB, Elasticsearch, Kafka) under a daily traffic
    rhythm, with retries, timeouts and deploys; one fault of each `--faults` type (latency, error_burst, cpu_hog,
    memory_leak, dependency_outage, bad_deploy, network_delay, noisy_neighbour) and legitimate oddities (a traffic
    spike, a scheduled batch, a slow warm-up after a good deploy). Simulated time runs far faster than real time
    unless `--pace` slows it down; the same seed writes the same bytes.

    Destinations (one): `--out DIR` (`--format otlp-proto`: traces.otlp / metrics.otlp, 4-byte big-endian
    length-delimited OTLP requests as the Collector's file exporter writes; `jsonl`: OTLP/JSON, one request a line;
    `columns`: spans.npz / metrics.npz / names.json), `--kafka HOST:PORT` (topics otlp_spans / otlp_metrics, one
    OTLP protobuf request per message, like the Collector's Kafka exporter) or `--otlp URL` (OTLP/HTTP POST to
    URL/v1/traces and URL/v1/metrics). The ground truth (faults, oddities, deploys, actions) goes to
    DIR/ground_truth.json, or `--truth FILE`.

    `--control HOST:PORT` serves the control API (rollback, restart, scale, shift-traffic; see
    vigil.apps.services.sim.control) while the simulation runs, paced by `--pace` (e.g. 60: an hour in a minute),
    or stepped by `POST /step` with `--stepped`. Actions sent with an `Idempotency-Key` header act once per key
    (a retry gets the first answer back); `--control-token-env NAME` makes every POST need the bearer token
    held in the environment variable NAME.

    Examples: `vigil generate services --minutes 60 --services 30 --seed 7 --out sim/` ·
    `vigil generate services --faults latency,bad_deploy --format columns --out sim/` ·
    `vigil generate services --kafka 127.0.0.1:9092 --pace 60` ·
    `vigil generate services --otlp http://127.0.0.1:4318 --control 127.0.0.1:8777 --pace 10`
    """
    from vigil.apps.services.sim import FAULT_TYPES, ServiceSimSpec, ServiceSimulator
    from vigil.apps.services.sim.control import SimRunner, control_app
    from vigil.apps.services.sim.emit import FORMATS, FileSink, KafkaSink, OtlpHttpSink
    from vigil.errors import ConfigError

    def fail(exc: Exception) -> None:
        err.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(2)

    dests = [d for d in (out, kafka, otlp) if d]
    if len(dests) != 1:
        fail(ConfigError("give exactly one of --out DIR, --kafka HOST:PORT, --otlp URL", field="destination",
                         value=dests or None))  # fmt: skip
    if fmt not in FORMATS:
        fail(ConfigError(f"must be one of {', '.join(FORMATS)}", field="--format", value=fmt))
    chosen = FAULT_TYPES if faults == "all" else () if faults in ("none", "") else tuple(
        f.strip() for f in faults.split(",") if f.strip())  # fmt: skip
    bad = [f for f in chosen if f not in FAULT_TYPES]
    if bad:
        fail(ConfigError(f"unknown fault types {bad}", field="--faults", value=faults,
                         hint=f"choose from all, none, {', '.join(FAULT_TYPES)}"))  # fmt: skip
    steering = control is not None
    token = None
    if control_token_env:
        token = os.environ.get(control_token_env)
        if not token:
            fail(ConfigError("names an environment variable that is not set or empty", field="--control-token-env",
                             value=control_token_env))  # fmt: skip
    try:
        spec = ServiceSimSpec(services=services, minutes=minutes, seed=seed, peak_rate=rate, faults=chosen,
                              legit=legit, window_s=window or (10 if steering else 60))  # fmt: skip
        sim = ServiceSimulator(spec)
        if out:
            sink: Any = FileSink(sim, out, fmt)
        elif kafka:
            t_spans, _, t_metrics = topics.partition(",")
            sink = KafkaSink(sim, kafka, t_spans or "otlp_spans", t_metrics or "otlp_metrics")
        else:
            sink = OtlpHttpSink(sim, str(otlp))
    except (ValueError, OSError) as exc:
        fail(ConfigError(str(exc), field="services"))
        return
    truth_path = truth or (os.path.join(out, "ground_truth.json") if out else "services-ground-truth.json")
    runner = SimRunner(sim, [sink], mode="stepped" if stepped else "paced")
    server = None
    if steering:
        from vigil.console.server import serve_console

        host, _, port = str(control).rpartition(":")
        server, url = serve_console(control_app(runner, token=token), host or "127.0.0.1", int(port or 0))
        err.print(f"control API at {url} (POST /actions/rollback|restart|scale|shift-traffic"
                  + (", POST /step" if stepped else "") + ")")  # fmt: skip
    t0 = time.perf_counter()
    n_windows = int(round(minutes * 60 / spec.window_s))
    try:
        if stepped:
            assert server is not None
            err.print("stepped: waiting for POST /step (Ctrl-C ends)")
            while not sim.done:
                time.sleep(0.2)
        else:
            from rich.progress import Progress

            with Progress(console=err, transient=True) as bar:
                task = bar.add_task("simulating", total=n_windows)
                runner.on_window = lambda w: bar.update(task, advance=1, description=f"{runner.spans:,} spans")
                runner.run_paced(pace)
    except KeyboardInterrupt:
        err.print("interrupted: writing what was simulated")
    finally:
        runner.close()
        if server is not None:
            server.stop()
        with open(truth_path, "w", encoding="utf-8") as f:
            json.dump(sim.ground_truth(), f, indent=1)
    dt = time.perf_counter() - t0
    where = out or kafka or otlp
    err.print(f"simulated {(sim.now_ms - spec.start_ms) / 60_000:.0f} min of {services} services: "
              f"{runner.spans:,} spans in {dt:.1f} s ({runner.spans / max(dt, 1e-9):,.0f} spans/s) to {where}; "
              f"{len(sim.plan.faults)} faults, {len(sim.plan.oddities)} legitimate oddities; truth in {truth_path}")
