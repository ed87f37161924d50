"""``vigil incidents``: the incidents correlated from alerts — list, show, and record a post-mortem."""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from vigil.cli.common import err, fail

DEFAULT_STORE = Path("vigil-out/incidents.db")
app = typer.Typer(
    help=(
        "Incidents: alerts grouped by time, by distance in the service graph and by shared trace ids, each with "
        "ranked root causes, a lifecycle (open, mitigated, resolved) and a timeline.\n\n"
        "Examples: `vigil incidents list --status open` · `vigil incidents show inc-3` · "
        "`vigil incidents postmortem inc-3 --service cart --kind deploy --note 'v2.4 broke the cache'`"
    ),
    no_args_is_help=True,
)
StoreOpt = Annotated[Path, typer.Option("--store", help="The incident store (SQLite).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _when(ms: int | None) -> str:
    return "" if ms is None else datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _open(store: Path):  # type: ignore[no-untyped-def]
    from vigil.errors import ConfigError
    from vigil.incidents.store import IncidentStore

    if not store.exists():
        fail(ConfigError("does not exist (no incident recorded yet?)", field="--store", value=str(store)))
    return IncidentStore(store)


@app.command("list")
def list_cmd(
    store: StoreOpt = DEFAULT_STORE,
    status: Annotated[str | None, typer.Option(help="Only this status: open, mitigated, resolved.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many, newest first.")] = 50,
    json_: JsonOpt = False,
) -> None:
    """Incidents, newest first: status, severity, the top-ranked cause, the services involved.

    Example: `vigil incidents list --status open --store vigil-out/incidents.db`
    """
    from vigil.errors import ConfigError
    from vigil.incidents.model import STATUSES

    if status is not None and status not in STATUSES:
        fail(ConfigError(f"must be one of {', '.join(STATUSES)}", field="--status", value=status))
    rows = _open(store).recent(status=status, limit=limit)
    if json_:
        print(json.dumps(rows, indent=1))
        return
    t = Table("incident", "opened (UTC)", "status", "severity", "top cause", "services", "alerts")
    for r in rows:
        cause = f"{r['top_service']} ({r['top_kind']})" if r["top_service"] else "-"
        t.add_row(r["id"], _when(r["opened_ms"]), r["status"], r["severity"], cause, ", ".join(r["services"][:5]),
                  str(r["alerts"]))  # fmt: skip
    Console(highlight=False).print(t)


@app.command("show")
def show_cmd(incident: Annotated[str, typer.Argument(help="The incident id, e.g. inc-3.")],
             store: StoreOpt = DEFAULT_STORE, json_: JsonOpt = False) -> None:  # fmt: skip
    """One incident: ranked causes with their evidence, the services and alerts, and the timeline.

    The actions playbooks took on it are in `vigil remediation list` (runs are named `<incident>:<playbook>`).

    Example: `vigil incidents show inc-3`
    """
    from vigil.errors import ConfigError

    inc = _open(store).get(incident)
    if inc is None:
        fail(ConfigError("is not in the store (see `vigil incidents list`)", field="incident", value=incident))
    if json_:
        print(json.dumps(inc.to_dict(), indent=1))
        return
    c = Console(highlight=False)
    c.print(f"[bold]{inc.id}[/]  {inc.status}  {inc.severity}  opened {_when(inc.opened_ms)} UTC")
    c.print(f"services: {', '.join(inc.services)}  ·  {len(inc.alerts)} alert(s)")
    if inc.causes:
        t = Table("#", "service", "kind", "score", "evidence")
        for i, cause in enumerate(inc.causes[:5], 1):
            t.add_row(str(i), cause.service, cause.kind, f"{cause.score:.2f}", json.dumps(cause.evidence)[:100])
        c.print(t)
    t = Table("at (UTC)", "what", "detail")
    for e in inc.timeline:
        t.add_row(_when(e.at_ms), e.what, e.detail)
    c.print(t)


@app.command("postmortem")
def postmortem_cmd(
    incident: Annotated[str, typer.Argument(help="The incident id, e.g. inc-3.")],
    service: Annotated[str, typer.Option(help="The confirmed root-cause service.")],
    kind: Annotated[str, typer.Option(help="Its kind: latency, errors, saturation or deploy.")],
    label: Annotated[list[str] | None, typer.Option(help="A label KEY=VALUE (repeatable).")] = None,
    note: Annotated[str, typer.Option(help="Free text: what happened, what fixed it.")] = "",
    by: Annotated[str, typer.Option(help="Who wrote it.")] = os.environ.get("USER", "operator"),
    store: StoreOpt = DEFAULT_STORE,
) -> None:
    """Record an incident's post-mortem: the confirmed root cause, labels and notes (replaces an earlier one).

    `vigil retrain --postmortems STORE` learns RCA priors from the confirmed causes (which services and kinds
    have been the cause) and promotes them only if they rank the latest incidents better.

    Example: `vigil incidents postmortem inc-3 --service cart --kind deploy --label team=shop --note "bad cache key"`
    """
    from vigil.errors import ConfigError
    from vigil.incidents.model import KINDS

    s = _open(store)
    if s.get(incident) is None:
        fail(ConfigError("is not in the store (see `vigil incidents list`)", field="incident", value=incident))
    if kind not in KINDS:
        fail(ConfigError(f"must be one of {', '.join(KINDS)}", field="--kind", value=kind))
    labels = {}
    for item in label or []:
        k, eq, v = item.partition("=")
        if not eq or not k:
            fail(ConfigError("must be KEY=VALUE", field="--label", value=item))
        labels[k] = v
    s.postmortem(incident, service=service, kind=kind, by=by, at_ms=int(time.time() * 1000), labels=labels,
                 notes=note)  # fmt: skip
    err.print(f"post-mortem of {incident} recorded: {service} ({kind})")


def register(root: typer.Typer) -> None:
    """``vigil incidents ...``."""
    root.add_typer(app, name="incidents")
