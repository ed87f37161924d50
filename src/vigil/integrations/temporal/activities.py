"""The activities of :class:`~.workflow.PlaybookWorkflow`: thin calls into the remediation engine.

Each is a plain (synchronous) method run on the worker's thread pool. :meth:`PlaybookActivities.run_step`
is :meth:`~vigil.remediation.engine.StepRunner.run_step`: a step already recorded in the store returns its
recorded result without acting again, and the action carries its idempotency key to the API, so the retry
Temporal makes after a worker died mid-call is a no-op. A failure that retrying cannot help (a closed gate,
a 4xx answer, a missing token) is raised as non-retryable.
"""

from __future__ import annotations

from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from vigil.integrations.temporal.workflow import (
    GATE_ACTIVITY,
    STATUS_ACTIVITY,
    STEP_ACTIVITY,
    StatusArgs,
    StepArgs,
)
from vigil.remediation.actions import ActionError
from vigil.remediation.engine import StepRunner


class PlaybookActivities:
    """The activities, bound to one step runner (its playbooks, store and endpoints)."""

    def __init__(self, runner: StepRunner) -> None:
        self.runner = runner

    @activity.defn(name=STEP_ACTIVITY)
    def run_step(self, args: StepArgs) -> dict[str, Any]:
        """Carry out one step, idempotently (its recorded result)."""
        try:
            return self.runner.run_step(args.run_id, args.index, args.at_ms)
        except ActionError as exc:
            attempt = activity.info().attempt
            self.runner.store.log(
                args.run_id,
                "step_failed",
                args.at_ms,
                step=args.index,
                detail={"error": str(exc), "attempt": attempt, "retryable": exc.retryable},
            )
            raise ApplicationError(
                str(exc), type="Retryable" if exc.retryable else "NonRetryable", non_retryable=not exc.retryable
            ) from None

    @activity.defn(name=GATE_ACTIVITY)
    def gate_open(self, args: StepArgs) -> bool:
        """Whether the gate at ``args.index`` is approved in the store."""
        return self.runner.gate_open(args.run_id, args.index)

    @activity.defn(name=STATUS_ACTIVITY)
    def set_status(self, args: StatusArgs) -> None:
        """Move the run to a status (audited), unless it is already there."""
        run = self.runner.store.run(args.run_id)
        if run is not None and run["status"] != args.status:
            self.runner.store.set_status(args.run_id, args.status, args.at_ms, dict(args.detail))

    def all(self) -> list[Any]:
        """Every activity, for a worker."""
        return [self.run_step, self.gate_open, self.set_status]
