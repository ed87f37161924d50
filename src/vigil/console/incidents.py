"""The console's incident pages: incidents newest first, one incident explained, and approving a playbook's gate.

======================================= ==========================================================================
``GET /api/incidents``                  a page of incidents, newest opened first: ``limit``, ``cursor`` (the
                                        previous page's ``next_cursor``), ``status`` (open, mitigated, resolved);
                                        each row says whether a playbook run on it ``waiting`` for a person
``GET /api/incidents/{id}``             one incident: its timeline, ranked causes with their evidence, the
                                        affected ``subgraph`` (nodes marked ``anomalous`` and ``cause_rank``;
                                        edges weighted by the live graph's calls when a pipeline runs), and the
                                        playbook ``runs`` on it with their steps and actions, and the decisions
                                        not to run one (``skipped``, with the reason)
``POST /api/remediation/{run}/approve`` ``{by, comment}``: approve the gate the run waits at
======================================= ==========================================================================

An approval goes through the same function as ``vigil remediation approve`` (the CLI hands it to
:func:`~vigil.console.app.create_app` as ``approve``): recorded in the remediation store, and a run on Temporal
signalled when the console was given its address. Without one, the approval is recorded the same way: a
Temporal run's gate re-reads the store, an in-process run goes on when its engine next looks.

Examples:
    >>> from vigil.incidents.model import Cause, Incident
    >>> inc = Incident("inc-1", 0, services=["cart"], edges=[("web", "cart")], causes=[Cause("cart", "deploy", 0.9)])
    >>> g = subgraph(inc, None)
    >>> [(n["id"], n["anomalous"], n["cause_rank"]) for n in g["nodes"]], g["edges"][0]["calls"]
    ([('cart', True, 1), ('web', False, None)], None)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import Body, FastAPI, Query
from fastapi import Path as PathParam
from pydantic import BaseModel, ConfigDict, StringConstraints

from vigil.console.views import ApiError
from vigil.incidents.model import Incident
from vigil.incidents.store import IncidentStore
from vigil.remediation.store import RemediationStore

Approver = Callable[..., tuple[bool, bool]]
"""``approve(store, run, step, *, by, at_ms, comment) -> (first approval?, workflow signalled?)``."""

Short = Annotated[str, StringConstraints(max_length=100, strip_whitespace=True)]
Text = Annotated[str, StringConstraints(max_length=2000)]
Id = Annotated[str, PathParam(min_length=1, max_length=300)]
_TERMINAL = ("succeeded", "failed", "rejected")


class ApproveIn(BaseModel):
    """Body of ``POST /api/remediation/{run_id}/approve``."""

    model_config = ConfigDict(extra="forbid")
    by: Short = ""
    comment: Text = ""


def store_approve(store: RemediationStore, run: dict[str, Any], step: int, *, by: str, at_ms: int,
                  comment: str = "") -> tuple[bool, bool]:  # fmt: skip
    """The approver without a Temporal address: record the approval only."""
    return store.approve(run["run_id"], step, by=by, at_ms=at_ms, comment=comment), False


def subgraph(inc: Incident, live: dict[str, Any] | None) -> dict[str, Any]:
    """The incident's services and the calls among them, as the console draws them.

    Nodes: the incident's services (``anomalous``: they alerted), its causes' services (``cause_rank``, 1 is the
    top) and the services its edges pass through. Edges: the incident's own (from the correlator's graph); with a
    live graph (``live``: ``/api/services/graph``'s document), also its edges among these nodes, with their
    ``calls`` and ``errors`` (the traffic weight).
    """
    rank: dict[str, int] = {}
    for i, c in enumerate(inc.causes, 1):
        rank.setdefault(c.service, i)
    names = set(inc.services) | set(rank) | {x for e in inc.edges for x in e}
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for e in (live or {}).get("edges", []):
        if e.get("source") in names and e.get("target") in names:
            found[(e["source"], e["target"])] = {"calls": e.get("calls"), "errors": e.get("errors")}
    edges = [{"source": a, "target": b, "calls": None, "errors": None, **found.get((a, b), {})}
             for a, b in sorted(set(inc.edges) | set(found))]  # fmt: skip
    live_nodes = {n["id"]: n for n in (live or {}).get("nodes", []) if n.get("id") in names}
    nodes = [{"id": n, "anomalous": n in inc.services, "cause_rank": rank.get(n),
              "live_anomalous": live_nodes[n].get("anomalous") if n in live_nodes else None}
             for n in sorted(names)]  # fmt: skip
    return {"nodes": nodes, "edges": edges}


def run_view(store: RemediationStore, run: dict[str, Any]) -> dict[str, Any]:
    """A playbook run as the incident page shows it: its steps (from the audit log), the gate it waits at."""
    audit = store.audit(run["run_id"])
    steps: dict[int, dict[str, Any]] = {}

    def step(i: int) -> dict[str, Any]:
        return steps.setdefault(i, {"index": i, "action": None, "params": None, "status": "pending", "result": None,
                                    "reason": None, "approved_by": None, "comment": None, "at_ms": None})  # fmt: skip

    for a in audit:
        d, ev = a["detail"] or {}, a["event"]
        if ev == "run_waiting_approval" and "step" in d:
            s = step(int(d["step"]))
            s.update(action="approve", status="waiting", reason=d.get("reason"), at_ms=a["at_ms"])
        elif a["step"] is None:
            continue
        elif ev == "approved":
            s = step(int(a["step"]))
            s.update(action="approve", status="approved", approved_by=d.get("by"), comment=d.get("comment"),
                     at_ms=a["at_ms"])  # fmt: skip
        elif ev == "step_started":
            s = step(int(a["step"]))
            s.update(action=d.get("action"), params=d.get("params"), status="started", at_ms=a["at_ms"])
        elif ev == "step_failed":
            s = step(int(a["step"]))
            s.update(status="failed", result=d, at_ms=a["at_ms"])
        elif ev == "step_done":
            s = step(int(a["step"]))
            s.update(status="done", result=d, at_ms=a["at_ms"])
            if s["action"] is None and "approved_by" in d:
                s.update(action="approve", approved_by=d.get("approved_by"))
    waiting = store.waiting_step(run["run_id"])
    approved = waiting is not None and store.approval(run["run_id"], waiting) is not None
    view = {k: v for k, v in run.items() if k != "incident"}
    # an approved gate of a run not yet gone on (an in-process run resumes when its engine looks) waits no more
    return {**view, "waiting_step": None if approved else waiting, "resuming": approved,
            "steps": [steps[i] for i in sorted(steps)], "audit": audit}  # fmt: skip


class IncidentsView:
    """What the incident routes read: the stores, the approver, the clock, the live graph."""

    def __init__(self, incidents: IncidentStore | None, remediation: RemediationStore | None,
                 approve: Approver | None, clock: Callable[[], int],
                 live_graph: Callable[[], dict[str, Any] | None]) -> None:  # fmt: skip
        self.incidents, self.remediation = incidents, remediation
        self.approver: Approver = approve or store_approve
        self.clock, self.live_graph = clock, live_graph

    def _istore(self) -> IncidentStore:
        if self.incidents is None:
            raise ApiError(404, "no incident store attached (start the console with --incidents PATH)", "incidents")
        return self.incidents

    def _rstore(self) -> RemediationStore:
        if self.remediation is None:
            raise ApiError(404, "no remediation store attached (start the console with --remediation PATH)",
                           "remediation")  # fmt: skip
        return self.remediation

    def page(self, status: str | None, limit: int, cursor: str | None) -> dict[str, Any]:
        """A page of incidents, newest opened first (module docstring)."""
        if self.incidents is None:
            return {"incidents": [], "next_cursor": None, "attached": False,
                    "remediation": self.remediation is not None}  # fmt: skip
        after = _decode(cursor) if cursor else None
        rows = self.incidents.recent(status=status, limit=limit + 1, after=after)
        more = len(rows) > limit
        rows = rows[:limit]
        waiting: set[str] = set()
        rs = self.remediation
        if rs is not None:  # a gate approved but not yet passed (an in-process run) waits for nobody
            waiting = {
                r["incident_id"]
                for r in rs.runs(status="waiting_approval", limit=10_000)
                if (step := rs.waiting_step(r["run_id"])) is not None and rs.approval(r["run_id"], step) is None
            }
        for r in rows:
            r["waiting"] = r["id"] in waiting
        last = rows[-1] if rows else None
        return {"incidents": rows, "next_cursor": f"{last['opened_ms']}:{last['id']}" if more and last else None,
                "attached": True, "remediation": self.remediation is not None}  # fmt: skip

    def one(self, incident_id: str) -> dict[str, Any]:
        """One incident with its subgraph and playbook runs (module docstring)."""
        inc = self._istore().get(incident_id)
        if inc is None:
            raise ApiError(404, "no such incident", "id", incident_id)
        runs: list[dict[str, Any]] = []
        skipped: list[dict[str, Any]] = []
        if self.remediation is not None:
            for r in self.remediation.runs(incident_id=inc.id, limit=1000):
                runs.append(run_view(self.remediation, r))
            skipped = [{"at_ms": a["at_ms"], **a["detail"]} for a in self.remediation.audit(None, limit=5000)
                       if a["event"] == "skipped" and a["detail"].get("incident") == inc.id]  # fmt: skip
        live = self.live_graph()
        return {**inc.to_dict(), "subgraph": subgraph(inc, live), "live_graph": live is not None, "runs": runs,
                "skipped": skipped, "remediation": self.remediation is not None}  # fmt: skip

    def approve(self, run_id: str, body: ApproveIn) -> dict[str, Any]:
        """Approve the gate ``run_id`` waits at, through the approver."""
        store = self._rstore()
        run = store.run(run_id)
        if run is None:
            raise ApiError(404, "no such playbook run", "run_id", run_id)
        step = store.waiting_step(run_id)
        if step is None:
            why = "has finished" if run["status"] in _TERMINAL else "is not waiting for an approval"
            raise ApiError(409, f"{why} (status {run['status']})", "run_id", run_id)
        first, signalled = self.approver(store, run, step, by=body.by or "console", at_ms=self.clock(),
                                         comment=body.comment)  # fmt: skip
        return {"run_id": run_id, "step": step, "first": first, "signalled": signalled,
                "run": run_view(store, store.run(run_id) or run)}  # fmt: skip


def _decode(cursor: str) -> tuple[int, str]:
    ms, sep, ident = cursor.partition(":")
    try:
        if not sep or not ident:
            raise ValueError(cursor)
        return int(ms), ident
    except ValueError:
        raise ApiError(422, "is not a cursor of this list (pass the previous page's next_cursor)", "cursor",
                       cursor[:200]) from None  # fmt: skip


def add_routes(app: FastAPI, view: IncidentsView) -> None:
    """The routes of the module docstring, on ``app``."""

    @app.get("/api/incidents")
    def incidents(status: Literal["open", "mitigated", "resolved"] | None = None,
                  limit: Annotated[int, Query(ge=1, le=500)] = 50,
                  cursor: Annotated[str | None, Query(max_length=400)] = None) -> Any:  # fmt: skip
        return view.page(status, limit, cursor)

    @app.get("/api/incidents/{incident_id}")
    def incident(incident_id: Id) -> Any:
        return view.one(incident_id)

    @app.post("/api/remediation/{run_id}/approve", status_code=201)
    def approve(run_id: Id, body: Annotated[ApproveIn, Body()]) -> Any:
        return view.approve(run_id, body)
