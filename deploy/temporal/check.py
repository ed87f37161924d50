#!/usr/bin/env python3
"""End-to-end check of the local Temporal server (deploy/temporal/temporal.sh up) with the temporalio SDK.

1. A trivial workflow with one activity, on an in-process worker: the result comes back.
2. Durable execution across a worker crash: a workflow runs activity `step_one`, then `step_two`, which
   blocks; the worker *process* is killed with SIGKILL while `step_two` runs; a new worker process is
   started; the workflow finishes on it, `step_two` is retried there, and `step_one` (already completed,
   recorded in the workflow's history) does not run again.

Usage:  python deploy/temporal/check.py [--address 127.0.0.1:7233] [--namespace default]
Needs:  pip install temporalio  (checked with temporalio 1.35.0); exits 0 when every check passed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

from temporalio import activity, workflow
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.common import RetryPolicy
from temporalio.worker import Worker

# ---------------------------------------------------------------------------------------------
# workflows and activities (imported by the worker subprocesses too: `check.py worker ...`)


@activity.defn
async def compose_greeting(name: str) -> str:
    return f"Hello, {name}!"


@workflow.defn(sandboxed=False)
class Greet:
    @workflow.run
    async def run(self, name: str) -> str:
        return await workflow.execute_activity(
            compose_greeting, name, start_to_close_timeout=timedelta(seconds=10)
        )


@activity.defn
async def step_one(state_dir: str) -> str:
    # one line per execution: the check counts them
    with open(Path(state_dir) / "step_one.runs", "a") as f:
        f.write(f"{os.getpid()}\n")
    return f"step_one@{os.getpid()}"


@activity.defn
async def step_two(state_dir: str) -> str:
    state = Path(state_dir)
    with open(state / "step_two.runs", "a") as f:
        f.write(f"{os.getpid()} attempt={activity.info().attempt}\n")
    # block (heartbeating) until the check releases us: the first attempt is where the worker dies
    while not (state / "release").exists():
        activity.heartbeat()
        await asyncio.sleep(0.2)
    return f"step_two@{os.getpid()}"


@workflow.defn(sandboxed=False)
class TwoSteps:
    @workflow.run
    async def run(self, state_dir: str) -> list[str]:
        quick_retry = RetryPolicy(initial_interval=timedelta(milliseconds=200), maximum_attempts=5)
        one = await workflow.execute_activity(
            step_one, state_dir, start_to_close_timeout=timedelta(seconds=30), retry_policy=quick_retry
        )
        # a 2 s heartbeat timeout: a dead worker's attempt is given up (and retried) within 2 s
        two = await workflow.execute_activity(
            step_two,
            state_dir,
            start_to_close_timeout=timedelta(seconds=60),
            heartbeat_timeout=timedelta(seconds=2),
            retry_policy=quick_retry,
        )
        return [one, two]


# ---------------------------------------------------------------------------------------------
# worker subprocess


async def run_worker(address: str, namespace: str, task_queue: str) -> None:
    client = await Client.connect(address, namespace=namespace)
    # the dead worker's sticky queue holds the next workflow task until this timeout: keep it short
    worker = Worker(
        client, task_queue=task_queue, workflows=[TwoSteps], activities=[step_one, step_two],
        sticky_queue_schedule_to_start_timeout=timedelta(seconds=1),
    )
    print(f"worker pid {os.getpid()} polling {task_queue}", flush=True)
    await worker.run()


def spawn_worker(args: argparse.Namespace, task_queue: str, log: Path) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, __file__, "--address", args.address, "--namespace", args.namespace,
           "worker", task_queue]
    return subprocess.Popen(cmd, stdout=open(log, "ab"), stderr=subprocess.STDOUT)


async def wait_for(path: Path, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists() or not path.read_text().strip():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


# ---------------------------------------------------------------------------------------------
# checks


def ok(msg: str) -> None:
    print(f"ok: {msg}", flush=True)


async def check_trivial(client: Client) -> None:
    task_queue = f"vigil-check-greet-{uuid.uuid4().hex[:8]}"
    t0 = time.monotonic()
    async with Worker(client, task_queue=task_queue, workflows=[Greet], activities=[compose_greeting]):
        result = await client.execute_workflow(
            Greet.run, "Vigil", id=f"greet-{uuid.uuid4()}", task_queue=task_queue,
            execution_timeout=timedelta(seconds=30),
        )
    assert result == "Hello, Vigil!", result
    ok(f"trivial workflow + activity on an in-process worker returned {result!r} in {time.monotonic() - t0:.2f}s")


async def check_worker_crash(client: Client, args: argparse.Namespace) -> None:
    task_queue = f"vigil-check-crash-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory(prefix="vigil-temporal-check-") as tmp:
        state = Path(tmp)
        log = state / "workers.log"
        first = spawn_worker(args, task_queue, log)
        second = None
        try:
            handle = await client.start_workflow(
                TwoSteps.run, str(state), id=f"two-steps-{uuid.uuid4()}", task_queue=task_queue,
                execution_timeout=timedelta(seconds=120),
            )
            await wait_for(state / "step_two.runs", "step_two to start on the first worker")
            runs_one = (state / "step_one.runs").read_text().split()
            assert runs_one == [str(first.pid)], runs_one
            ok(f"step_one completed and step_two started on worker pid {first.pid}")

            first.send_signal(signal.SIGKILL)
            first.wait(timeout=10)
            assert first.returncode == -signal.SIGKILL, first.returncode
            ok(f"worker pid {first.pid} killed with SIGKILL in the middle of step_two")

            second = spawn_worker(args, task_queue, log)
            (state / "release").write_text("go\n")
            t0 = time.monotonic()
            result = await asyncio.wait_for(handle.result(), timeout=90)
            ok(f"workflow finished on the new worker pid {second.pid} {time.monotonic() - t0:.1f}s after it started: "
               f"{result}")

            runs_one = (state / "step_one.runs").read_text().split()
            runs_two = (state / "step_two.runs").read_text().splitlines()
            assert runs_one == [str(first.pid)], f"step_one ran again: {runs_one}"
            assert result == [f"step_one@{first.pid}", f"step_two@{second.pid}"], result
            assert len(runs_two) == 2 and runs_two[0].startswith(f"{first.pid} attempt=1") \
                and runs_two[1].startswith(f"{second.pid} attempt=2"), runs_two
            ok(f"step_one ran exactly once (pid {first.pid}); step_two ran twice: {runs_two}")

            scheduled = [
                e.activity_task_scheduled_event_attributes.activity_type.name
                async for e in handle.fetch_history_events()
                if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
            ]
            assert scheduled == ["step_one", "step_two"], scheduled
            ok(f"history schedules each activity once: {scheduled} (step_two's retry is an attempt, not a new task)")
        finally:
            for proc in (first, second):
                if proc is not None and proc.poll() is None:
                    proc.terminate()
                    try:
                        proc.wait(timeout=15)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()
            if log.exists() and sys.exc_info()[0] is not None:
                print(log.read_text(), file=sys.stderr)


async def main_async(args: argparse.Namespace) -> None:
    if args.command == "worker":
        await run_worker(args.address, args.namespace, args.task_queue)
        return
    t0 = time.monotonic()
    client = await Client.connect(args.address, namespace=args.namespace)
    ok(f"connected to {args.address} (namespace {args.namespace!r}) in {time.monotonic() - t0:.2f}s")
    await check_trivial(client)
    await check_worker_crash(client, args)
    print("all Temporal checks passed", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--address", default=f"127.0.0.1:{os.environ.get('VIGIL_TEMPORAL_PORT', '7233')}")
    p.add_argument("--namespace", default=os.environ.get("VIGIL_TEMPORAL_NAMESPACE", "default"))
    sub = p.add_subparsers(dest="command")
    w = sub.add_parser("worker", help="(internal) run a worker for the crash check")
    w.add_argument("task_queue")
    asyncio.run(main_async(p.parse_args()))


if __name__ == "__main__":
    main()
