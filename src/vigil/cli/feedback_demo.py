"""``vigil demo feedback`` and ``vigil retrain``: operator labels tune the server detector's alerts and model.

**The demo** (:func:`demo_feedback_cmd`) simulates a fleet in which some hosts run an hourly scheduled job
(``FleetSpec.scheduled_job_hosts``: a backup, a report or a sync that moves two metrics, so the k-of-n vote
fires on it run after run: the false alerts operators actually complain about, and the kind feedback can
teach away, since they recur per host), runs the server pipeline (:func:`~vigil.apps.servers.run_server_pipeline`,
the offline model trained on the shadow-mode hours) and scripts an operator who labels every alert of the
**first hour of alerting**. Alerting goes live after ``live_h`` hours of shadow mode (9 h: the detectors learn
their baselines overnight and the on-call starts at 09:00; also the simulator's ``warmup_h``, before which it
injects no incident or batch job); the operator labels an alert a true positive when it matches a labelled
incident (the matching of ``vigil demo servers``: its window overlaps the incident, or the ``grace_s`` after
it, on the same host), else a false positive. The labels go through an :class:`~vigil.alerting.store.AlertStore`
(the alert manager writes the alerts, the operator adds feedback, as in the console);
:class:`~vigil.feedback.FeedbackTuner` learns a suppression set from them (version ``v0001``, who/why), and
the set is applied to the rest of the run.

Everything is scored on the part **after** the labelled hour, before (no feedback) and after (with it):
false alerts per host-day (fired alerts matching no incident / hosts x days of that part) and recall (the
share of the incidents starting in that part that an alert detects). "After" is the alert-level filter
(:meth:`~vigil.feedback.Suppressions.filter`, what runs today between the pipeline and the alert manager);
the JSON's ``window_level`` block applies the same bars to every window's votes before the k-of-n vote
(:meth:`~vigil.feedback.Suppressions.revote`), as an in-pipeline integration would. With ``retrain`` the
model is refitted with the labels and judged against the served one on the later windows, labelled by the
simulator (:func:`~vigil.apps.servers.retrain.retrain`); the model does not vote in this configuration, so it
changes the model's ranking of windows, not the alert counts.

Results (2 days, 15 % of hosts with a job, default pipeline settings): 100 hosts, seeds 7-11: false alerts
59-71 % fewer; recall unchanged on three seeds, 2.0 and 2.1 points lower on two (one incident each: a noisy
neighbour on a host whose report job moves the same two metrics; window-level: unchanged or higher). 40 hosts,
seeds 7-16: 43-77 % fewer (9 of 10 at least halved), recall unchanged on all. What limits it: only the hosts
whose job alerted in the labelled hour get bars (a job alerts on about half of its runs, in stretches), a bar
learned from one run sits below some later, larger runs, and half the bars hit the x2 cap.

**vigil retrain** (:func:`retrain_cmd`) does the second lever on real data: the feedback of an alert store,
the samples of an Influx file (as ``vigil generate fleet`` writes it) or of the simulator, the registry's
promoted model; the new version is promoted only when it ranks the held-back windows better.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from vigil.alerting.store import AlertStore
from vigil.apps.servers import ServerConfig, ServerRun, run_server_pipeline, train_global_model
from vigil.apps.servers.feedback import refire, server_base
from vigil.apps.servers.retrain import label_by_incidents, retrain, rows_from_labels, window_rows
from vigil.cli.common import strict_json
from vigil.feedback.suppression import FeedbackTuner, Suppressions, labels_from_store
from vigil.io.generators.fleet import FleetSpec, host_names, incident_table, simulate_fleet
from vigil.types import Alert

_H_MS, _DAY_MS = 3_600_000, 86_400_000
# a forest's average precision on the fleet moves by about +-0.05 from one fit (seed) to the next at 100 trees
# (+-0.015 at 300, but 3x slower); over 4 seeds the labels added +0.04 to +0.07 at 100 trees
_TREES = 100
OPERATOR = "operator (scripted)"


def _match(host: np.ndarray, ws: np.ndarray, we: np.ndarray, inc: dict[str, Any],
           grace_ms: int) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """``(true positive per alert, detected per incident)`` with the demo's matching (module docstring)."""
    tp = np.zeros(len(host), bool)
    detected = np.zeros(len(inc["start_ms"]), bool)
    for i, (h, a, b) in enumerate(zip(inc["host"].tolist(), inc["start_ms"].tolist(), inc["end_ms"].tolist(),
                                      strict=True)):  # fmt: skip
        hit = (host == h) & (we > a) & (ws <= b + grace_ms)
        tp |= hit
        detected[i] = bool(hit.any())
    return tp, detected


@dataclass(frozen=True)
class _Slice:
    """The scored part of the run: alerts from ``from_ms`` on (by window end), incidents starting there."""

    from_ms: int
    hosts: int
    days: float
    grace_ms: int


def _score(host: np.ndarray, ws: np.ndarray, we: np.ndarray, inc: dict[str, Any], sl: _Slice) -> dict[str, Any]:
    """False alerts per host-day and recall on the slice (the alerts given must already be in it)."""
    tp, _ = _match(host, ws, we, inc, sl.grace_ms)
    mine = inc["start_ms"] >= sl.from_ms
    _, detected = _match(host, ws, we, {k: v[mine] for k, v in inc.items()}, sl.grace_ms)
    fa = int((~tp).sum())
    return {"alerts": int(len(host)), "false_alerts": fa,
            "false_alerts_per_host_day": round(fa / (sl.hosts * sl.days), 4),
            "recall": round(float(detected.mean()), 4) if len(detected) else None,
            "detected": int(detected.sum()), "incidents": int(len(detected))}  # fmt: skip


def _alert_cols(alerts: list[Alert]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (np.array([a.key for a in alerts], object).astype(str),
            np.array([a.stats["window_start_ms"] for a in alerts], np.int64),
            np.array([a.stats["window_end_ms"] for a in alerts], np.int64))  # fmt: skip


def _label_first_hour(alerts: list[Alert], inc: dict[str, Any], store_path: str, *, grace_ms: int,
                      delay_ms: int = 300_000) -> tuple[int, int]:  # fmt: skip
    """The scripted operator: every alert into the store (through the alert manager), then a label on each."""
    from vigil.alerting.manager import AlertManager, labels_of
    from vigil.alerting.notification import fingerprint

    alerts = sorted(alerts, key=lambda a: a.event_ts_ms)
    host, ws, we = _alert_cols(alerts)
    tp, _ = _match(host, ws, we, inc, grace_ms)
    with AlertStore(store_path) as store:
        mgr = AlertManager(store=store, pipeline="servers", clock=lambda: 0)
        for a in alerts:
            mgr.advance(a.event_ts_ms)
            mgr.ingest([a], now_ms=a.event_ts_ms)
        for a, is_tp in zip(alerts, tp.tolist(), strict=True):
            note = "matches a labelled incident" if is_tp else "scheduled job / normal load"
            store.add_feedback(fingerprint(labels_of(a, "servers")), "true_positive" if is_tp else "false_positive",
                               at_ms=a.event_ts_ms + delay_ms, note=note, by=OPERATOR, alert_id=a.id)  # fmt: skip
    return int(tp.sum()), int((~tp).sum())


def run_feedback_demo(*, hosts: int = 100, days: float = 2.0, step_s: int = 10, seed: int = 7,
                      window_s: float = 60.0, k: int = 2, scheduled_jobs: float = 0.15, live_h: float = 9.0,
                      label_hours: float = 1.0, max_factor: float = 2.0, headroom: float = 1.2,
                      do_retrain: bool = True, grace_s: float = 120.0, workdir: str | None = None,
                      status: Callable[[str], Any] | None = None) -> dict[str, Any]:  # fmt: skip
    """The demo's computation (module docstring), without printing.

    ``live_h``: hours of shadow mode (detectors learning, alerts not shown) before alerting goes live and the
    operator starts labelling; also the simulator's ``warmup_h`` (no incident or batch job before it).
    ``workdir``: keep the alert store, the suppression versions and the registry there (default: a temporary
    folder, removed at the end).
    """
    from vigil.errors import ConfigError

    spec = FleetSpec(hosts=hosts, days=days, step_s=step_s, seed=seed, warmup_h=live_h,
                     scheduled_job_hosts=scheduled_jobs)  # fmt: skip
    label_to = spec.start_ms + int((live_h + label_hours) * _H_MS)
    if label_to >= spec.start_ms + int(days * _DAY_MS):
        raise ConfigError("leaves nothing after the labelled hour", field="days", value=days,
                          hint=f"more than {(live_h + label_hours) / 24:.2f} days")  # fmt: skip
    if workdir is not None:
        os.makedirs(workdir, exist_ok=True)
        return _scenario(spec, ServerConfig(window_s=window_s, k=k), workdir, label_hours=label_hours,
                         max_factor=max_factor, headroom=headroom, do_retrain=do_retrain, grace_s=grace_s,
                         status=status)  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="vigil-feedback-") as work:
        res = _scenario(spec, ServerConfig(window_s=window_s, k=k), work, label_hours=label_hours,
                        max_factor=max_factor, headroom=headroom, do_retrain=do_retrain, grace_s=grace_s,
                        status=status)  # fmt: skip
    res["workdir"] = None
    return res


def _scenario(spec: FleetSpec, cfg: ServerConfig, work: str, *, label_hours: float, max_factor: float,
              headroom: float, do_retrain: bool, grace_s: float,
              status: Callable[[str], Any] | None) -> dict[str, Any]:  # fmt: skip
    t0 = time.perf_counter()
    step = status or (lambda msg: None)
    hosts, days = spec.hosts, spec.days
    label_from = spec.start_ms + int(spec.warmup_h * _H_MS)
    label_to = label_from + int(label_hours * _H_MS)
    step(f"simulating {hosts} hosts for {days:g} days ({spec.scheduled_job_hosts:.0%} with an hourly job)…")
    cols = simulate_fleet(spec)
    inc = incident_table(cols)
    inc["host"] = host_names(hosts)[inc["host_id"]].astype(str)
    step("training the global model on the shadow-mode hours, running the pipeline…")
    artifact = train_global_model(cols, cfg, until_ms=label_from, n_estimators=_TREES, seed=spec.seed)
    run = run_server_pipeline(cols, cfg, artifact)
    hour = [a for a in run.alerts if label_from <= a.event_ts_ms < label_to]
    rest = [a for a in run.alerts if a.event_ts_ms >= label_to]
    step(f"the operator labels the {len(hour)} alerts of the first hour of alerting…")
    db = os.path.join(work, "alerts.db")
    n_tp, n_fp = _label_first_hour(hour, inc, db, grace_ms=int(grace_s * 1000))
    with AlertStore(db) as store:
        labels = labels_from_store(store)
    # beside the alert store, where a pipeline keeps them: `vigil feedback show --db <work>/alerts.db` finds them
    tuner = FeedbackTuner(os.path.join(work, "feedback"), base=server_base(cfg), max_factor=max_factor,
                          headroom=headroom)  # fmt: skip
    sup = tuner.learn(labels, who=OPERATOR, why=f"labels of the first {label_hours:g} h of alerting")
    kept, suppressed = sup.filter(rest)
    sl = _Slice(label_to, hosts, (spec.start_ms + days * _DAY_MS - label_to) / _DAY_MS, int(grace_s * 1000))
    before = _score(*_alert_cols(rest), inc, sl)
    after = _score(*_alert_cols(kept), inc, sl)
    res: dict[str, Any] = {
        "false_alerts_per_host_day_before": before["false_alerts_per_host_day"],
        "false_alerts_per_host_day_after": after["false_alerts_per_host_day"],
        "recall_before": before["recall"], "recall_after": after["recall"],
        "false_alert_reduction": round(1 - after["false_alerts"] / before["false_alerts"], 4)
        if before["false_alerts"] else None,
        "recall_drop_points": round(100 * ((before["recall"] or 0) - (after["recall"] or 0)), 2),
        "targets": {"false_alerts_halved": 2 * after["false_alerts"] <= before["false_alerts"],
                    "recall_drop_at_most_2_points": (before["recall"] or 0) - (after["recall"] or 0) <= 0.02 + 1e-9},
        "before": before, "after": after, "window_level": _window_level(run, cfg, sup, inc, sl),
        "suppressed": len(suppressed), "suppressed_examples": [x.reason for x in suppressed[:3]],
        "labelled": {"alerts": len(hour), "true_positive": n_tp, "false_positive": n_fp,
                     "from_h": spec.warmup_h, "to_h": spec.warmup_h + label_hours},
        "suppressions": {"version": sup.version, "entries": len(sup), "capped": sum(e.capped for e in sup),
                         "changes": (tuner.entries() or [{}])[-1].get("changes", [])},
        "evaluated_on": {"from_h": spec.warmup_h + label_hours, "days": round(sl.days, 4)},
        "scenario": {"hosts": hosts, "days": days, "seed": spec.seed, "step_s": spec.step_s,
                     "scheduled_job_hosts": spec.scheduled_job_hosts, "live_h": spec.warmup_h,
                     "label_hours": label_hours, "window_s": cfg.window_s, "k": cfg.k, "max_factor": max_factor,
                     "headroom": headroom},
        "workdir": work,
    }  # fmt: skip
    if do_retrain:
        step("retraining the model with the labels and judging it on the later windows…")
        res["retrain"] = _demo_retrain(run, cfg, artifact, labels, inc, work, label_from, label_to, spec.seed)
    res["elapsed_s"] = round(time.perf_counter() - t0, 2)
    return res


def _window_level(run: ServerRun, cfg: ServerConfig, sup: Suppressions, inc: dict[str, Any],
                  sl: _Slice) -> dict[str, Any]:  # fmt: skip
    """Before/after when the bars act on every window's votes before the k-of-n vote."""
    j = run.windows.joined
    names = run.host_names.astype(str)
    out = {}
    after = refire(sup, run.windows, cfg, run.host_names, from_ms=sl.from_ms)
    for name, fire in (("before", run.windows.fire), ("after", after)):
        idx = np.flatnonzero(fire & (j.end_ms >= sl.from_ms))
        out[name] = _score(names[j.slot[idx]], j.start_ms[idx], j.end_ms[idx], inc, sl)
    return out


def _demo_retrain(run: ServerRun, cfg: ServerConfig, artifact: dict[str, Any], labels: list[Any],
                  inc: dict[str, Any], work: str, label_from: int, label_to: int,
                  seed: int) -> dict[str, Any]:  # fmt: skip
    """v1 = the served model; v2 = refitted with the labels; judged on the windows after the labelled hour.

    v1 was fitted by ``train_global_model`` on the same rows with the same seed and trees as the refit starts
    from, so the difference between the two is the labels' alone (no control fit needed here).
    """
    from vigil.models.registry import ModelRegistry

    reg = ModelRegistry(os.path.join(work, "registry"))
    reg.promote("servers", reg.register("servers", artifact, {"trained": "warm-up hours"}), reason="offline model")
    base = window_rows(run, cfg, until_ms=label_from)
    base = base.take(label_by_incidents(base, inc, window_ms=cfg.window_ms) == 0)
    holdout = window_rows(run, cfg, from_ms=label_to)
    holdout.y = label_by_incidents(holdout, inc, window_ms=cfg.window_ms)
    report = retrain(reg, "servers", base=base, labelled=rows_from_labels(labels, cfg), holdout=holdout,
                     n_estimators=_TREES, seed=seed, threshold=cfg.model_threshold, who=OPERATOR,
                     why="first hour of feedback")  # fmt: skip
    return report.to_dict()


def demo_feedback_cmd(*, hosts: int = 100, days: float = 2.0, step: int = 10, seed: int = 7, window: float = 60.0,
                      k: int = 2, scheduled_jobs: float = 0.15, live_h: float = 9.0, label_hours: float = 1.0,
                      max_factor: float = 2.0, headroom: float = 1.2, retrain: bool = True, keep: str | None = None,
                      json_: bool = False) -> dict[str, Any]:  # fmt: skip
    """``vigil demo feedback``: run the scenario, print a rich summary (and the JSON line last with ``json_``)."""
    from rich.console import Console
    from rich.table import Table

    console = Console(stderr=json_, highlight=False)
    with console.status("…") as st:
        res = run_feedback_demo(hosts=hosts, days=days, step_s=step, seed=seed, window_s=window, k=k,
                                scheduled_jobs=scheduled_jobs, live_h=live_h, label_hours=label_hours,
                                max_factor=max_factor,
                                headroom=headroom, do_retrain=retrain, workdir=keep,
                                status=lambda m: st.update(m))  # fmt: skip
    lab, sup, ev = res["labelled"], res["suppressions"], res["evaluated_on"]
    console.print(f"[bold]Vigil demo[/] · feedback · {hosts} hosts, {days:g} days (seed {seed}), "
                  f"{scheduled_jobs:.0%} of hosts with an hourly scheduled job")  # fmt: skip
    console.print(f"the operator labelled the {lab['alerts']} alerts of hours {lab['from_h']:g}-{lab['to_h']:g}: "
                  f"{lab['true_positive']} true, {lab['false_positive']} false positives → suppression set "
                  f"[bold]{sup['version']}[/] with {sup['entries']} per-host bars ({sup['capped']} capped at "
                  f"x{max_factor:g})")  # fmt: skip
    title = f"After the labelled hour (from hour {ev['from_h']:g}, {ev['days']:.2f} days)"
    t = Table(title=title, title_justify="left")
    for c in ("", "alerts", "false alerts", "false / host-day", "recall"):
        t.add_column(c, justify="right" if c else "left")
    wl = res["window_level"]
    for name, r in (("before (no feedback)", res["before"]), ("after (alerts filtered)", res["after"]),
                    ("after (bars before the vote)", wl["after"])):  # fmt: skip
        recall = f"{r['recall']:.3f} ({r['detected']}/{r['incidents']})" if r["recall"] is not None else "-"
        t.add_row(name, str(r["alerts"]), str(r["false_alerts"]), f"{r['false_alerts_per_host_day']:.3f}", recall)
    console.print(t)
    red, tg = res["false_alert_reduction"], res["targets"]
    mark = {True: "[green]met[/]", False: "[red]missed[/]"}
    console.print(f"false alerts {'-' if red is None else f'{red:.0%} fewer'} (target: at least halved, "
                  f"{mark[tg['false_alerts_halved']]}) · recall {res['recall_before']} → {res['recall_after']} "
                  f"(target: at most 2 points lost, {mark[tg['recall_drop_at_most_2_points']]})")  # fmt: skip
    console.print(f"{res['suppressed']} alerts suppressed (returned, not dropped), e.g. "
                  f"{(res['suppressed_examples'] or ['-'])[0]}")  # fmt: skip
    if "retrain" in res:
        r = res["retrain"]
        console.print(f"retrain: {r['decision']} (the model does not vote here: its ranking changes, not the counts)")
    if res["workdir"]:
        db = os.path.join(res["workdir"], "alerts.db")
        console.print(f"alert store, feedback bars and registry kept in {res['workdir']} (see them: "
                      f"`vigil feedback show --db {db}` · `vigil alerts list --db {db}`)")  # fmt: skip
    if json_:
        print(strict_json(res), flush=True)
    return res


# ---- vigil retrain -------------------------------------------------------------------------------------------
