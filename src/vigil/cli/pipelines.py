"""``vigil run``, ``vigil validate`` and ``vigil apply``: run a pipeline file, check it, change it live."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from vigil.cli.common import check_port, check_port_free, err, fail, fail_unexpected
from vigil.errors import ConfigError, VigilError


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
        fail(exc)


def validate(pipeline: Annotated[Path, typer.Argument(help="Pipeline YAML file.")]) -> None:
    """Check a pipeline file without running it (every error names the step, field and value)."""
    from vigil.config import load_pipeline

    try:
        p = load_pipeline(str(pipeline))
    except ConfigError as exc:
        fail(exc)
    err.print(f"[green]ok[/]: pipeline `{p.name}` with steps {', '.join(s.name for s in p.steps)}")


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
    console_port: Annotated[int | None, typer.Option(show_default=False, help=(
        "Port of the console; 0: any free port. Default 8765; if it is taken, any free port, while a port given "
        "here must be free."))] = None,  # fmt: skip
    fresh: Annotated[bool, typer.Option(help=(
        "Move the outputs, alert store and checkpoints of an earlier run to `<out>/<name>/previous/<time>/` first, "
        "instead of adding to them (the configuration history and the feedback bars stay)."))] = False,  # fmt: skip
) -> None:
    """Run a pipeline on the embedded runtime until its source ends (Ctrl-C stops cleanly).

    With `checkpoints:` in the file, a restarted run resumes from the last checkpoint; with
    `delivery: exactly-once`, Kafka outputs and source offsets commit together at each checkpoint.
    Without checkpoints a run reads its input from the start and adds to the outputs of an earlier run
    (it says so; `--fresh` moves them aside first). One run of a pipeline at a time: a second one, with the
    same alert store, is refused.
    Prometheus metrics are served at http://127.0.0.1:9464/metrics (`--metrics-port`, `--no-metrics`);
    deploy/grafana/vigil-dashboard.json is a Grafana dashboard over them.

    Example: `vigil generate transactions -o tx.jsonl && vigil run pipelines/fraud.yaml`
    """
    from vigil.cli.runview import ProgressView, run_with_view
    from vigil.errors import TransactionAborted
    from vigil.worker import Worker, settle_gc

    check_port(metrics_port, "--metrics-port")
    check_port(console_port, "--console-port")
    if console and console_port is not None:
        check_port_free(console_port, "--console-port")  # before anything is written; only the default may move
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
                fail(exc)
            err.print(f"[yellow]no metrics endpoint[/]: {exc}")  # e.g. a second run on this machine
            registry = None
    attempt = 0
    try:
        while True:
            view = ProgressView(err, quiet)
            ui_port = (8765 if console_port is None else console_port) if console else None
            try:
                worker = Worker.from_file(pipeline, out_dir=out, overrides={"stop_at_end": True} if until_end else None,
                                          metrics_registry=registry, console_port=ui_port,
                                          console_may_move=console_port is None, progress=view.update,
                                          say=err.print, fresh=fresh and attempt == 0)  # fmt: skip
            except ConfigError as exc:
                fail(exc)
            except VigilError as exc:  # e.g. the source can't be read
                fail(exc, 1)
            settle_gc()
            try:
                run_with_view(worker, view, console=err)
                return
            except TransactionAborted as exc:
                if attempt >= restarts:
                    fail(exc, 1)
                attempt += 1
                err.print(f"[yellow]{exc}[/]; restarting from the last checkpoint ({attempt}/{restarts})")
            except ConfigError as exc:  # e.g. an explicit --console-port that is taken
                fail(exc)
            except VigilError as exc:
                fail(exc, 1)
            except Exception as exc:  # noqa: BLE001 - a bug: one line, not a traceback (VIGIL_TRACEBACK=1 shows it)
                fail_unexpected(exc)
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()


def register(root: typer.Typer) -> None:
    """``vigil run``, ``vigil validate``, ``vigil apply``."""
    root.command("run")(run)
    root.command("validate")(validate)
    root.command("apply")(apply_)
