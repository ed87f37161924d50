"""``vigil checkpoint``: look into a pipeline's checkpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from vigil.cli.common import fail
from vigil.errors import VigilError

app = typer.Typer(help="Look into checkpoints.", no_args_is_help=True)


@app.command("inspect")
def checkpoint_inspect(
    path: Annotated[Path, typer.Argument(help="A checkpoint file (.vck), or a pipeline's checkpoint directory.")],
    json_: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Show what a checkpoint holds: source positions, watermark, keys, each step's state and size.

    Given a directory, shows the newest readable checkpoint and reports any corrupt or truncated one
    it passed over (the engine would pass over it too).

    Example: `vigil checkpoint inspect vigil-state/fraud`
    """
    from vigil.cli.checkpoint_inspect import inspect

    try:
        inspect(path, as_json=json_, console=Console(highlight=False))
    except (VigilError, FileNotFoundError) as exc:
        fail(exc, 1)


def register(root: typer.Typer) -> None:
    """``vigil checkpoint ...``."""
    root.add_typer(app, name="checkpoint")
