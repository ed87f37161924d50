"""``vigil remediation``: playbook runs — list, show, approve a gate, the audit log, and the Temporal worker."""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from vigil.cli.common import err, fail
from vigil.errors import VigilError

DEFAULT_STORE = Path("vigil-out/remediation.db")
app = typer.Typer(
    help=(
        "Playbook runs: what ran on which incident, what waits for a person, and the audit log.\n\n"
        "Playbooks (YAML: matchers, steps, approvals, cooldowns; dry-run unless the file says `dry_run: false`) "
        "are started by the incident engine, run in-process or as Temporal workflows, and record every decision "
        "in a SQLite store. Examples: `vigil remediation list` · `vigil remediation show inc-3:rollback` · "
        "`vigil remediation approve inc-3:rollback --by ana` · "
        "`vigil remediation worker --playbooks playbooks.yaml --address 127.0.0.1:7233`"
    ),
    no_args_is_help=True,
)
StoreOpt = Annotated[Path, typer.Option("--store", help="The remediation store (SQLite): runs, audit log, approvals.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
AddressOpt = Annotated[
    str,
    typer.Option(
        "--address",
        envvar="VIGIL_TEMPORAL_ADDRESS",
        help="Temporal frontend HOST:PORT (`make temporal-up` serves 127.0.0.1:7233).",
    ),
]


def _when(ms: int | None) -> str:
    return "" if ms is None else datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _open(store: Path, *, must_exist: bool = True) -> Any:
    from vigil.errors import ConfigError
    from vigil.remediation.store import RemediationStore

    if must_exist and not store.exists():
        fail(ConfigError("does not exist (no playbook has run against it yet?)", field="--store", value=str(store)))
    return RemediationStore(store)


@app.command("list")
def list_cmd(
    store: StoreOpt = DEFAULT_STORE,
    status: Annotated[
        str | None, typer.Option(help="Only runs in this status: running, waiting_approval, succeeded, failed.")
    ] = None,
    limit: Annotated[int, typer.Option(help="At most this many, newest first.")] = 50,
    json_: JsonOpt = False,
) -> None:
    """Playbook runs, newest first: which playbook, on which incident and service, where it stands.

    A run waiting for a person is `waiting_approval`: see it with `vigil remediation show RUN`, let it go on
    with `vigil remediation approve RUN --by NAME`. Dry-run runs (the default) only record what they would do.

    Example: `vigil remediation list --status waiting_approval`
    """
    s = _open(store)
    rows = s.runs(status=status, limit=limit)
    if json_:
        print(json.dumps(rows, indent=1))
        return
    t = Table("run", "playbook", "incident", "service", "status", "dry run", "executor", "created (UTC)")
    for r in rows:
        t.add_row(r["run_id"], r["playbook"], r["incident_id"], r["service"], r["status"],
                  "yes" if r["dry_run"] else "no", r["executor"], _when(r["created_ms"]))  # fmt: skip
    Console(highlight=False).print(t)
    if not rows:
        err.print(f"no runs in {store}" + (f" with status {status}" if status else ""))


def approve_gate(store: Any, run: dict[str, Any], step: int, *, by: str, at_ms: int, comment: str = "",
                 address: str | None = None) -> tuple[bool, bool]:  # fmt: skip
    """Approve ``run``'s gate at ``step``; (first approval?, workflow signalled?).

    Recorded in the store; a Temporal run's workflow is also signalled at ``address`` (``None``: not signalled;
    its gate re-reads the store every 30 s). The one way a gate is approved: this command and the console's
    Approve button (`vigil console --remediation PATH --temporal-address HOST:PORT`) both call it.

    Raises:
        VigilError: the store or the Temporal server failed.
    """
    if run.get("executor") == "temporal" and address:
        from vigil.integrations.temporal.executor import approve_and_signal

        return approve_and_signal(store, run["run_id"], step, by=by, at_ms=at_ms, comment=comment, address=address)
    return bool(store.approve(run["run_id"], step, by=by, at_ms=at_ms, comment=comment)), False


@app.command("show")
def show_cmd(run: Annotated[str, typer.Argument(help="The run id, `<incident>:<playbook>`.")],
             store: StoreOpt = DEFAULT_STORE, json_: JsonOpt = False) -> None:  # fmt: skip
    """One run: its incident's top cause, each step's result (or what it would do, in dry-run), the audit trail.

    Example: `vigil remediation show inc-3:rollback-bad-deploy`
    """
    from vigil.errors import ConfigError

    s = _open(store)
    r = s.run(run)
    if r is None:
        fail(ConfigError("is not a run in the store (see `vigil remediation list`)", field="run", value=run))
    audit = s.audit(run)
    if json_:
        print(json.dumps({"run": r, "audit": audit}, indent=1, default=str))
        return
    c = Console(highlight=False)
    inc = r["incident"]
    top = (inc.get("causes") or [{}])[0]
    c.print(f"[bold]{run}[/]  {r['status']}{'  (dry run)' if r['dry_run'] else ''}  executor {r['executor']}")
    c.print(f"incident {inc.get('id')} ({inc.get('severity')}): top cause {top.get('service')} ({top.get('kind')}, "
            f"score {top.get('score', 0):.2f})")  # fmt: skip
    waiting = s.waiting_step(run)
    if waiting is not None:
        c.print(f"[yellow]waiting for approval of step {waiting}[/]: `vigil remediation approve {run} --by NAME`")
    t = Table("seq", "at (UTC)", "event", "step", "detail")
    for a in audit:
        t.add_row(str(a["seq"]), _when(a["at_ms"]), a["event"], "" if a["step"] is None else str(a["step"]),
                  json.dumps(a["detail"])[:120])  # fmt: skip
    c.print(t)


@app.command("approve")
def approve_cmd(
    run: Annotated[str, typer.Argument(help="The run id, `<incident>:<playbook>`.")],
    by: Annotated[str, typer.Option(help="Who approves (recorded in the audit log).")] = os.environ.get(
        "USER", "operator"
    ),
    step: Annotated[int | None, typer.Option(help="The gate's step index (default: the one the run waits at).")] = None,
    comment: Annotated[str, typer.Option(help="Recorded with the approval.")] = "",
    address: AddressOpt = "127.0.0.1:7233",
    store: StoreOpt = DEFAULT_STORE,
) -> None:
    """Approve a run's gate (an `approve:` step): recorded in the store, then the run goes on.

    A run on Temporal is signalled at `--address` and continues at once (were the server unreachable, its gate
    also re-reads the store every 30 s). An in-process run continues the next time its engine looks at it.
    Approving twice is harmless.

    Example: `vigil remediation approve inc-3:rollback-bad-deploy --by ana --comment "checked the canary"`
    """
    from vigil.errors import ConfigError

    s = _open(store)
    r = s.run(run)
    if r is None:
        fail(ConfigError("is not a run in the store (see `vigil remediation list`)", field="run", value=run))
    if step is None:
        step = s.waiting_step(run)
        if step is None:
            fail(ConfigError("is not waiting for an approval; name the gate with --step", field="run", value=run))
    try:
        first, signalled = approve_gate(s, r, step, by=by, at_ms=int(time.time() * 1000), comment=comment,
                                        address=address)  # fmt: skip
    except VigilError as exc:
        fail(exc)
    err.print(("approved" if first else "already approved") + f" step {step} of {run}"
              + (" (workflow signalled)" if signalled else ""))  # fmt: skip


@app.command("audit")
def audit_cmd(
    run: Annotated[str | None, typer.Argument(help="One run's entries (default: the latest of all).")] = None,
    limit: Annotated[int, typer.Option(help="At most this many entries.")] = 200,
    store: StoreOpt = DEFAULT_STORE,
    json_: JsonOpt = False,
) -> None:
    """The audit log: every decision (started, skipped and why: allow-list, cooldown, concurrency), step and approval.

    Tokens never appear here: steps record what was sent, not the credentials.

    Example: `vigil remediation audit --json | jq 'select(.event == "skipped")'`
    """
    s = _open(store)
    rows = s.audit(run, limit=limit)
    if json_:
        print(json.dumps(rows, indent=1))
        return
    t = Table("seq", "at (UTC)", "run", "event", "step", "detail")
    for a in rows:
        t.add_row(str(a["seq"]), _when(a["at_ms"]), a["run_id"] or "", a["event"],
                  "" if a["step"] is None else str(a["step"]), json.dumps(a["detail"])[:100])  # fmt: skip
    Console(highlight=False).print(t)


@app.command("worker")
def worker_cmd(
    playbooks: Annotated[Path, typer.Option(help="The playbook file (YAML) the runs were started from.")],
    store: StoreOpt = DEFAULT_STORE,
    address: AddressOpt = "127.0.0.1:7233",
    namespace: Annotated[str, typer.Option(help="Temporal namespace.")] = "default",
    task_queue: Annotated[str, typer.Option(help="The task queue the runs are started on.")] = "vigil-remediation",
) -> None:
    """Run a Temporal worker: it carries out the playbook workflows started on the task queue.

    Start as many as you like, on any machines that reach the server, the store and the endpoints: when one
    dies, Temporal hands its work to another, and a step that was in flight is not carried out twice (its
    idempotency key is in the store and sent as the `Idempotency-Key` header). Stop with Ctrl-C or SIGTERM.

    Example: `make temporal-up && vigil remediation worker --playbooks playbooks.yaml --store vigil-out/remediation.db`
    """
    import asyncio
    import signal

    from vigil.integrations.temporal.executor import run_worker
    from vigil.remediation import StepRunner, load_playbooks

    try:
        spec = load_playbooks(playbooks)
    except VigilError as exc:
        fail(exc)
    runner = StepRunner(spec, _open(store, must_exist=False))

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await run_worker(runner, address=address, namespace=namespace, task_queue=task_queue, stop=stop,
                         ready=lambda: err.print(f"worker ready: {address} queue {task_queue} "
                                                 f"({'dry run' if spec.dry_run else 'live'})"))  # fmt: skip

    try:
        asyncio.run(main())
    except VigilError as exc:
        fail(exc, 1)
    err.print("worker stopped")


def register(root: typer.Typer) -> None:
    """``vigil remediation ...``."""
    root.add_typer(app, name="remediation")
