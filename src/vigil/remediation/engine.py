"""From an incident to playbook runs: matching, the guards, and the steps — the same on every executor.

:class:`Remediator` decides: for each playbook whose match holds, in file order, it checks the allow-list,
the cooldown (per playbook and service), the concurrency limits (per playbook and overall) and that the
incident's values render safely; then it records a run (its id ``<incident>:<playbook>`` makes starting
idempotent) and hands it to an executor. Every decision, taken or not, is in the audit log.

:class:`StepRunner` is how a run's steps are carried out, whichever executor drives them: a step whose
idempotency key ``<run>/<index>`` is in the store is never run again; an ``approve`` gate holds until an
approval is recorded; in dry-run, changing steps are recorded as "would …".

Executors: :class:`InProcessExecutor` (here: synchronous, retries in place, approval gates resume with
:meth:`InProcessExecutor.resume`) and the Temporal one (:mod:`vigil.integrations.temporal`: durable across
worker crashes). Both call :class:`StepRunner` per step.

Examples:
    >>> from vigil.incidents.model import Cause, Incident
    >>> from vigil.remediation.spec import parse_playbooks
    >>> spec = parse_playbooks({"dry_run": True, "allow": ["p"], "deploy_api": {"url": "http://api"},
    ...     "playbooks": [{"name": "p", "match": {"kind": ["deploy"]},
    ...                    "steps": [{"rollback": {"service": "{cause.service}"}}]}]})
    >>> store = RemediationStore(":memory:")
    >>> r = Remediator(spec, store, InProcessExecutor(StepRunner(spec, store)))
    >>> r.on_incident(Incident("inc-1", 0, causes=[Cause("cart", "deploy", 0.9)]), at_ms=1_000)
    ['inc-1:p']
    >>> store.run("inc-1:p")["status"], store.step_result("inc-1:p/0")["would"]
    ('succeeded', 'POST http://api/actions/rollback')
    >>> r.on_incident(Incident("inc-2", 0, causes=[Cause("cart", "deploy", 0.9)]), at_ms=2_000)  # cooldown
    []
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

from vigil.errors import ConfigError
from vigil.incidents.model import Incident
from vigil.remediation.actions import ActionError, Actions
from vigil.remediation.spec import Playbook, PlaybookSet, PlaybookStep, render
from vigil.remediation.store import RemediationStore

log = logging.getLogger("vigil.remediation")


class Executor(Protocol):
    """Drives a recorded run's steps (in-process, or as a Temporal workflow)."""

    name: str

    def start(self, run_id: str, playbook: Playbook, at_ms: int) -> None:
        """Begin (or, for a run already started, do nothing)."""

    def approve(self, run_id: str, step: int, *, by: str, at_ms: int, comment: str = "") -> bool:
        """Record an approval of a gate and let the run go on; ``False`` if it was approved before."""


class StepRunner:
    """Carries out one step of a run, idempotently (module docstring)."""

    def __init__(self, spec: PlaybookSet, store: RemediationStore, actions: Actions | None = None) -> None:
        self.spec, self.store = spec, store
        self.actions = actions or Actions(spec)

    def playbook(self, name: str) -> Playbook:
        """The playbook called ``name`` (the run's)."""
        for p in self.spec.playbooks:
            if p.name == name:
                return p
        raise ConfigError(
            "is not in the playbook file (was it removed while the run was in flight?)",
            section="remediation",
            field="playbook",
            value=name,
        )

    def gate_open(self, run_id: str, index: int) -> bool:
        """Whether the ``approve`` step at ``index`` has been approved."""
        return self.store.approval(run_id, index) is not None

    def run_step(self, run_id: str, index: int, at_ms: int) -> dict[str, Any]:
        """Carry out step ``index`` of ``run_id`` unless it already completed; its (recorded) result.

        Raises:
            ActionError: the step failed (``retryable`` says whether to try again).
        """
        key = f"{run_id}/{index}"
        done = self.store.step_result(key)
        if done is not None:
            return dict(done)
        run = self.store.run(run_id)
        if run is None:
            raise ActionError(f"no run {run_id!r} in {self.store.path}", retryable=False)
        step = self.playbook(run["playbook"]).steps[index]
        if step.action == "approve":
            a = self.store.approval(run_id, index)
            if a is None:
                raise ActionError(f"{key}: the approval gate is still closed", retryable=False)
            result: dict[str, Any] = {"approved_by": a["by"], "comment": a["comment"]}
        else:
            incident = Incident.from_dict(run["incident"])
            rendered = PlaybookStep(step.action, render(step.params, incident))
            self.store.log(
                run_id,
                "step_started",
                at_ms,
                step=index,
                detail={"action": step.action, "params": rendered.params, "dry_run": run["dry_run"]},
            )
            result = self.actions.run(rendered, key=key, dry_run=run["dry_run"], incident_id=incident.id)
        self.store.step_done(key, result, at_ms)
        return result


class InProcessExecutor:
    """Runs steps right away in this process; a gate stops the run until :meth:`approve` (or :meth:`resume`).

    Not durable across a crash of this process beyond what the store records (completed steps are never
    repeated; ``resume`` picks a run up again). For durable execution use the Temporal executor.

    Args:
        runner: the step runner.
        clock: event-time milliseconds for the audit log (default: the ``at_ms`` of the triggering call).
        attempts: tries per step when an error is retryable.
    """

    name = "inprocess"

    def __init__(self, runner: StepRunner, *, attempts: int = 3, clock: Callable[[], int] | None = None) -> None:
        self.runner, self.attempts, self.clock = runner, max(1, attempts), clock

    def start(self, run_id: str, playbook: Playbook, at_ms: int) -> None:
        """Run the steps until done, failed, or a closed gate."""
        self.resume(run_id, at_ms)

    def resume(self, run_id: str, at_ms: int) -> str:
        """Carry on with ``run_id`` from its first incomplete step; the run's status afterwards."""
        store = self.runner.store
        run = store.run(run_id)
        if run is None or run["status"] in ("succeeded", "failed", "rejected"):
            return "missing" if run is None else str(run["status"])
        steps = self.runner.playbook(run["playbook"]).steps
        for i, step in enumerate(steps):
            if store.step_result(f"{run_id}/{i}") is not None:
                continue
            if step.action == "approve" and not self.runner.gate_open(run_id, i):
                if run["status"] != "waiting_approval":
                    reason = render(step.params.get("reason", ""), Incident.from_dict(run["incident"]))
                    store.set_status(run_id, "waiting_approval", at_ms, {"step": i, "reason": reason})
                return "waiting_approval"
            if run["status"] == "waiting_approval":
                store.set_status(run_id, "running", at_ms)
                run["status"] = "running"
            for attempt in range(1, self.attempts + 1):
                try:
                    self.runner.run_step(run_id, i, at_ms)
                    break
                except ActionError as exc:
                    store.log(
                        run_id,
                        "step_failed",
                        at_ms,
                        step=i,
                        detail={"error": str(exc), "attempt": attempt, "retryable": exc.retryable},
                    )
                    if not exc.retryable or attempt == self.attempts:
                        store.set_status(run_id, "failed", at_ms, {"step": i, "error": str(exc)})
                        return "failed"
        store.set_status(run_id, "succeeded", at_ms)
        return "succeeded"

    def approve(self, run_id: str, step: int, *, by: str, at_ms: int, comment: str = "") -> bool:
        """Record the approval and resume the run."""
        first = self.runner.store.approve(run_id, step, by=by, at_ms=at_ms, comment=comment)
        self.resume(run_id, at_ms)
        return first


class Remediator:
    """Incidents in, guarded playbook runs out (module docstring)."""

    def __init__(self, spec: PlaybookSet, store: RemediationStore, executor: Executor) -> None:
        self.spec, self.store, self.executor = spec, store, executor

    def on_incident(self, incident: Incident, at_ms: int) -> list[str]:
        """Start every playbook the incident calls for and the guards allow; the ids of the runs started."""
        started = []
        top = incident.top
        for pb in self.spec.playbooks:
            if not pb.match.matches(incident):
                continue
            run_id = f"{incident.id}:{pb.name}"
            why = self._refusal(pb, incident, at_ms)
            if why is not None:
                self.store.log(
                    None,
                    "skipped",
                    at_ms,
                    detail={"playbook": pb.name, "incident": incident.id, "run": run_id, "why": why},
                )
                log.info("playbook %s not started for %s: %s", pb.name, incident.id, why)
                continue
            assert top is not None  # a match needs a top cause
            if not self.store.create_run(
                run_id,
                playbook=pb.name,
                incident_id=incident.id,
                service=top.service,
                dry_run=self.spec.dry_run,
                at_ms=at_ms,
                incident=incident.to_dict(),
                executor=self.executor.name,
                status="running",
            ):
                continue  # already started: starting is idempotent
            self.executor.start(run_id, pb, at_ms)
            started.append(run_id)
        return started

    def _refusal(self, pb: Playbook, incident: Incident, at_ms: int) -> str | None:
        if pb.name not in self.spec.allow:
            return "not allow-listed"
        if self.store.run(f"{incident.id}:{pb.name}") is not None:
            return "already started for this incident"
        service = incident.top.service if incident.top else ""
        last = self.store.last_run_ms(pb.name, service)
        if last is not None and at_ms - last < pb.cooldown_ms:
            ago, cooldown = (at_ms - last) / 1000, pb.cooldown_ms / 1000
            return f"cooldown: last run on {service} {ago:.0f} s ago (cooldown {cooldown:.0f} s)"
        if self.store.active(pb.name) >= pb.max_concurrent:
            return f"{pb.max_concurrent} run(s) of this playbook in flight (max_concurrent)"
        if self.store.active() >= self.spec.max_concurrent:
            return f"{self.spec.max_concurrent} runs in flight overall (max_concurrent)"
        try:
            for s in pb.steps:
                render(s.params, incident)
        except ConfigError as exc:
            return f"refused: {exc}"
        return None
