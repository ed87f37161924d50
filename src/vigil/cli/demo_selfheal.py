"""``vigil demo selfheal``: the self-healing loop on the simulated shop, with MTTR with and without playbooks."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from vigil.cli.common import err


def run_selfheal_demo(*, seeds: list[int], services: int, rate: float, clean: int, temporal_address: str | None,
                      out: Path, as_json: bool) -> dict[str, Any]:  # fmt: skip
    """Run the scenarios (see :mod:`vigil.apps.services.selfheal`), print the summary; return it."""
    from vigil.apps.services.selfheal import ScenarioResult, SelfHealParams, run_demo
    from vigil.console.server import serve_console
    from vigil.errors import ConfigError
    from vigil.incidents import IncidentStore
    from vigil.remediation import RemediationStore

    if not 8 <= services <= 42:
        raise ConfigError("must be in 8..42", field="--services", value=services)
    out.mkdir(parents=True, exist_ok=True)
    for name in ("incidents.db", "remediation.db"):
        for suffix in ("", "-wal", "-shm"):
            (out / (name + suffix)).unlink(missing_ok=True)
    istore, rstore = IncidentStore(out / "incidents.db"), RemediationStore(out / "remediation.db")

    def serve(app: Any) -> tuple[str, Any]:
        server, url = serve_console(app, "127.0.0.1", 0)
        return url, server.stop

    executor = None
    if temporal_address is not None:
        from vigil.integrations.temporal import TemporalExecutor

        def executor(runner: Any) -> Any:
            return TemporalExecutor(runner, address=temporal_address, task_queue=f"vigil-selfheal-{uuid.uuid4().hex}",
                                    worker=True)  # fmt: skip

    def progress(r: ScenarioResult) -> None:
        what = r.fault or "no fault"
        fix = f"{r.to_remediation_s:.0f} s to action" if r.to_remediation_s is not None else "no action"
        mttr = f"MTTR {r.mttr_s:.0f} s" if r.mttr_s is not None else ("MTTR -" if r.fault else "")
        rca = f"RCA {r.rca_top[:3]} (root {r.root})" if r.rca_top else ""
        acts = escape("[" + (", ".join(f"{a['action']} {a['service']}" for a in r.actions) or "no actions") + "]")
        err.print(f"{what:16s} seed {r.seed:<5d} {r.mode:6s} incidents {len(r.incidents)}  {mttr}  "
                  f"{fix if r.mode == 'auto' else ''}  {rca}  {acts}")  # fmt: skip

    t0 = time.perf_counter()
    summary = run_demo(seeds, clean_runs=clean, params=SelfHealParams(services=services, rate=rate), serve=serve,
                       executor=executor, incidents=istore, remediation=rstore, progress=progress)  # fmt: skip
    summary["executor"] = "temporal" if temporal_address else "inprocess"
    summary["wall_s"] = round(time.perf_counter() - t0, 1)
    summary["stores"] = {"incidents": str(out / "incidents.db"), "remediation": str(out / "remediation.db")}
    t = Table("", "value", title="self-healing on the simulated shop")
    m = summary["mttr_s"]
    t.add_row("faults (auto runs)", ", ".join(f"{k} x{v}" for k, v in summary["faults"].items()))
    t.add_row("RCA top-1 / top-3", f"{summary['rca_top1']:.2f} / {summary['rca_top3']:.2f}")
    t.add_row("fault -> remediation p50 / p95", _pair(summary["fault_to_remediation_s"]))
    t.add_row("MTTR with playbooks p50 / p95", _pair(m["auto"]))
    t.add_row("MTTR without (people) p50 / p95", _pair(m["manual"]))
    t.add_row("healed by the action", f"{summary['healed_by_action']} of {sum(summary['faults'].values())}")
    t.add_row("incidents (false)", f"{summary['incidents']} ({summary['false_incidents']})")
    t.add_row("actions on false incidents", str(summary["actions_on_false_incidents"]))
    t.add_row("executor, wall time", f"{summary['executor']}, {summary['wall_s']} s")
    Console(stderr=as_json, highlight=False).print(t)
    err.print("the incidents, their causes and the playbooks' actions in the web console: "
              f"vigil console --incidents {escape(str(out / 'incidents.db'))} "
              f"--remediation {escape(str(out / 'remediation.db'))}")  # fmt: skip
    if as_json:
        print(json.dumps(summary))
    return summary


def _pair(d: dict[str, float | None]) -> str:
    return " / ".join("-" if d[k] is None else f"{d[k]:.0f} s" for k in ("p50", "p95"))
