"""Playbooks on Temporal: the worker, and :class:`TemporalExecutor`, the remediation engine's durable executor.

* :func:`run_worker` (``vigil remediation worker``) polls a task queue and runs :class:`~.workflow.PlaybookWorkflow`
  and its activities against one playbook file, store and set of endpoints. Run several: Temporal hands a
  dead worker's work to another, and the store's idempotency keys make a repeated step a no-op.
* :class:`TemporalExecutor` is what :class:`~vigil.remediation.engine.Remediator` calls to start a recorded
  run (a workflow whose id is ``vigil-run-<run id>``, so starting twice starts once) and to approve a gate
  (recorded in the store, then signalled). With ``worker=True`` it also runs a worker in this process.

The executor keeps an asyncio loop in a background thread (the SDK is async; the engine's interface is not).

Examples (needs a server; see ``make temporal-up``)::

    ex = TemporalExecutor(StepRunner(spec, store), address="127.0.0.1:7233", worker=True)
    remediator = Remediator(spec, store, ex)
    remediator.on_incident(incident, at_ms)     # -> ["inc-1:rollback"], running on Temporal
    ex.approve("inc-1:rollback", 0, by="ann", at_ms=at_ms)
    ex.result("inc-1:rollback", timeout_s=60)   # -> "succeeded"
    ex.close()
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from temporalio.client import Client, WorkflowHandle
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from vigil.errors import VigilError
from vigil.integrations.temporal.activities import PlaybookActivities
from vigil.integrations.temporal.workflow import WORKFLOW, Approval, PlaybookInput, PlaybookWorkflow
from vigil.remediation.engine import StepRunner
from vigil.remediation.spec import Playbook

log = logging.getLogger("vigil.remediation.temporal")
T = TypeVar("T")

DEFAULT_ADDRESS = "127.0.0.1:7233"
DEFAULT_QUEUE = "vigil-remediation"


def workflow_id(run_id: str, store_id: str = "") -> str:
    """The workflow id of a run: one workflow per run of a store, ever (a new store never meets an old id)."""
    return f"vigil-{store_id[:12]}-{run_id}" if store_id else f"vigil-run-{run_id}"


async def connect(address: str, namespace: str = "default") -> Client:
    """A client of the server at ``address``; a clear error when none answers."""
    try:
        return await Client.connect(address, namespace=namespace)
    except RuntimeError as exc:  # the SDK's connection failure
        raise VigilError(
            f"no Temporal server answers at {address} ({exc}); start one with `make temporal-up`"
        ) from None


def make_worker(client: Client, runner: StepRunner, *, task_queue: str = DEFAULT_QUEUE,
                threads: int = 4) -> Worker:  # fmt: skip
    """A worker for the playbook workflow and its activities (not yet running)."""
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="vigil-activity")
    return Worker(
        client,
        task_queue=task_queue,
        workflows=[PlaybookWorkflow],
        activities=PlaybookActivities(runner).all(),
        activity_executor=pool,
        max_concurrent_activities=threads,
        # the workflow module imports only temporalio and the standard library; let vigil's package __init__s
        # (which the sandbox would re-import) pass through instead of being re-executed per workflow
        workflow_runner=SandboxedWorkflowRunner(
            restrictions=SandboxRestrictions.default.with_passthrough_modules("vigil")
        ),
    )


async def run_worker(runner: StepRunner, *, address: str = DEFAULT_ADDRESS, namespace: str = "default",
                     task_queue: str = DEFAULT_QUEUE, stop: asyncio.Event | None = None,
                     ready: Callable[[], None] | None = None) -> None:  # fmt: skip
    """Run a worker until ``stop`` is set (or the task is cancelled)."""
    client = await connect(address, namespace)
    worker = make_worker(client, runner, task_queue=task_queue)
    async with worker:
        if ready is not None:
            ready()
        await (stop.wait() if stop is not None else asyncio.Event().wait())


class TemporalExecutor:
    """Starts recorded runs as workflows and signals approvals (module docstring).

    Args:
        runner: the step runner (its store is where runs and approvals are recorded).
        address, namespace, task_queue: the server and queue.
        worker: also run a worker in this process.
        step_timeout_s: how long one step may take before Temporal tries it again (elsewhere, if its worker died).
        attempts: tries per step for retryable failures.
        gate_poll_s: how often a waiting gate looks at the store for an approval that came without a signal.
    """

    name = "temporal"

    def __init__(self, runner: StepRunner, *, address: str = DEFAULT_ADDRESS, namespace: str = "default",
                 task_queue: str = DEFAULT_QUEUE, worker: bool = False, step_timeout_s: float = 30.0,
                 attempts: int = 5, gate_poll_s: float = 30.0) -> None:  # fmt: skip
        self.runner, self.task_queue = runner, task_queue
        self.step_timeout_s, self.attempts, self.gate_poll_s = step_timeout_s, attempts, gate_poll_s
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="vigil-temporal", daemon=True)
        self._thread.start()
        self._stop: asyncio.Event | None = None
        self._worker_task: concurrent.futures.Future[None] | None = None
        try:
            self.client: Client = self._call(connect(address, namespace))
            if worker:
                started = threading.Event()

                async def go() -> None:
                    self._stop = asyncio.Event()
                    w = make_worker(self.client, runner, task_queue=task_queue)
                    async with w:
                        started.set()
                        await self._stop.wait()

                self._worker_task = asyncio.run_coroutine_threadsafe(go(), self._loop)
                while not started.wait(0.05):
                    if self._worker_task.done():
                        self._worker_task.result()  # raises what stopped it
        except BaseException:
            self.close()
            raise

    def _call(self, coro: Coroutine[Any, Any, T] | Awaitable[T], timeout_s: float | None = 60.0) -> T:
        async def wrap() -> T:
            return await coro

        return asyncio.run_coroutine_threadsafe(wrap(), self._loop).result(timeout_s)

    def _handle(self, run_id: str) -> WorkflowHandle[Any, Any]:
        return self.client.get_workflow_handle(workflow_id(run_id, self.runner.store.store_id))

    def start(self, run_id: str, playbook: Playbook, at_ms: int) -> None:
        """Start the run's workflow (a run already started is left alone)."""
        inp = PlaybookInput(run_id, [s.action for s in playbook.steps], int(at_ms), self.step_timeout_s,
                            self.attempts, self.gate_poll_s)  # fmt: skip
        try:
            self._call(
                self.client.start_workflow(
                    WORKFLOW,
                    inp,
                    id=workflow_id(run_id, self.runner.store.store_id),
                    task_queue=self.task_queue,
                    id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                )
            )
            wid = workflow_id(run_id, self.runner.store.store_id)
            self.runner.store.log(run_id, "workflow_started", at_ms, detail={"workflow_id": wid})
        except WorkflowAlreadyStartedError:
            log.info("run %s: its workflow was already started", run_id)

    def approve(self, run_id: str, step: int, *, by: str, at_ms: int, comment: str = "") -> bool:
        """Record the approval in the store, then signal the workflow (so it goes on at once)."""
        first = self.runner.store.approve(run_id, step, by=by, at_ms=at_ms, comment=comment)
        signal(self._call, self.client, workflow_id(run_id, self.runner.store.store_id), step, at_ms)
        return first

    def waiting(self, run_id: str) -> int | None:
        """The gate the run's workflow waits at (a query), if any."""
        return self._call(self._handle(run_id).query("waiting"))  # type: ignore[no-any-return]

    def result(self, run_id: str, timeout_s: float = 120.0) -> str:
        """Wait for the run's workflow to end; its final status."""
        return self._call(self._handle(run_id).result(), timeout_s)  # type: ignore[no-any-return]

    def close(self) -> None:
        """Stop the in-process worker (if any) and the loop."""
        if self._stop is not None and self._worker_task is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
            try:
                self._worker_task.result(30)
            except Exception:  # noqa: BLE001 - closing: report, don't raise
                log.exception("the in-process Temporal worker stopped with an error")
            self._stop = None
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        if not self._loop.is_running():
            self._loop.close()


def signal(call: Callable[[Any], Any], client: Client, wid: str, step: int, at_ms: int) -> bool:
    """Send the ``approve`` signal to the workflow ``wid``; ``False`` when it is not running."""
    try:
        call(client.get_workflow_handle(wid).signal("approve", Approval(step, int(at_ms))))
        return True
    except RPCError as exc:  # not found, or already completed
        log.info("workflow %s: not running, not signalled (%s)", wid, exc)
        return False


def approve_and_signal(runner_store: Any, run_id: str, step: int, *, by: str, at_ms: int, comment: str = "",
                       address: str = DEFAULT_ADDRESS, namespace: str = "default") -> tuple[bool, bool]:  # fmt: skip
    """For the CLI: record an approval, then signal the run's workflow; (first approval?, signalled?)."""
    first = runner_store.approve(run_id, step, by=by, at_ms=at_ms, comment=comment)

    async def go() -> bool:
        client = await connect(address, namespace)
        try:
            wid = workflow_id(run_id, runner_store.store_id)
            await client.get_workflow_handle(wid).signal("approve", Approval(step, int(at_ms)))
            return True
        except RPCError as exc:
            log.info("run %s: no running workflow to signal (%s)", run_id, exc)
            return False

    return first, asyncio.run(go())
