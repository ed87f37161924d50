"""Playbooks on a real Temporal server: a killed worker's run resumes elsewhere without acting twice; an
approval gate holds until approved; dry-run changes nothing. The deploy API is the simulator's control API,
served over HTTP, which counts the Idempotency-Keys it receives."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from vigil.apps.services.sim import ServiceSimSpec, ServiceSimulator
from vigil.apps.services.sim.control import SimRunner, control_app
from vigil.console.server import serve_console
from vigil.incidents.model import Cause, Incident
from vigil.integrations.temporal import TemporalExecutor
from vigil.remediation import RemediationStore, Remediator, StepRunner, load_playbooks

VIGIL = str(Path(sys.executable).with_name("vigil"))
TOKEN = "t0ken-" + uuid.uuid4().hex


def wait_for(cond: Callable[[], Any], what: str, timeout_s: float = 60.0) -> Any:
    """Wait until ``cond()`` is truthy (a condition, with a generous deadline only against hanging)."""
    deadline = time.monotonic() + timeout_s
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


class HoldOnce:
    """ASGI wrapper: the first request to ``path`` is carried out, but its answer is held until ``release``."""

    def __init__(self, app: Any, path: str) -> None:
        self.app, self.path = app, path
        self.arrived, self.release = threading.Event(), threading.Event()
        self.held = False

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != self.path or self.held:
            await self.app(scope, receive, send)
            return
        self.held = True
        sent: list[Any] = []

        async def keep(msg: Any) -> None:
            sent.append(msg)

        await self.app(scope, receive, keep)
        self.arrived.set()
        while not self.release.is_set():
            await asyncio.sleep(0.05)
        try:
            for msg in sent:
                await send(msg)
        except Exception:  # noqa: BLE001 - the caller is gone (killed): that is the point
            pass


@pytest.fixture
def shop() -> Iterator[tuple[SimRunner, HoldOnce, str]]:
    sim = ServiceSimulator(ServiceSimSpec(services=12, minutes=5, seed=4, faults=(), peak_rate=5.0, window_s=10))
    runner = SimRunner(sim, [], mode="stepped")
    app = HoldOnce(control_app(runner, token=TOKEN), "/actions/restart")
    server, url = serve_console(app, "127.0.0.1", 0)
    try:
        yield runner, app, url.rstrip("/")
    finally:
        app.release.set()
        server.stop()


def _playbooks(tmp: Path, url: str, steps: list[Any], *, dry_run: bool = False) -> Path:
    path = tmp / "playbooks.yaml"
    path.write_text(yaml.safe_dump({
        "dry_run": dry_run, "allow": ["heal"], "deploy_api": {"url": url, "token_env": "SHOP_TOKEN"},
        "playbooks": [{"name": "heal", "match": {"kind": ["deploy"]}, "cooldown": "0s", "steps": steps}],
    }))  # fmt: skip
    return path


def _incident(n: int = 1) -> Incident:
    return Incident(f"inc-{n}-{uuid.uuid4().hex[:6]}", 0, severity="critical", causes=[Cause("cart", "deploy", 0.9)])


def _worker(playbooks: Path, store: Path, address: str, queue: str) -> subprocess.Popen[str]:
    env = {**os.environ, "SHOP_TOKEN": TOKEN}
    p = subprocess.Popen([VIGIL, "remediation", "worker", "--playbooks", str(playbooks), "--store", str(store),
                          "--address", address, "--task-queue", queue],
                         env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)  # fmt: skip
    assert p.stderr is not None
    line = p.stderr.readline()
    assert "worker ready" in line, line + p.stderr.read()
    return p


def test_a_killed_worker_resumes_elsewhere_and_no_action_runs_twice(
    shop: tuple[SimRunner, HoldOnce, str], temporal_address: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner, hold, url = shop
    monkeypatch.setenv("SHOP_TOKEN", TOKEN)
    pb = _playbooks(tmp_path, url, [{"rollback": {"service": "{cause.service}"}},
                                    {"restart": {"service": "{cause.service}"}},
                                    {"scale": {"service": "{cause.service}", "replicas": 3}}])  # fmt: skip
    spec, db, queue = load_playbooks(pb), tmp_path / "remediation.db", f"q-{uuid.uuid4().hex}"
    store = RemediationStore(db)
    ex = TemporalExecutor(StepRunner(spec, store), address=temporal_address, task_queue=queue, step_timeout_s=6)
    a = b = None
    try:
        inc = _incident()
        (run,) = Remediator(spec, store, ex).on_incident(inc, at_ms=1_000)
        a = _worker(pb, db, temporal_address, queue)
        assert hold.arrived.wait(60), "the restart never reached the API"
        a.send_signal(signal.SIGKILL)  # mid-step: the API acted, the worker never heard back
        a.wait(10)
        assert store.step_result(f"{run}/1") is None
        b = _worker(pb, db, temporal_address, queue)
        hold.release.set()
        assert ex.result(run, timeout_s=90) == "succeeded"
    finally:
        for p in (a, b):
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
                p.wait(30)
        ex.close()
    assert [x["action"] for x in runner.sim.world.actions] == ["rollback", "restart", "scale"]  # each once
    assert runner.keys[f"{run}/1"] >= 2  # the restart was sent again by the new worker, and not redone
    # steps recorded as done are not even resent (more than one send only if a slow machine timed a step out)
    assert runner.keys[f"{run}/0"] >= 1 and runner.keys[f"{run}/2"] >= 1
    assert [e["step"] for e in store.audit(run) if e["event"] == "step_done"] == [0, 1, 2]
    assert store.run(run)["status"] == "succeeded" and store.run(run)["executor"] == "temporal"
    assert TOKEN not in db.read_bytes().decode("utf-8", "replace")


def test_an_approval_gate_holds_until_approved(
    shop: tuple[SimRunner, HoldOnce, str], temporal_address: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner, _, url = shop
    monkeypatch.setenv("SHOP_TOKEN", TOKEN)
    pb = _playbooks(tmp_path, url, [{"approve": {"reason": "scale {cause.service}?"}},
                                    {"scale": {"service": "{cause.service}", "replicas": 4}}])  # fmt: skip
    spec, db = load_playbooks(pb), tmp_path / "remediation.db"
    store = RemediationStore(db)
    ex = TemporalExecutor(StepRunner(spec, store), address=temporal_address, task_queue=f"q-{uuid.uuid4().hex}",
                          worker=True, gate_poll_s=1.0)  # fmt: skip
    try:
        r = Remediator(spec, store, ex)
        (run,) = r.on_incident(_incident(1), at_ms=1_000)
        wait_for(lambda: store.run(run)["status"] == "waiting_approval", "the gate")
        assert ex.waiting(run) == 0 and runner.sim.world.actions == []
        out = subprocess.run([VIGIL, "remediation", "approve", run, "--by", "ann", "--store", str(db),
                              "--address", temporal_address], capture_output=True, text=True, timeout=60)  # fmt: skip
        assert out.returncode == 0 and "workflow signalled" in out.stderr, out.stderr
        assert ex.result(run, timeout_s=60) == "succeeded"
        assert [x["action"] for x in runner.sim.world.actions] == ["scale"]
        # approved in the store only (no signal): the gate finds it when it looks again
        (run2,) = r.on_incident(_incident(2), at_ms=2_000)
        wait_for(lambda: store.run(run2)["status"] == "waiting_approval", "the second gate")
        store.approve(run2, 0, by="bob", at_ms=3_000)
        assert ex.result(run2, timeout_s=60) == "succeeded" and len(runner.sim.world.actions) == 2
    finally:
        ex.close()
    events = [e["event"] for e in store.audit(run)]
    assert events.index("run_waiting_approval") < events.index("approved") < events.index("step_done")


def test_dry_run_changes_nothing(
    shop: tuple[SimRunner, HoldOnce, str], temporal_address: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner, _, url = shop
    monkeypatch.setenv("SHOP_TOKEN", TOKEN)
    pb = _playbooks(tmp_path, url, [{"rollback": {"service": "{cause.service}"}},
                                    {"shift_traffic": {"service": "{cause.service}", "weights": {"zone-a": 1}}}],
                    dry_run=True)  # fmt: skip
    spec = load_playbooks(pb)
    store = RemediationStore(tmp_path / "remediation.db")
    ex = TemporalExecutor(StepRunner(spec, store), address=temporal_address, task_queue=f"q-{uuid.uuid4().hex}",
                          worker=True)  # fmt: skip
    try:
        (run,) = Remediator(spec, store, ex).on_incident(_incident(), at_ms=1_000)
        assert ex.result(run, timeout_s=60) == "succeeded"
    finally:
        ex.close()
    assert runner.sim.world.actions == [] and not runner.keys
    assert store.step_result(f"{run}/1")["would"] == f"POST {url}/actions/shift-traffic"
