"""``vigil flink run|list|status|savepoint|stop|cancel``: pipelines as Apache Flink jobs on a real cluster."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from vigil.cli.common import fail, strict_json
from vigil.errors import VigilError

app = typer.Typer(
    name="flink",
    help=(
        "Run a pipeline file as an Apache Flink job — the same YAML `vigil run` runs, the same steps and alerts — "
        "and manage it on the cluster.\n\n"
        "A local cluster: `make flink-up` (1 JobManager, 2 TaskManagers on 127.0.0.1:8081; `make flink-down` stops "
        "it). Then: `vigil flink run pipelines/fraud-flink.yaml --parallelism 2`, `vigil flink list`, "
        "`vigil flink stop JOB_ID` (with a savepoint), `vigil flink run ... --from-savepoint PATH --parallelism 4` "
        "(rescaled). The pipeline's source and alerts must be Kafka topics; run `vigil alertmanager --from "
        "kafka://HOST:PORT/ALERTS` beside the job for grouping, silences, notifiers and the store."
    ),
    no_args_is_help=True,
    rich_markup_mode="markdown",
)

JobManager = Annotated[str | None, typer.Option(
    "--jobmanager", "-m", show_default=False,
    help="The JobManager's REST address HOST:PORT (default 127.0.0.1:$VIGIL_FLINK_REST_PORT, else :8081).",
)]  # fmt: skip
Json = Annotated[bool, typer.Option("--json", help="One JSON object on stdout instead of text.")]


def _rest(jobmanager: str | None):  # noqa: ANN202 - a client of the integrations layer
    from vigil.integrations.flink.client import Rest, default_jobmanager

    return Rest(jobmanager or default_jobmanager())


@app.command()
def run(
    pipeline: Annotated[
        Path,
        typer.Argument(
            help="The pipeline YAML (a Kafka source, alerts to a Kafka topic).", exists=True, dir_okay=False
        ),
    ],  # fmt: skip
    parallelism: Annotated[
        int | None,
        typer.Option(
            "--parallelism", "-p", min=1, show_default=False, help="Parallel subtasks (default: the cluster's)."
        ),
    ] = None,
    jobmanager: JobManager = None,
    local: Annotated[
        bool,
        typer.Option(
            "--local",
            help=(
                "Run in a local Flink mini-cluster in this terminal instead (blocks until the job ends; "
                "for trying a file, not for production)."
            ),
        ),
    ] = False,  # fmt: skip
    from_savepoint: Annotated[
        str | None,
        typer.Option(
            "--from-savepoint",
            "-s",
            show_default=False,
            help=(
                "Resume from this savepoint or retained checkpoint (a path from `vigil flink stop`); "
                "the parallelism may differ (up to --max-parallelism)."
            ),
        ),
    ] = None,  # fmt: skip
    batch_window: Annotated[
        int,
        typer.Option(
            "--batch-window-ms",
            min=1,
            help=("Event-time window of one micro-batch per key bucket: longer = fewer Python calls, later alerts."),
        ),
    ] = 1000,
    buckets: Annotated[
        int,
        typer.Option(
            min=1,
            max=32768,
            help="Key buckets (Flink's keys; each holds many keys' state). Several times the parallelism.",
        ),
    ] = 128,  # fmt: skip
    max_parallelism: Annotated[
        int,
        typer.Option(
            min=1, help="Fixes Flink's key groups: the highest parallelism a savepoint of this job can be resumed at."
        ),
    ] = 128,  # fmt: skip
    mode: Annotated[
        str,
        typer.Option(
            help="PyFlink execution mode: `thread` (CPython inside the TaskManager) or "
            "`process` (a Python worker per task)."
        ),
    ] = "thread",  # fmt: skip
    state_backend: Annotated[
        str | None, typer.Option(show_default=False, help=("`hashmap` or `rocksdb` (default: the cluster's)."))
    ] = None,  # fmt: skip
    checkpoint_dir: Annotated[
        str | None,
        typer.Option(
            show_default=False,
            help=("Where checkpoints go, e.g. file:///var/lib/flink/checkpoints (default: the cluster's)."),
        ),
    ] = None,
    checkpoint_interval_ms: Annotated[
        int | None,
        typer.Option(
            show_default=False,
            min=100,
            help=(
                "Checkpoint (and exactly-once commit) interval; default: the file's `checkpoints.interval`, else 5000."
            ),
        ),
    ] = None,  # fmt: skip
    idle_timeout_ms: Annotated[
        int | None,
        typer.Option(
            show_default=False,
            min=0,
            help=(
                "A source partition silent this long stops holding the watermark back (default: the file's "
                "`event_time.idle_timeout`; 0: never)."
            ),
        ),
    ] = None,  # fmt: skip
    bounded: Annotated[
        bool,
        typer.Option(
            "--bounded", help=("Stop at the offsets that are the latest when the job starts (tests, benchmarks).")
        ),
    ] = False,
    key_from: Annotated[
        str,
        typer.Option(
            help="`value`: find the key in the record; `record`: the Kafka record key "
            "(when producers key records by entity)."
        ),
    ] = "value",  # fmt: skip
    bootstrap: Annotated[
        str | None,
        typer.Option(
            show_default=False,
            help="Kafka bootstrap HOST:PORT for every topic of the job instead of the file's (e.g. kafka:29092).",
        ),
    ] = None,
    name: Annotated[
        str | None, typer.Option(show_default=False, help="The job's name (default vigil-<pipeline>).")
    ] = None,  # fmt: skip
    as_json: Json = False,
) -> None:
    """Submit a pipeline file to a Flink cluster as a job (detached); prints the job id.

    The job reads the pipeline's Kafka topic, makes micro-batches per key bucket and event-time window in the JVM,
    runs the pipeline's own steps over them in Python (each key's state in Flink keyed state, checkpointed), and
    writes alerts, late events and dead letters to Kafka — exactly-once when the file says
    `delivery: exactly-once`.

    Examples: `vigil flink run pipelines/fraud-flink.yaml -p 2` ·
    `vigil flink run pipelines/fraud-flink.yaml -m jobmanager:8081 -s file:///data/savepoints/savepoint-1a2b -p 4`
    """
    from vigil.integrations.flink import client
    from vigil.integrations.flink.options import FlinkOptions

    try:
        opt = FlinkOptions(batch_window_ms=batch_window, buckets=buckets, max_parallelism=max_parallelism,
                           mode=mode, checkpoint_interval_ms=checkpoint_interval_ms,  # type: ignore[arg-type]
                           checkpoint_dir=checkpoint_dir, state_backend=state_backend,  # type: ignore[arg-type]
                           key_from=key_from, bounded=bounded, idle_timeout_ms=idle_timeout_ms,  # type: ignore[arg-type]
                           job_name=name, bootstrap=bootstrap)  # fmt: skip
        if local:
            if jobmanager is not None or from_savepoint is not None:
                raise VigilError("--local runs a mini-cluster of its own: it takes neither --jobmanager nor "
                                 "--from-savepoint")  # fmt: skip
            raise typer.Exit(client.run_local(str(pipeline), parallelism=parallelism, options=opt))
        jm = jobmanager or client.default_jobmanager()
        jid = client.submit(str(pipeline), jobmanager=jm, parallelism=parallelism, options=opt,
                            savepoint=from_savepoint)  # fmt: skip
    except VigilError as exc:
        fail(exc)
    if as_json:
        print(strict_json({"id": jid, "jobmanager": jm, "pipeline": str(pipeline)}))
    else:
        print(f"submitted {pipeline} as job {jid} to {jm}; `vigil flink status {jid}` shows it")


@app.command("list")
def list_(jobmanager: JobManager = None, as_json: Json = False) -> None:
    """The cluster's jobs, newest first: id, state, name, duration."""
    try:
        jobs = _rest(jobmanager).jobs()
    except VigilError as exc:
        fail(exc)
    if as_json:
        print(
            strict_json(
                {
                    "jobs": [
                        {
                            "id": j["jid"],
                            "name": j["name"],
                            "state": j["state"],
                            "duration_s": round(int(j.get("duration", 0)) / 1000, 1),
                        }
                        for j in jobs
                    ]
                }
            )
        )
        return
    if not jobs:
        print("no jobs")
    for j in jobs:
        print(f"{j['jid']}  {j['state']:<10} {int(j.get('duration', 0)) / 1000:>8.1f}s  {j['name']}")


@app.command()
def status(job_id: Annotated[str, typer.Argument(help="The job id (`vigil flink list`).")],
           jobmanager: JobManager = None, as_json: Json = False) -> None:  # fmt: skip
    """A job's state, parallelism, records read, checkpoints (and the latest one's path) and last failure."""
    from vigil.integrations.flink import client

    try:
        st = client.status(_rest(jobmanager), job_id)
    except VigilError as exc:
        fail(exc)
    if as_json:
        print(strict_json(st))
        return
    for k, v in st.items():
        print(f"{k:<13} {json.dumps(v) if isinstance(v, dict) else v}")


@app.command()
def savepoint(job_id: Annotated[str, typer.Argument(help="The job id.")], jobmanager: JobManager = None,
              directory: Annotated[str | None, typer.Option(show_default=False, help=(
                  "Where to write it (default: the cluster's execution.checkpointing.savepoint-dir)."))] = None,
              as_json: Json = False) -> None:  # fmt: skip
    """Take a savepoint of a running job (it keeps running); prints its path."""
    try:
        path = _rest(jobmanager).savepoint(job_id, directory=directory)
    except VigilError as exc:
        fail(exc)
    print(strict_json({"id": job_id, "savepoint": path}) if as_json else path)


@app.command()
def stop(job_id: Annotated[str, typer.Argument(help="The job id.")], jobmanager: JobManager = None,
         directory: Annotated[str | None, typer.Option(show_default=False, help=(
             "Where to write the savepoint (default: the cluster's savepoint dir)."))] = None,
         drain: Annotated[bool, typer.Option(help=(
             "Emit the maximum watermark first (closes every window: for a job that will not be resumed)."))] = False,
         as_json: Json = False) -> None:  # fmt: skip
    """Stop a job with a savepoint (exactly-once: pending transactions are committed); prints its path.

    Resume it, at any parallelism up to --max-parallelism: `vigil flink run FILE --from-savepoint PATH -p N`.
    """
    try:
        path = _rest(jobmanager).savepoint(job_id, directory=directory, stop=True, drain=drain)
    except VigilError as exc:
        fail(exc)
    print(strict_json({"id": job_id, "savepoint": path}) if as_json else path)


@app.command()
def cancel(job_id: Annotated[str, typer.Argument(help="The job id.")], jobmanager: JobManager = None) -> None:
    """Cancel a job without a savepoint (its retained checkpoints stay; uncommitted alerts are discarded)."""
    try:
        _rest(jobmanager).cancel(job_id)
    except VigilError as exc:
        fail(exc)
    print(f"cancelled {job_id}")


def register(root: typer.Typer) -> None:
    """Add ``vigil flink`` to the root command."""
    root.add_typer(app)
