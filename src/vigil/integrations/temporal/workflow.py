"""The playbook as a Temporal workflow: deterministic orchestration only; every effect is an activity.

This module imports nothing but Temporal and the standard library, so the SDK's workflow sandbox can load it
as it is. The activities (:mod:`.activities`) call :meth:`vigil.remediation.engine.StepRunner.run_step`,
whose idempotency keys (``<run>/<step>`` in the store, and as the ``Idempotency-Key`` header) make a step
that Temporal retries after a worker died a no-op: it is never carried out twice.

An ``approve`` step is a gate: the workflow asks the store whether it was approved (it may have been, through
the CLI, before the workflow got there), and otherwise marks the run ``waiting_approval`` and waits for the
``approve`` signal, looking at the store again every ``gate_poll_s`` in case an approval was recorded without
a signal (e.g. ``vigil remediation approve`` with no Temporal address). A durable timer: a gate can wait days.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

WORKFLOW = "vigil-playbook"
STEP_ACTIVITY = "vigil-run-step"
GATE_ACTIVITY = "vigil-gate-open"
STATUS_ACTIVITY = "vigil-set-status"


@dataclass
class PlaybookInput:
    """What a workflow needs: the run (recorded in the store first) and the shape of its playbook."""

    run_id: str
    actions: list[str]
    at_ms: int
    step_timeout_s: float = 30.0
    attempts: int = 5
    gate_poll_s: float = 30.0


@dataclass
class StepArgs:
    """One step of one run, at an event time."""

    run_id: str
    index: int
    at_ms: int


@dataclass
class StatusArgs:
    """A run's new status (audited)."""

    run_id: str
    status: str
    at_ms: int
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class Approval:
    """The signal an approval sends: which gate, and when (event time, for the audit log)."""

    index: int
    at_ms: int


async def _quick(activity: str, arg: Any) -> Any:
    """A bookkeeping activity (store reads and writes): short, retried."""
    return await workflow.execute_activity(
        activity, arg, start_to_close_timeout=timedelta(seconds=30), retry_policy=RetryPolicy(maximum_attempts=10)
    )


@workflow.defn(name=WORKFLOW)
class PlaybookWorkflow:
    """Runs a playbook's steps in order as activities; gates wait for the ``approve`` signal (module docstring)."""

    def __init__(self) -> None:
        self._approved: dict[int, int] = {}
        self._waiting: int | None = None

    @workflow.signal(name="approve")
    def approve(self, approval: Approval) -> None:
        """A gate was approved (the approval itself is already in the store)."""
        self._approved[approval.index] = approval.at_ms

    def _gate(self, index: int) -> Callable[[], bool]:
        return lambda: index in self._approved

    @workflow.query(name="waiting")
    def waiting(self) -> int | None:
        """The index of the gate the run waits at, if any."""
        return self._waiting

    @workflow.run
    async def run(self, inp: PlaybookInput) -> str:
        """The steps, in order; the run's final status."""
        at = inp.at_ms
        retry = RetryPolicy(
            initial_interval=timedelta(seconds=1),
            backoff_coefficient=2.0,
            maximum_interval=timedelta(seconds=30),
            maximum_attempts=max(1, inp.attempts),
            non_retryable_error_types=["NonRetryable"],
        )
        for i, action in enumerate(inp.actions):
            if action == "approve":
                while not await _quick(GATE_ACTIVITY, StepArgs(inp.run_id, i, at)):
                    if self._waiting != i:
                        self._waiting = i
                        await _quick(STATUS_ACTIVITY, StatusArgs(inp.run_id, "waiting_approval", at, {"step": i}))
                    try:
                        await workflow.wait_condition(self._gate(i), timeout=timedelta(seconds=inp.gate_poll_s))
                    except TimeoutError:
                        pass  # look at the store again (an approval without a signal)
                at = max(at, self._approved.get(i, at))
                if self._waiting is not None:
                    self._waiting = None
                    await _quick(STATUS_ACTIVITY, StatusArgs(inp.run_id, "running", at))
            try:
                await workflow.execute_activity(
                    STEP_ACTIVITY,
                    StepArgs(inp.run_id, i, at),
                    start_to_close_timeout=timedelta(seconds=inp.step_timeout_s),
                    retry_policy=retry,
                )
            except ActivityError as exc:
                cause = exc.cause
                error = cause.message if isinstance(cause, ApplicationError) else str(cause or exc)
                await _quick(STATUS_ACTIVITY, StatusArgs(inp.run_id, "failed", at, {"step": i, "error": error}))
                return "failed"
        await _quick(STATUS_ACTIVITY, StatusArgs(inp.run_id, "succeeded", at))
        return "succeeded"
