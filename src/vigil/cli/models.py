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
    input: Annotated[str | None, typer.Option("--input", help="Normal data: CSV, JSON lines, Parquet or "
                                              "kafka://HOST:PORT/TOPIC of JSON records (--config); Influx or "
                                              "Telegraf metrics, a file or kafka://... (--pipeline).")] = None,
    config: Annotated[Path | None, typer.Option("--config", help="Training YAML (name, features, ...).")] = None,
    pipeline: Annotated[Path | None, typer.Option(
        "--pipeline", help="Or: train the global model of this pipeline's `servers` step.")] = None,  # fmt: skip
    until: Annotated[str, typer.Option(help="With --pipeline: train on the first DURATION of the input.")] = "4h",
    registry: RegistryOpt = None,
    promote: Annotated[bool, typer.Option(help="Promote the new version too.")] = False,
    reason: Annotated[str, typer.Option(help="History reason when --promote.")] = "trained",
    out: Annotated[Path | None, typer.Option(
        "--out", help="algorithm: tcn_autoencoder: the folder for model.onnx + model.json (else the config's `out`).",
    )] = None,  # fmt: skip
    json_: JsonOpt = False,
    services_gnn: Annotated[Path | None, typer.Option(
        "--services-gnn", help="Or: train the services app's GNN on simulated shops with PyTorch (its own "
        "virtualenv: $VIGIL_TORCH_PYTHON or .venv-torch) and write its ONNX file here.")] = None,  # fmt: skip
    seeds: Annotated[int, typer.Option(help="With --services-gnn: simulated training runs.")] = 6,
    epochs: Annotated[int, typer.Option(help="With --services-gnn: training epochs.")] = 30,
) -> None:
    """Fit an Isolation Forest on normal data and register it as a new model version.

    With `algorithm: tcn_autoencoder` in the config: train a PyTorch sequence autoencoder (run it from the
    venv of `make torch-venv`: `.venv-torch/bin/vigil train ...`), export it to ONNX in --out, and serve it with
    `kind: onnx_sequence` (ONNX Runtime only).

    The new version is validated on a held-back slice; serving pipelines pick up a version when it is
    promoted (`vigil models promote`).

    Examples: `vigil train --config train.yaml --input normal.csv` ·
    `vigil train --pipeline pipelines/servers-kafka.yaml --input fleet.influx --until 6h --promote` ·
    `vigil train --config train.yaml --input kafka://127.0.0.1:9092/normal-transactions` ·
    `vigil train --services-gnn models/services-gnn.onnx`
    """
    if services_gnn is not None:
        import json

        from vigil.cli.demo_services import train_services_gnn

        try:
            res = train_services_gnn(services_gnn, seeds=seeds, epochs=epochs, console=err)
        except VigilError as exc:
            fail(exc, 1)
        err.print(f"GNN trained on {res['train']['snapshots']} snapshots in {res['train']['seconds']} s "
                  f"(torch {res['train']['torch']}): {services_gnn}")
        if json_:
            print(json.dumps(res))
        return
    if input is None:
        fail(ConfigError("is required (the data to train on)", field="--input", value=None))
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
        train_cmd(config, input, registry=registry, promote=promote, reason=reason, as_json=json_, out=out,
                  console=err)  # fmt: skip
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
