"""``vigil train`` and ``vigil models``: fit models offline, and the registry's versions, promotion and rollback."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from vigil.cli.common import err, fail
from vigil.errors import ConfigError, VigilError

app = typer.Typer(help="The model registry: versions, promotion, rollback.", no_args_is_help=True)

RegistryOpt = Annotated[Path | None, typer.Option(
    "--registry", help="Registry folder (default: the config's, $VIGIL_MODEL_REGISTRY, or ./models).")]  # fmt: skip
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]


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
        fail(ConfigError("give exactly one of --config (a feature table) or --pipeline (a servers step)",
                          field="train", value=None))  # fmt: skip
    try:
        if pipeline is not None:
            from vigil.cli.fleet import train_servers_cmd

            train_servers_cmd(str(pipeline), str(input), until=until, promote=promote, reason=reason, console=err)
            return
        from vigil.cli.models_admin import train_cmd

        assert config is not None
        train_cmd(config, input, registry=registry, promote=promote, reason=reason, as_json=json_, console=err)
    except VigilError as exc:
        fail(exc, 1)


@app.command("list")
def models_list(registry: RegistryOpt = None, json_: JsonOpt = False) -> None:
    """Every model, its versions and which one is promoted."""
    from vigil.cli.models_admin import list_cmd

    try:
        list_cmd(registry, as_json=json_, console=Console(highlight=False))
    except VigilError as exc:
        fail(exc, 1)


@app.command("show")
def models_show(
    name: Annotated[str, typer.Argument(help="Model name.")],
    version: Annotated[str | None, typer.Argument(help="Version (default: the promoted one).")] = None,
    registry: RegistryOpt = None,
    json_: JsonOpt = False,
) -> None:
    """A version's metadata, validation report and the promotion history."""
    from vigil.cli.models_admin import show_cmd

    try:
        show_cmd(name, version, registry, as_json=json_, console=Console(highlight=False))
    except VigilError as exc:
        fail(exc, 1)


@app.command("promote")
def models_promote(
    name: Annotated[str, typer.Argument(help="Model name.")],
    version: Annotated[str, typer.Argument(help="Version to serve, e.g. v3.")],
    reason: Annotated[str, typer.Option("--reason", help="Why (kept in the history).")],
    registry: RegistryOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Serve this version; running pipelines pick it up between micro-batches, without a restart."""
    from vigil.cli.models_admin import promote_cmd

    try:
        promote_cmd(name, version, reason, registry, as_json=json_, console=Console(highlight=False))
    except VigilError as exc:
        fail(exc, 1)


@app.command("rollback")
def models_rollback(
    name: Annotated[str, typer.Argument(help="Model name.")],
    reason: Annotated[str, typer.Option("--reason", help="Why (kept in the history).")],
    registry: RegistryOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Serve the version promoted before the current one."""
    from vigil.cli.models_admin import rollback_cmd

    try:
        rollback_cmd(name, reason, registry, as_json=json_, console=Console(highlight=False))
    except VigilError as exc:
        fail(exc, 1)


def register(root: typer.Typer) -> None:
    """``vigil train`` and ``vigil models ...``."""
    root.command("train")(train)
    root.add_typer(app, name="models")
