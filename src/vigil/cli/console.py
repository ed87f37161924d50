"""``vigil console``: the web console over an alert store, on 127.0.0.1 by default, behind a token.

:func:`console_cmd` is the Typer command (registered in :mod:`vigil.cli.main`); :func:`start_console` does the
work and is what a command running a pipeline calls to serve the console next to it (with its manager, runner and
:class:`~vigil.console.recorder.StreamRecorder`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from vigil.errors import VigilError

DEFAULT_DB = Path("vigil-out/alerts.db")


def start_console(*, store: Any, manager: Any = None, runner: Any = None, recorder: Any = None,
                  pipeline_name: str, host: str = "127.0.0.1", port: int = 8765,
                  state_dir: str | Path | None = None, console: Console | None = None) -> tuple[Any, str]:  # fmt: skip
    """Load (or make) the token, serve the console from a daemon thread and say where: ``(handle, url)``.

    A token made now is printed once, with the link that signs the browser in; later starts only say which file
    holds it. ``handle.stop()`` ends the server.

    Raises:
        ConfigError: the state folder or the address is unusable.
    """
    from vigil.console.app import create_app
    from vigil.console.auth import default_state_dir, load_or_create_token
    from vigil.console.server import is_loopback, serve_console

    err = console or Console(stderr=True, highlight=False, soft_wrap=True)
    token, created, token_path = load_or_create_token(state_dir if state_dir is not None else default_state_dir())
    app = create_app(store=store, manager=manager, runner=runner, recorder=recorder, token=token,
                     pipeline_name=pipeline_name)  # fmt: skip
    handle, url = serve_console(app, host, port)
    what = "live pipeline" if runner is not None else "no pipeline attached"
    err.print(f"console: [b]{escape(url)}[/] (alert store {escape(str(store.path))}, {what})")
    if created:
        err.print(f"new access token, shown this once (kept in {escape(str(token_path))}, mode 0600):")
        err.print(f"  [b]{escape(token)}[/]")
        err.print(f"sign in: {escape(url)}?token={escape(token)}")
    else:
        err.print(f"access token: in {escape(str(token_path))}; sign in with {escape(url)}?token=<that token>, "
                  "API clients send `Authorization: Bearer <token>`")  # fmt: skip
    if not is_loopback(host):
        err.print(f"[yellow]warning[/]: listening on {escape(host)}, not only this machine; the token guards every "
                  "page, but the traffic is plain HTTP: put a TLS proxy in front of it")  # fmt: skip
    return handle, url


def _fail(exc: Exception, code: int = 1) -> NoReturn:
    Console(stderr=True, highlight=False, soft_wrap=True).print(f"[bold red]error:[/] {escape(str(exc))}")
    raise typer.Exit(code)


def console_cmd(
    db: Annotated[Path, typer.Option(
        "--db", help="The alert store; by convention vigil-out/<pipeline>/alerts.db.")] = DEFAULT_DB,
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
