"""``vigil feedback`` (the learned per-key bars) and ``vigil retrain`` (refit a model with operators' labels)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from vigil.cli.common import err, fail
from vigil.errors import VigilError

app = typer.Typer(help="The per-key bars learned from operators' true/false-positive labels.",
                           no_args_is_help=True)
_FbDb = Annotated[Path, typer.Option("--db", help=(
    "The pipeline's alert store, by convention `vigil-out/<pipeline>/alerts.db` (the bars live beside it, in "
    "`feedback/`)."))]


@app.command("show")
def feedback_show(db: _FbDb = Path("vigil-out/alerts.db")) -> None:
    """The bars in force and the last versions (learned by the running pipeline every 30 s from new labels)."""
    from vigil.cli.retrain import feedback_admin_cmd

    try:
        feedback_admin_cmd("show", db=str(db), version=None, who="", why="", console=Console(highlight=False))
    except VigilError as exc:
        fail(exc)


@app.command("rollback")
def feedback_rollback(
    db: _FbDb = Path("vigil-out/alerts.db"),
    version: Annotated[str | None, typer.Option(help="The version to go back to (default: the previous).")] = None,
    who: Annotated[str, typer.Option(help="Recorded in the history.")] = os.environ.get("USER", "operator"),
    why: Annotated[str, typer.Option(help="Recorded in the history.")] = "",
) -> None:
    """Put an earlier set of bars back in force (the running pipeline picks it up at its next learning pass)."""
    from vigil.cli.retrain import feedback_admin_cmd

    try:
        feedback_admin_cmd("rollback", db=str(db), version=version, who=who, why=why,
                           console=Console(highlight=False))  # fmt: skip
    except VigilError as exc:
        fail(exc)


@app.command("clear")
def feedback_clear(
    db: _FbDb = Path("vigil-out/alerts.db"),
    who: Annotated[str, typer.Option(help="Recorded in the history.")] = os.environ.get("USER", "operator"),
    why: Annotated[str, typer.Option(help="Recorded in the history.")] = "",
) -> None:
    """Drop every learned bar (recorded as a version, so it can be rolled back too)."""
    from vigil.cli.retrain import feedback_admin_cmd

    try:
        feedback_admin_cmd("clear", db=str(db), version=None, who=who, why=why, console=Console(highlight=False))
    except VigilError as exc:
        fail(exc)


def retrain_(
    db: Annotated[Path | None, typer.Option(
        "--db", help="Alert store with the operators' feedback (alerts.db): refit the server model.")] = None,
    postmortems: Annotated[Path | None, typer.Option(
        "--postmortems", help="Incident store with post-mortems (vigil-out/incidents.db): refit the RCA priors "
        "(versions in `rca-priors/` beside it).")] = None,
    rca_holdout: Annotated[float, typer.Option(
        help="RCA: the latest share of the post-mortems (by incident time) held back to judge on.")] = 0.3,
    rca_weight: Annotated[float, typer.Option(
        help="RCA: the largest bonus a prior adds to a 0..1 cause score (it reorders near-ties only).")] = 0.05,
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
    """Refit with operators' feedback and post-mortems; promote only what does better on a held-back slice.

    `--db`: the server model. False-positive windows are added as normal, true-positive ones removed; the new
    version is judged against the promoted one on a held-back labelled slice (average precision), registered with
    that evaluation, and promoted only when strictly better. A refit without the labels is reported as a control.

    `--postmortems`: the RCA priors. Each post-mortem (`vigil incidents postmortem`) confirms an incident's root
    cause; the priors are the smoothed share of post-mortems naming each service, and each kind given the service.
    They are fitted on all but the latest `--rca-holdout` share of the post-mortems (ordered by when the incident
    opened); the latest incidents' recorded causes are re-ranked with the priors in force and with the new ones,
    and the new version is promoted only if it is not worse on top-1 and better on top-1 or top-3. Both figures
    are always printed. RCA uses the version in force as a tie-breaker (the self-healing loop; the library's
    `rank_causes(..., priors=active_priors(store))`); with none, RCA ranks on the evidence alone.

    Examples: `vigil retrain --db vigil-out/servers/alerts.db --pipeline pipelines/servers-kafka.yaml --input
    fleet.influx --incidents incidents.csv` · `vigil retrain --db fb/alerts.db --registry fb/registry --name
    servers --hosts 40 --days 2 --scheduled-jobs 0.15 --warmup-h 9 --until 9h --dry-run` · `vigil retrain
    --postmortems vigil-out/incidents.db --json`
    """
    from vigil.cli.common import strict_json
    from vigil.cli.retrain import retrain_cmd, retrain_postmortems_cmd
    from vigil.errors import ConfigError

    if db is None and postmortems is None:
        fail(ConfigError("or --postmortems is required: what to retrain from", field="--db", value=None,
                         hint="vigil retrain --db vigil-out/servers/alerts.db · vigil retrain --postmortems "
                         "vigil-out/incidents.db"))  # fmt: skip
    rca: dict[str, Any] = {}
    try:
        if postmortems is not None:
            rca = retrain_postmortems_cmd(store=str(postmortems), holdout=rca_holdout, weight=rca_weight,
                                          who=os.environ.get("USER", "operator"), reason=reason, dry_run=dry_run,
                                          console=err)  # fmt: skip
            if db is None:
                if json_:
                    print(strict_json(rca), flush=True)
                return
        res = retrain_cmd(db=str(db), registry=str(registry) if registry else None, name=name,
                          pipeline=str(pipeline) if pipeline else None, input_path=str(input) if input else None,
                          incidents=str(incidents) if incidents else None, hosts=hosts, days=days, seed=seed,
                          scheduled_jobs=scheduled_jobs, warmup_h=warmup_h, window=window, k=k, until=until,
                          holdout_from=holdout_from, n_estimators=trees, fp_weight=fp_weight, min_gain=min_gain,
                          reason=reason, dry_run=dry_run, json_=json_ and not rca, console=err)  # fmt: skip
        if json_ and rca:  # both: the server model's report with the RCA figures beside it
            print(strict_json({**res, **{key: v for key, v in rca.items() if key.startswith("rca_")},
                               "rca_promoted": rca["promoted"], "rca_decision": rca["decision"]}), flush=True)
    except VigilError as exc:
        fail(exc, 1)


def register(root: typer.Typer) -> None:
    """``vigil feedback ...`` and ``vigil retrain``."""
    root.add_typer(app, name="feedback")
    root.command("retrain")(retrain_)
