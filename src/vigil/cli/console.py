"""``vigil console``: the web console over an alert store, on 127.0.0.1 by default, behind a token.

:func:`console_cmd` is the Typer command; :func:`vigil.console.launch.start_console` does the work (a running
pipeline's worker calls it too, to serve the console next to it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, NoReturn

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
    incidents: Annotated[Path | None, typer.Option("--incidents", show_default=False, help=(
        "An incident store (SQLite) to show under Incidents: each incident's affected services drawn as a graph, "
        "its ranked causes with their evidence, its timeline. `vigil demo selfheal` writes "
        "`vigil-out/selfheal/incidents.db`."))] = None,
    remediation: Annotated[Path | None, typer.Option("--remediation", show_default=False, help=(
        "The remediation store (SQLite) of the playbooks that act on those incidents: each incident page shows "
        "the runs on it, their steps and actions, and an Approve button on a gate that waits for a person "
        "(the same approval as `vigil remediation approve`). E.g. `vigil-out/selfheal/remediation.db`."))] = None,
    temporal_address: Annotated[str | None, typer.Option("--temporal-address", envvar="VIGIL_TEMPORAL_ADDRESS",
        show_default=False, help=(
        "Temporal frontend HOST:PORT: an approval of a run on Temporal also signals its workflow, which goes on at "
        "once (without it the approval is recorded and the workflow's gate finds it within 30 s)."))] = None,
) -> None:  # fmt: skip
    """Serve the web console: alerts, explanations, acks, labels, silences; incidents and playbook runs.

    Incidents and the playbook runs on them (with an Approve button on a waiting gate) need --incidents and
    --remediation.
    The first start makes an access token, prints it once with a sign-in link, and keeps it in
    `<state dir>/console-token` (mode 0600). Every page and API call needs it (API clients send
    `Authorization: Bearer <token>`). Without a running pipeline the health bar says "no pipeline attached".
    With --incidents but no alert store at --db, the alert pages are empty. Ctrl-C stops.

    Examples: `vigil console --db vigil-out/fraud/alerts.db` then open the printed link ·
    `vigil console --incidents vigil-out/selfheal/incidents.db --remediation vigil-out/selfheal/remediation.db`
    """
    from functools import partial

    from vigil.alerting.store import AlertStore
    from vigil.cli.remediation import approve_gate
    from vigil.console.launch import start_console
    from vigil.errors import ConfigError
    from vigil.incidents.store import IncidentStore
    from vigil.remediation.store import RemediationStore

    check_port(port, "--port")
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    for option, path in (("--incidents", incidents), ("--remediation", remediation)):
        if path is not None and not path.is_file():
            _fail(ConfigError("does not exist (an incident engine or `vigil demo selfheal` writes it)", field=option,
                              value=str(path)))  # fmt: skip
    opened: list[Any] = []
    try:
        try:
            alone = (incidents or remediation) is not None and db == DEFAULT_DB and not db.exists()
            store = AlertStore(":memory:") if alone else AlertStore(db, create=False)
            opened.append(store)
            istore = IncidentStore(incidents) if incidents is not None else None
            rstore = RemediationStore(remediation) if remediation is not None else None
            opened += [x for x in (istore, rstore) if x is not None]
        except VigilError as exc:
            _fail(exc)
        shown = (incidents or remediation or db) if alone else db
        label = name or shown.resolve().parent.name
        try:
            handle, _ = start_console(store=store, pipeline_name=label, host=host, port=port, state_dir=state_dir,
                                      console=err, incidents=istore, remediation=rstore,
                                      approve=partial(approve_gate, address=temporal_address))  # fmt: skip
        except VigilError as exc:
            _fail(exc, 2)
        try:
            handle.wait()
        except KeyboardInterrupt:
            err.print("[yellow]stopping[/]")
        finally:
            handle.stop()
    finally:
        for x in opened:
            x.close()


def register(root: typer.Typer) -> None:
    """``vigil console``."""
    root.command("console")(console_cmd)
