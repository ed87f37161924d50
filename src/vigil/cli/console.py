"""``vigil console``: the web console over an alert store, on 127.0.0.1 by default, behind a token.

:func:`console_cmd` is the Typer command; :func:`vigil.console.launch.start_console` does the work (a running
pipeline's worker calls it too, to serve the console next to it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from vigil.cli.common import check_port
from vigil.errors import VigilError

DEFAULT_DB = Path("vigil-out/alerts.db")


def _fail(exc: Exception, code: int = 1) -> NoReturn:
    Console(stderr=True, highlight=False, soft_wrap=True).print(f"[bold red]error:[/] {escape(str(exc))}")
    raise typer.Exit(code)


def console_cmd(
    db: Annotated[Path, typer.Option(
        "--db", help="The alert store; by convention `vigil-out/<pipeline>/alerts.db`.")] = DEFAULT_DB,
    port: Annotated[int, typer.Option(help="Port to listen on (0: any free port).")] = 8765,
    host: Annotated[str, typer.Option(
        help="Address to listen on. The default only accepts connections from this machine.")] = "127.0.0.1",
    state_dir: Annotated[Path | None, typer.Option("--state-dir", show_default=False, help=(
        "Folder of the console token file `console-token` (default: $VIGIL_STATE_DIR, else ~/.vigil)."))] = None,
    name: Annotated[str | None, typer.Option("--name", show_default=False, help=(
        "Pipeline name shown in the page (default: the folder of --db)."))] = None,
) -> None:  # fmt: skip
    """Serve the web console over an alert store: alerts, explanations, acks, labels and silences.

    The first start makes an access token, prints it once with a sign-in link, and keeps it in
    `<state dir>/console-token` (mode 0600). Every page and API call needs it (API clients send
    `Authorization: Bearer <token>`). Without a running pipeline the health bar says "no pipeline attached".
    Ctrl-C stops.

    Example: `vigil console --db vigil-out/fraud/alerts.db` then open the printed link.
    """
    from vigil.alerting.store import AlertStore
    from vigil.console.launch import start_console

    check_port(port, "--port")
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    try:
        store = AlertStore(db, create=False)
    except VigilError as exc:
        _fail(exc)
    try:
        try:
            handle, _ = start_console(store=store, pipeline_name=name or db.resolve().parent.name, host=host,
                                      port=port, state_dir=state_dir, console=err)  # fmt: skip
        except VigilError as exc:
            _fail(exc, 2)
        try:
            handle.wait()
        except KeyboardInterrupt:
            err.print("[yellow]stopping[/]")
        finally:
            handle.stop()
    finally:
        store.close()


def register(root: typer.Typer) -> None:
    """``vigil console``."""
    root.command("console")(console_cmd)
