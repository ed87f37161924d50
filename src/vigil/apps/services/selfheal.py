"""The loop closed on the simulated shop: faults → detection → incidents → RCA → playbooks → healed.

One **scenario** = one simulator run (``services`` services, 10-s windows, a 20-minute warm-up) with one
fault — a bad deploy (the rollback playbook heals it) or a noisy neighbour on one zone's node (draining the
zone heals it) — or none (only the legitimate oddities: a traffic spike, a batch job, a slow warm-up after a
good deploy, which must not trigger any action). Window by window:

1. **Detection**: per service, the p90 latency and the error share of each 10-s bin against the 20 minutes
   before (robust z with the noise floors of :mod:`vigil.rca.scores`); ``sustain`` bins at ``z_thr`` or more
   fire an alert, carrying the trace ids of the service's slowest and failed spans; ``sustain`` bins under
   half of it clear it. The baseline is frozen while an alert fires.
2. **Incidents**: alerts are correlated (:class:`vigil.incidents.Correlator`: time, call-graph distance,
   shared traces); an incident resolves when nothing fires for ``quiet_s``.
3. **RCA** ``rca_delay_s`` after an incident opens: :func:`vigil.rca.rank_causes` on the RED and resource
   series before that moment, with the deploys an operator would see, and the RCA priors in force beside the
   incident store (learned from post-mortems, :mod:`vigil.rca.priors`; none in memory), again every
   ``rediagnose_s`` while no playbook has started (for up to ``confirm_max_s``). When the top cause's own
   server spans are slow in one zone only, the zone goes into its evidence (``zone``; an uninstrumented
   datastore has no server spans, so its zone can't be told and nothing is drained). A release that is slower
   but makes no errors is rolled back only once its latency has settled (:meth:`_Detector.settling`): a good
   release's warm-up fades.
4. **Playbooks** (:data:`PLAYBOOKS`, through the remediation engine with its guards): ``rollback-bad-deploy``
   for a cause of kind ``deploy``, ``drain-degraded-zone`` (``shift_traffic: {drain: "{cause.zone}"}``)
   for saturation or latency confined to one zone; they call the simulator's control API over HTTP, with
   idempotency keys and a bearer token. A playbook whose placeholders can't be filled (no zone) is refused.

Each scenario runs twice: **auto** (playbooks on) and **manual** (off: the fault lasts until the humans'
fix the simulator plans, its scripted end). MTTR = fault start → its last incident resolved. The event
times are the simulator's; nothing reads the wall clock except the report of how long the demo took.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vigil.apps.services.rca_eval import frame_of
from vigil.apps.services.sim import ZONES, ServiceSimSpec, ServiceSimulator
from vigil.apps.services.sim.control import SimRunner, control_app
from vigil.apps.services.sim.emit import MemorySink
from vigil.apps.services.sim.model import KIND_SERVER
from vigil.incidents import Cause, Correlator, Incident, IncidentStore, Signal
from vigil.rca.priors import active_priors
from vigil.rca.rank import rank_causes
from vigil.rca.scores import baseline
from vigil.rca.series import red_frame
from vigil.remediation import RemediationStore, Remediator, StepRunner, parse_playbooks
from vigil.remediation.engine import Executor, InProcessExecutor

__all__ = ["PLAYBOOKS", "SelfHealParams", "run_demo", "run_scenario"]

_DAY0 = 1_772_409_600_000  # 2026-03-02 00:00 UTC
TOKEN_ENV = "VIGIL_SHOP_TOKEN"

#: the demo's playbook file (the deploy API's URL is filled in per scenario)
PLAYBOOKS: dict[str, Any] = {
    "dry_run": False,
    "allow": ["rollback-bad-deploy", "drain-degraded-zone"],
    "max_concurrent": 2,
    "deploy_api": {"url": "http://127.0.0.1:0", "token_env": TOKEN_ENV},
    "playbooks": [
        {"name": "rollback-bad-deploy", "match": {"kind": ["deploy"], "min_score": 0.2}, "cooldown": "10m",
         "steps": [{"rollback": {"service": "{cause.service}"}}]},
        {"name": "drain-degraded-zone", "match": {"kind": ["saturation", "latency"], "min_score": 0.2},
         "cooldown": "10m", "steps": [{"shift_traffic": {"service": "{cause.service}", "drain": "{cause.zone}"}}]},
    ],
}  # fmt: skip


@dataclass(frozen=True)
class SelfHealParams:
    """The scenario's shape and the detector's knobs."""

    services: int = 16
    rate: float = 20.0
    window_s: int = 10
    warmup_min: float = 20.0
    fault_room_min: float = 16.0
    z_thr: float = 6.0
    sustain: int = 3
    baseline_s: float = 1200.0
    rca_delay_s: float = 30.0
    quiet_s: float = 120.0
    hops: int = 2
    settled: float = 0.8
    min_excess: float = 1.5
    settled_times: int = 3
    confirm_max_s: float = 300.0
    rediagnose_s: float = 30.0


@dataclass
class ScenarioResult:
    """What happened in one scenario run."""

    fault: str | None
    seed: int
    mode: str
    root: str | None = None
    fault_start_ms: int | None = None
    detected_ms: int | None = None
    remediated_ms: int | None = None
    resolved_ms: int | None = None
    rca_top: list[str] = field(default_factory=list)
    incidents: list[dict[str, Any]] = field(default_factory=list)
    actions: list[dict[str, Any]] = field(default_factory=list)
    actions_on_false: int = 0
    healed_by_action: bool = False

    @property
    def mttr_s(self) -> float | None:
        """Fault start → its last incident resolved."""
        if self.fault_start_ms is None or self.resolved_ms is None:
            return None
        return (self.resolved_ms - self.fault_start_ms) / 1000.0

    @property
    def to_remediation_s(self) -> float | None:
        """Fault start → the first action on it."""
        if self.fault_start_ms is None or self.remediated_ms is None:
            return None
        return (self.remediated_ms - self.fault_start_ms) / 1000.0


class _Detector:
    """Per-service latency/error alerts on 10-s bins (module docstring, step 1)."""

    def __init__(self, services: list[str], p: SelfHealParams) -> None:
        self.services, self.p = services, p
        self.n_base = int(p.baseline_s / p.window_s)
        self.lat: list[np.ndarray] = []
        self.err: list[np.ndarray] = []
        self.cnt: list[np.ndarray] = []
        self.firing = np.zeros(len(services), bool)
        self.frozen: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self.fired_at: dict[int, int] = {}  # bin index at which each firing service fired

    def update(self, frame: Any) -> tuple[list[tuple[str, float]], list[str]]:
        """One bin more; (services that fire now with their z, services that clear now)."""
        S = len(self.services)
        lat, err, cnt = np.full(S, np.nan), np.full(S, np.nan), np.zeros(S)
        idx = {s: i for i, s in enumerate(self.services)}
        for s in frame.services:
            i = idx[s]
            x = frame.series(s, "latency-p90")
            e = frame.series(s, "errors")
            r = frame.series(s, "rate")
            lat[i] = x[-1] if x is not None else np.nan
            err[i] = e[-1] if e is not None else np.nan
            cnt[i] = (r[-1] if r is not None else 0.0) * self.p.window_s
        self.lat.append(lat)
        self.err.append(err)
        self.cnt.append(cnt)
        need = self.p.sustain
        if len(self.lat) < 60 + need:
            return [], []
        L, E, C = np.array(self.lat).T, np.array(self.err).T, np.array(self.cnt).T
        base = slice(max(0, L.shape[1] - need - self.n_base), L.shape[1] - need)
        X = np.concatenate([L, E])
        names = ["latency-p90"] * S + ["errors"] * S
        med, scale = baseline(X[:, base], names, np.concatenate([np.nanmedian(C[:, base], axis=1)] * 2),
                              self.p.window_s)  # fmt: skip
        for i in range(S):
            if self.firing[i] and i in self.frozen:
                med[[i, S + i]], scale[[i, S + i]] = self.frozen[i]
        z = np.nan_to_num((X[:, -need:] - med[:, None]) / scale[:, None], nan=0.0)
        zs = np.maximum(z[:S], z[S:])  # [S, need]
        fire, clear = [], []
        for i, s in enumerate(self.services):
            if not self.firing[i] and (zs[i] >= self.p.z_thr).all():
                self.firing[i] = True
                self.frozen[i] = (med[[i, S + i]].copy(), scale[[i, S + i]].copy())
                self.fired_at[i] = len(self.lat)
                fire.append((s, float(zs[i].min())))
            elif self.firing[i] and (zs[i] < self.p.z_thr / 2).all():
                self.firing[i] = False
                self.frozen.pop(i, None)
                clear.append(s)
        return fire, clear


    def settling(self, service: str, k: int = 6) -> float | None:
        """How much of a firing service's latency excess is left after ``k`` more bins; None if not firing.

        The excess over the frozen baseline in the last ``k`` bins over that of the ``k`` before: about 1 when
        steady, less when fading back (as a warm-up after a good deploy does: with time constants up to 2 min,
        at most e^-0.5 = 0.61 of it is left a minute later, while a bad release's slowness stays); 0 once
        p90 latency is under ``min_excess`` + 1 times normal (2.5x: the simulator's bad releases are 2.5-5x
        slower; a good release's warm-up that lingers sits lower). The demo rolls back a slower release
        without errors only after three decisions in a row (30 s) found at least 0.8 of it left.
        """
        i = self.services.index(service)
        if not self.firing[i] or i not in self.frozen:
            return None
        if len(self.lat) - self.fired_at[i] + self.p.sustain < 2 * k:  # both halves after the onset
            return None
        med = float(self.frozen[i][0][0])
        lat = np.array([x[i] for x in self.lat[-2 * k :]])
        before, last = np.nanmedian(lat[:k]) / med - 1.0, np.nanmedian(lat[k:]) / med - 1.0
        if not np.isfinite(before) or before <= 0 or not np.isfinite(last):
            return None
        if last < self.p.min_excess:  # not (or no longer) slow enough to be a bad release
            return 0.0
        return float(last / before)


def _trace_ids(spans: dict[str, np.ndarray], service: int, k: int = 20) -> frozenset[str]:
    sel = np.flatnonzero((spans["service"] == service) & (spans["kind"] == KIND_SERVER))
    if not len(sel):
        return frozenset()
    bad = sel[spans["status"][sel] == 2][:k]
    slow = sel[np.argsort(spans["duration_us"][sel])[-k:]]
    pick = np.unique(np.concatenate([bad, slow]))
    return frozenset(f"{int(h):016x}{int(lo):016x}" for h, lo in zip(spans["trace_hi"][pick], spans["trace_lo"][pick],
                                                                     strict=True))  # fmt: skip


def degraded_zone(spans: dict[str, np.ndarray], service: int, at_ms: int, *, lookback_ms: int = 120_000,
                  baseline_ms: int = 1_200_000, ratio: float = 1.5) -> str | None:  # fmt: skip
    """The zone in which ``service``'s own server spans got slow while the others did not, if one did."""
    server = (spans["service"] == service) & (spans["kind"] == KIND_SERVER)
    ts = spans["ts_ms"]
    now = server & (ts >= at_ms - lookback_ms) & (ts < at_ms)
    before = server & (ts >= at_ms - lookback_ms - baseline_ms) & (ts < at_ms - lookback_ms - 60_000)
    r = []
    for z in range(len(ZONES)):
        a, b = now & (spans["zone"] == z), before & (spans["zone"] == z)
        if a.sum() < 10 or b.sum() < 30:
            r.append(np.nan)
            continue
        r.append(float(np.median(spans["duration_us"][a]) / max(np.median(spans["duration_us"][b]), 1.0)))
    rr = np.array(r)
    if np.isnan(rr).all():
        return None
    worst = int(np.nanargmax(rr))
    others = np.delete(rr, worst)
    if rr[worst] >= ratio and (np.isnan(others).all() or np.nanmax(others) * ratio <= rr[worst]):
        return ZONES[worst]
    return None


def run_scenario(fault: str | None, seed: int, *, auto: bool, params: SelfHealParams | None = None,
                 serve: Callable[[Any], tuple[str, Callable[[], None]]] | None = None,
                 executor: Callable[[StepRunner], Executor] | None = None, day: int = 0,
                 incidents: IncidentStore | None = None,
                 remediation: RemediationStore | None = None) -> ScenarioResult:  # fmt: skip
    """Run one scenario (module docstring) and measure it.

    Args:
        fault: ``bad_deploy``, ``noisy_neighbour`` or None (oddities only).
        auto: playbooks on (needs ``serve``: serves an ASGI app, returns its URL and a stop function).
        executor: makes the executor from a step runner (default: in-process).
        day: days after 2026-03-02 the scenario starts (scenarios never overlap in event time).
        incidents, remediation: stores to record into (default: in memory).
    """
    p = params or SelfHealParams()
    hour = int(np.random.default_rng([seed, 0x40]).integers(9, 20))
    spec = ServiceSimSpec(services=p.services, minutes=p.warmup_min + p.fault_room_min, seed=seed, peak_rate=p.rate,
                          faults=(fault,) if fault else (), warmup_min=p.warmup_min, window_s=p.window_s,
                          start_ms=_DAY0 + day * 86_400_000 + hour * 3_600_000)  # fmt: skip
    sim = ServiceSimulator(spec)
    mem = MemorySink()
    runner = SimRunner(sim, [mem], mode="stepped")
    names = list(sim.topology.services)
    edges = [(names[a], names[b]) for a, b in sim.topology.edges]
    f = sim.plan.faults[0] if sim.plan.faults else None
    res = ScenarioResult(fault, seed, "auto" if auto else "manual", f.service if f else None,
                         f.start_ms if f else None)  # fmt: skip
    istore = incidents or IncidentStore(":memory:")
    priors = active_priors(istore.path)  # learned from post-mortems by `vigil retrain --postmortems`; None: none
    rstore = remediation or RemediationStore(":memory:")
    corr = Correlator(edges, window_ms=600_000, hops=p.hops, quiet_ms=int(p.quiet_s * 1000),
                      first_id=istore.next_number())  # fmt: skip
    det = _Detector(names, p)
    stop: Callable[[], None] | None = None
    remediator = ex = None
    token = secrets.token_hex(16)
    if auto:
        if serve is None:
            raise ValueError("auto mode needs `serve` (the simulator's control API is called over HTTP)")
        url, stop = serve(control_app(runner, token=token))
        raw = dict(PLAYBOOKS, deploy_api={"url": url.rstrip("/"), "token_env": TOKEN_ENV})
        pb = parse_playbooks(raw)
        step_runner = StepRunner(pb, rstore)
        ex = executor(step_runner) if executor is not None else InProcessExecutor(step_runner)
        remediator = Remediator(pb, rstore, ex)
    old_token = os.environ.get(TOKEN_ENV)
    os.environ[TOKEN_ENV] = token
    mine: dict[str, Incident] = {}
    due: dict[str, int] = {}
    streak: dict[str, int] = {}  # consecutive decisions that found a slower release settled
    keep_ms = int((p.baseline_s + 600) * 1000)
    try:
        hard_end = sim.end_ms + 600_000
        while sim.now_ms < hard_end:
            runner.advance(1)
            w = mem.windows[-1]
            mem.windows = [x for x in mem.windows if x.t1_ms > w.t1_ms - keep_ms]
            now = w.t1_ms
            fire, clear = det.update(red_frame(w.spans, names, t0_ms=w.t0_ms, t1_ms=w.t1_ms,
                                               step_ms=p.window_s * 1000))  # fmt: skip
            for s, z in fire:
                sig = Signal(f"{s}@{now}", now, s, "critical" if z >= 2 * p.z_thr else "warning",
                             _trace_ids(w.spans, names.index(s)), f"latency/errors z={z:.0f}")  # fmt: skip
                inc = corr.add(sig)
                if res.detected_ms is None and f is not None and now >= f.start_ms:
                    res.detected_ms = now
                if inc.id not in mine:
                    mine[inc.id] = inc
                    due[inc.id] = now + int(p.rca_delay_s * 1000)
                istore.put(inc)
            for s in clear:
                corr.clear(s, now)
            for inc_id, at in list(due.items()):
                if now < at:
                    continue
                del due[inc_id]
                inc = mine[inc_id]
                if inc.status == "resolved" or not auto:  # manual runs measure MTTR only: no RCA needed
                    continue
                spans = mem.spans()
                frame = frame_of(sim, spans, mem.metrics(), now)
                rca = rank_causes(frame, now, priors=priors)
                inc.causes = [Cause(c.service, c.kind, float(c.score), dict(c.evidence)) for c in rca.causes[:5]]
                if inc.causes:
                    zone = degraded_zone(spans, names.index(inc.causes[0].service), now)
                    if zone:
                        inc.causes[0].evidence["zone"] = zone
                    c0 = inc.causes[0]
                    inc.note(now, "diagnosed", f"{c0.service} ({c0.kind}, {c0.score:.2f})"
                             + (f" in {c0.evidence['zone']}" if "zone" in c0.evidence else ""))  # fmt: skip
                top = inc.causes[0] if inc.causes else None
                if top is not None and top.kind == "deploy" and float(top.evidence.get("z", {}).get("errors", 0)) < \
                        p.z_thr:  # fmt: skip
                    # a slower release, no errors: a bad one stays slow, a good one's warm-up fades. Wait for it
                    # to settle before rolling back (and never roll back what fades or clears meanwhile).
                    left = det.settling(top.service)
                    streak[inc_id] = streak.get(inc_id, 0) + 1 if left is not None and left >= p.settled else 0
                    if streak[inc_id] < p.settled_times:
                        if now - inc.opened_ms < p.confirm_max_s * 1000:
                            inc.note(now, "waiting", f"{top.service}: latency still changing ({left or 0:.2f} of it "
                                     "left after 60 s); deciding again in 10 s")  # fmt: skip
                            due[inc_id] = now + p.window_s * 1000
                        else:
                            inc.note(now, "no action", f"{top.service}: the release's latency never settled")
                        istore.put(inc)
                        continue
                started: list[str] = []
                if remediator is not None and inc.causes:  # (manual mode: people act at the fault's scripted end)
                    started = remediator.on_incident(inc, now)
                    for run_id in started:
                        wait = getattr(ex, "result", None)
                        if wait is not None:  # a durable executor: wait for it, the simulation is stepped
                            wait(run_id)
                        status = (rstore.run(run_id) or {}).get("status", "missing")
                        inc.note(now, "action", f"{run_id}: {status}")
                        if status == "succeeded":
                            corr.mitigated(inc.id, now, f"playbook {run_id.split(':', 1)[1]}")
                if not started and now - inc.opened_ms < p.confirm_max_s * 1000:
                    due[inc_id] = now + int(p.rediagnose_s * 1000)  # nothing to do yet: look again with more data
                istore.put(inc)
            for inc in corr.tick(now):
                istore.put(inc)
            fault_over = f is None or (f.cleared_ms is not None and now >= f.cleared_ms) or now >= f.end_ms
            if now >= sim.end_ms and fault_over and not corr.open and not due:
                break
    finally:
        if stop is not None:
            stop()
        if ex is not None and hasattr(ex, "close"):
            ex.close()
        if old_token is None:
            os.environ.pop(TOKEN_ENV, None)
        else:
            os.environ[TOKEN_ENV] = old_token
    # -- measure against the ground truth
    res.actions = [dict(a) for a in sim.world.actions]
    fixes = [a for a in sim.world.actions if a.get("changed") and f is not None and a["service"] == f.service]
    end_of_fault = None
    if f is not None:
        end_of_fault = min([f.end_ms] + ([f.cleared_ms] if f.cleared_ms else []) + [int(a["ts_ms"]) for a in fixes])
    true_ids = set()
    for inc in mine.values():
        near = f is not None and any(corr.distance(s, f.service, p.hops + 1) is not None for s in inc.services)
        true = near and f is not None and f.start_ms - 30_000 <= inc.opened_ms <= (end_of_fault or 0) + 60_000
        if true:
            true_ids.add(inc.id)
        resolved = next((t.at_ms for t in inc.timeline if t.what == "resolved"), None)
        res.incidents.append({"id": inc.id, "true": true, "opened_ms": inc.opened_ms, "resolved_ms": resolved,
                              "services": inc.services, "causes": [(c.service, c.kind) for c in inc.causes[:3]],
                              "status": inc.status})  # fmt: skip
    runs = rstore.runs(limit=10_000) if auto else []
    acted = [r for r in runs if r["incident_id"] in mine and r["status"] == "succeeded" and not r["dry_run"]]
    res.actions_on_false = sum(1 for r in acted if r["incident_id"] not in true_ids)
    if f is not None:
        diagnosed = [mine[i] for i in sorted(true_ids, key=lambda i: mine[i].opened_ms) if mine[i].causes]
        if diagnosed:
            res.rca_top = [c.service for c in diagnosed[0].causes[:3]]
        ends = [r["resolved_ms"] for r in res.incidents if r["true"]]
        res.resolved_ms = None if not ends or any(e is None for e in ends) else max(ends)
        if fixes:
            res.remediated_ms = int(fixes[0]["ts_ms"])
            # healed by the action: the symptoms were gone before the fault's scripted end
            res.healed_by_action = res.resolved_ms is not None and res.resolved_ms < f.end_ms
    return res


def _pct(xs: list[float]) -> dict[str, float | None]:
    if not xs:
        return {"p50": None, "p95": None}
    return {"p50": round(float(np.percentile(xs, 50)), 1), "p95": round(float(np.percentile(xs, 95)), 1)}


def run_demo(seeds: list[int], *, faults: tuple[str, ...] = ("bad_deploy", "noisy_neighbour"),
             clean_runs: int = 1, params: SelfHealParams | None = None,
             serve: Callable[[Any], tuple[str, Callable[[], None]]] | None = None,
             executor: Callable[[StepRunner], Executor] | None = None,
             incidents: IncidentStore | None = None, remediation: RemediationStore | None = None,
             progress: Callable[[ScenarioResult], None] | None = None) -> dict[str, Any]:  # fmt: skip
    """Every fault x seed, auto and manual, plus ``clean_runs`` fault-free runs (auto); the summary."""
    results: list[ScenarioResult] = []
    day = 0
    plan: list[tuple[str | None, int]] = [(fl, s) for s in seeds for fl in faults]
    plan += [(None, 10_000 + s) for s in seeds[:clean_runs]]
    for fault, seed in plan:
        for auto in (True, False) if fault else (True,):
            r = run_scenario(fault, seed, auto=auto, params=params, serve=serve, executor=executor, day=day,
                             incidents=incidents, remediation=remediation)  # fmt: skip
            results.append(r)
            if progress is not None:
                progress(r)
        day += 1
    auto_r = [r for r in results if r.mode == "auto" and r.fault]
    manual_r = [r for r in results if r.mode == "manual"]
    diag = [r for r in auto_r if r.rca_top]
    to_fix = [x for r in auto_r if (x := r.to_remediation_s) is not None]
    return {
        "scenarios": len(results),
        "faults": {fl: sum(1 for r in auto_r if r.fault == fl) for fl in faults},
        "detected": sum(1 for r in auto_r if r.detected_ms is not None),
        "rca_top1": round(sum(r.rca_top[:1] == [r.root] for r in diag) / max(1, len(auto_r)), 3),
        "rca_top3": round(sum(r.root in r.rca_top for r in diag) / max(1, len(auto_r)), 3),
        "mttr_s": {"auto": _pct([x for r in auto_r if (x := r.mttr_s) is not None]),
                   "manual": _pct([x for r in manual_r if (x := r.mttr_s) is not None])},
        "fault_to_remediation_s": _pct(to_fix),
        "healed_by_action": sum(r.healed_by_action for r in auto_r),
        "unresolved": sum(1 for r in results if r.fault and r.mttr_s is None),
        "incidents": sum(len(r.incidents) for r in results),
        "false_incidents": sum(1 for r in results for i in r.incidents if not i["true"]),
        "actions_on_false_incidents": sum(r.actions_on_false for r in results),
        "runs": [{"fault": r.fault, "seed": r.seed, "mode": r.mode, "root": r.root, "rca_top3": r.rca_top,
                  "detect_s": None if r.detected_ms is None or r.fault_start_ms is None
                  else (r.detected_ms - r.fault_start_ms) / 1000,
                  "to_remediation_s": r.to_remediation_s, "mttr_s": r.mttr_s, "healed_by_action": r.healed_by_action,
                  "actions": [(a["action"], a["service"]) for a in r.actions],
                  "incidents": r.incidents} for r in results],
    }  # fmt: skip
