"""The ``vigil`` command: this module only assembles it; each topic's commands live in their own module.

Every topic module has the same shape: its Typer commands (options, help, and a call into the module that
does the work, imported when the command runs so that ``vigil --help`` stays fast) and a ``register(root)``
that adds them to the root command.
"""

from __future__ import annotations

from typing import Any

import typer

from vigil.cli import (
    alertmanager,
    alerts,
    bench,
    checkpoint,
    collect,
    console,
    demo,
    feedback,
    flink,
    generate,
    incidents,
    models,
    pipelines,
    rca,
    remediation,
    score,
)

app = typer.Typer(
    name="vigil",
    help=(
        "Vigil finds anomalies in event streams in real time.\n\n"
        "Start with `vigil demo` (the card-fraud detector, live), then write a pipeline YAML "
        "(see pipelines/fraud.yaml) and `vigil run` it."
    ),
    no_args_is_help=True,
    rich_markup_mode="markdown",
    pretty_exceptions_enable=False,
)

for topic in (demo, generate, pipelines, console, alerts, alertmanager, feedback, checkpoint, score, models, collect,
              rca, incidents, remediation, flink, bench):
    topic.register(app)


@app.callback()
def _root() -> None:
    """Vigil finds anomalies in event streams in real time."""
    _dump_stacks_on_sigusr1()


def _dump_stacks_on_sigusr1() -> None:
    """`kill -USR1 <pid>` prints every thread's stack to stderr: what a stuck pipeline is doing."""
    import faulthandler
    import signal

    if hasattr(signal, "SIGUSR1"):
        try:
            faulthandler.register(signal.SIGUSR1, all_threads=True)
        except (ValueError, OSError, AttributeError):  # stderr without a file descriptor (embedded, test runners)
            pass


#: `vigil --help` in panels, in the order a newcomer needs them
_PANELS = {
    "Start here": ("demo", "generate", "run", "validate"),
    "Operate a running pipeline": ("console", "alerts", "silence", "apply", "feedback", "checkpoint", "alertmanager"),
    "Models and detectors": ("score", "train", "models", "retrain", "collect"),
    "Services and incidents": ("rca", "incidents", "remediation"),
    "Measure": ("bench",),
}


def _arrange_help() -> None:
    rank = {n: i for i, names in enumerate(_PANELS.values()) for n in names}
    panel = {n: p for p, names in _PANELS.items() for n in names}
    order = {n: j for names in _PANELS.values() for j, n in enumerate(names)}

    def name_of(info: Any) -> str:
        return info.name or (info.callback.__name__.rstrip("_").replace("_", "-") if info.callback else "")

    for infos in (app.registered_commands, app.registered_groups):
        for info in infos:
            info.rich_help_panel = panel.get(name_of(info), "More")
        infos.sort(key=lambda i: (rank.get(name_of(i), 99), order.get(name_of(i), 99)))


_arrange_help()


def main() -> None:  # pragma: no cover
    """Entry point of ``python -m vigil.cli.main``."""
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
