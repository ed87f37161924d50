"""``vigil retrain`` and ``vigil feedback show|rollback|clear``: the work behind the commands.

``retrain`` refits the server pipeline's global model with the alert store's labels and promotes it only when it
does better on a held-back labelled slice (:mod:`vigil.apps.servers.retrain`); the feedback commands show and
move the versions of the learned per-key bars (:mod:`vigil.feedback.suppression`).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from vigil.alerting.store import AlertStore
from vigil.apps.servers import ServerConfig, run_server_pipeline
from vigil.apps.servers.retrain import label_by_incidents, retrain, rows_from_labels, window_rows
from vigil.cli.common import shown, strict_json
from vigil.errors import ConfigError
from vigil.feedback.suppression import FeedbackTuner, labels_from_store
from vigil.io.generators.fleet import FleetSpec, host_names, incident_table, simulate_fleet

_Data = tuple[dict[str, Any], ServerConfig, dict[str, Any] | None, tuple[str, str] | None]


def _load_data(*, pipeline: str | None, input_path: str | None, incidents: str | None, hosts: int, days: float,
               seed: int, step_s: int, scheduled_jobs: float, warmup_h: float, window_s: float,
               k: int) -> _Data:  # fmt: skip
    """``(columns, config, incident table or None, (registry, model name) from the pipeline or None)``."""
    from vigil.errors import ConfigError

    model_ref = None
    if pipeline is not None:
        from vigil.apps.servers import spec as servers
        from vigil.config.spec import PipelineContext, load_spec

        spec = load_spec(pipeline)
        st = servers.find(spec, origin=pipeline)
        base_dir = os.path.dirname(os.path.abspath(pipeline))
        op = servers.build(st, PipelineContext(base_dir, spec.name), open_sink=False)
        cfg, aliases = op.config, op.metric_aliases
        if st.model is not None:
            reg = st.model.registry
            model_ref = (reg if os.path.isabs(reg) else os.path.join(base_dir, reg), st.model.name)
    else:
        cfg = ServerConfig(window_s=window_s, k=k)
        aliases = {f"{m}.value": m for m in cfg.metrics}  # what a decoder calls `vigil generate fleet`'s lines
    if input_path is not None:
        from vigil.cli.fleet import read_metric_columns

        cols = read_metric_columns(input_path, "json" if input_path.endswith(".json") else "influx")
        names = np.asarray(cols["metric"]).astype(str)
        cols["metric"] = np.array([aliases.get(n, n) for n in names.tolist()], object)
        if not len(cols["ts_ms"]):
            raise ConfigError("holds no samples", field="--input", value=input_path)
        inc = _read_incidents(incidents) if incidents else None
    else:
        cols = simulate_fleet(FleetSpec(hosts=hosts, days=days, step_s=step_s, seed=seed, warmup_h=warmup_h,
                                        scheduled_job_hosts=scheduled_jobs))  # fmt: skip
        inc = incident_table(cols)
        inc["host"] = host_names(hosts)[inc["host_id"]].astype(str)
    return cols, cfg, inc, model_ref


def _read_incidents(path: str) -> dict[str, Any]:
    """The incident table CSV of ``vigil generate fleet --labels`` (host, start_ms, end_ms columns)."""
    import csv

    from vigil.errors import ConfigError

    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    missing = {"host", "start_ms", "end_ms"} - set(rows[0] if rows else {})
    if missing:
        raise ConfigError("lacks columns " + ", ".join(sorted(missing)), field="--incidents", value=path,
                          hint="write it with: vigil generate fleet --labels incidents.csv")  # fmt: skip
    return {"host": np.array([r["host"] for r in rows], object).astype(str),
            "start_ms": np.array([int(r["start_ms"]) for r in rows], np.int64),
            "end_ms": np.array([int(r["end_ms"]) for r in rows], np.int64)}  # fmt: skip


def retrain_cmd(*, db: str, registry: str | None = None, name: str | None = None, pipeline: str | None = None,
                input_path: str | None = None, incidents: str | None = None, hosts: int = 20, days: float = 1.0,
                seed: int = 7, step: int = 10, scheduled_jobs: float = 0.0, warmup_h: float = 3.0,
                window: float = 60.0, k: int = 2, until: str = "4h", holdout_from: str | None = None,
                n_estimators: int = 100,
                fp_weight: float = 0.1, min_gain: float = 0.0, who: str | None = None,
                reason: str = "retrained with feedback", dry_run: bool = False, json_: bool = False,
                console: Any = None) -> dict[str, Any]:  # fmt: skip
    """``vigil retrain``: refit the servers model with an alert store's feedback; promote only if it does better.

    Data: ``input_path`` (Influx lines as ``vigil generate fleet`` writes them, or Telegraf JSON), else the
    simulator (``hosts``, ``days``, ``seed``, ``step``, ``scheduled_jobs``, ``warmup_h``: the spec the alerts
    came from). The model: ``pipeline``'s servers step (config, registry, name), else ``registry`` and ``name``
    with the default server config (``window``, ``k``).
    The original training rows are the windows of the first ``until``; the held-back slice starts at
    ``holdout_from`` (a duration from the data's start; default: right after the last labelled window when
    incidents are known — ``incidents``, or the simulator's — else the last 30 % of the labels in time): its
    windows are labelled by the incidents (feedback wins) or, without incidents, are the feedback-labelled
    windows in it. Labels before it are learned from.
    """
    from rich.console import Console

    from vigil.cli.models_admin import resolve_registry
    from vigil.errors import ConfigError
    from vigil.models.registry import ModelRegistry
    from vigil.types import parse_duration_ms

    out = console or Console(stderr=json_, highlight=False)
    cols, cfg, inc, model_ref = _load_data(pipeline=pipeline, input_path=input_path, incidents=incidents,
                                           hosts=hosts, days=days, seed=seed, step_s=step,
                                           scheduled_jobs=scheduled_jobs, warmup_h=warmup_h, window_s=window,
                                           k=k)  # fmt: skip
    root = resolve_registry(registry) if registry or model_ref is None else model_ref[0]
    name = name or (model_ref[1] if model_ref else None)
    if not name:
        raise ConfigError("is required without a --pipeline whose servers step names a model", field="--name",
                          value=None)  # fmt: skip
    with AlertStore(db, create=False) as store:
        labels = labels_from_store(store)
    labelled = rows_from_labels(labels, cfg)
    if not len(labelled):
        raise ConfigError("holds no feedback on k_of_n alerts", field="--db", value=db,
                          hint="label alerts: vigil alerts label FINGERPRINT false_positive")  # fmt: skip
    t0 = int(np.min(cols["ts_ms"]))
    run = run_server_pipeline(cols, cfg)
    base = window_rows(run, cfg, until_ms=t0 + parse_duration_ms(until))
    if inc is not None:
        base = base.take(label_by_incidents(base, inc, window_ms=cfg.window_ms) == 0)
    if holdout_from is not None:
        cut = t0 + parse_duration_ms(holdout_from)
    elif inc is not None:
        cut = int(labelled.start_ms.max()) + cfg.window_ms
    else:
        cut = int(np.quantile(labelled.start_ms, 0.7, method="higher"))
    learn = labelled.take(labelled.start_ms < cut)
    if inc is not None:
        holdout = window_rows(run, cfg, from_ms=cut)
        holdout.y = label_by_incidents(holdout, inc, window_ms=cfg.window_ms)
        late = labelled.take(labelled.start_ms >= cut)
        pos = {i: y for i, y in zip(late.ids().tolist(), late.y.tolist(), strict=True)} if late.y is not None else {}
        ids = holdout.ids().tolist()
        holdout.y = np.array([pos.get(i, y) for i, y in zip(ids, holdout.y.tolist(), strict=True)], np.int8)
    else:
        holdout = labelled.take(labelled.start_ms >= cut)
    report = retrain(ModelRegistry(root), name, base=base, labelled=learn, holdout=holdout,
                     features=[f"z_{m}" for m in cfg.metrics], fp_weight=fp_weight, n_estimators=n_estimators,
                     seed=seed, threshold=cfg.model_threshold, min_gain=min_gain, who=who or "", why=reason,
                     dry_run=dry_run, control=True)  # fmt: skip
    res = {**report.to_dict(), "registry": root, "labels": {"learned": len(learn), "false_positive": int(
           (learn.y == 0).sum()) if learn.y is not None else 0, "held_back": len(labelled) - len(learn)},
           "holdout_from_ms": cut}  # fmt: skip
    cur, new, ctrl = report.current_eval, report.candidate_eval, report.control_eval
    out.print(f"[bold]{name}[/] in {root}: learned from {len(learn)} labels "
              f"({res['labels']['false_positive']} false positives), judged on {len(holdout):,} held-back windows "
              f"({int(holdout.y.sum()) if holdout.y is not None else 0} anomalous)")  # fmt: skip
    out.print(f"average precision: promoted {report.current or '-'} {_ap(cur)} · refit without labels {_ap(ctrl)} · "
              f"with labels {_ap(new)}")  # fmt: skip
    out.print(("[green]" if report.promoted else "[yellow]") + report.decision + "[/]")
    if json_:
        print(strict_json(res), flush=True)
    return res


def _ap(e: dict[str, Any] | None) -> str:
    return "-" if e is None else f"{e['average_precision']:.4f}"


def feedback_admin_cmd(action: str, *, db: str, version: str | None, who: str, why: str, console: Any) -> Any:
    """``vigil feedback show|rollback|clear``: the bars learned from operators' labels, beside the alert store."""
    from pathlib import Path

    if not Path(db).is_file():
        raise ConfigError("does not exist", field="--db", value=db,
                          hint="a pipeline's alert store, by convention vigil-out/<pipeline>/alerts.db")  # fmt: skip
    tuner = FeedbackTuner(Path(db).parent / "feedback")
    if action == "rollback":
        tuner.rollback(version, who=who, why=why)
    elif action == "clear":
        tuner.clear(who=who, why=why)
    cur = tuner.current()
    if not cur.version:
        console.print(f"no feedback bars learned yet for {db} (none in {tuner.history.dir}): they are learned from "
                      "alerts labelled false positive (`vigil alerts label`)")  # fmt: skip
        return cur
    console.print(f"feedback bars in force: {cur.version} ({len(cur)} bars; {tuner.history.dir})")
    for e in tuner.entries()[-10:]:
        console.print(f"  {e['version']} {e['action']} by {shown(e.get('who', ''))}: {shown(e.get('why', ''))}")
        for c in e.get("changes", [])[:20]:
            console.print(f"      {shown(c)}")
    return cur


def retrain_postmortems_cmd(*, store: str, holdout: float = 0.3, weight: float = 0.05, alpha: float = 1.0,
                            who: str = "", reason: str = "retrained with post-mortems", dry_run: bool = False,
                            console: Any = None) -> dict[str, Any]:  # fmt: skip
    """``vigil retrain --postmortems STORE``: RCA priors from post-mortems, promoted only if they rank better.

    See :mod:`vigil.incidents.retrain`; returns :meth:`PriorsReport.to_dict` (keys ``rca_top1_before``, ...).
    """
    from pathlib import Path

    from rich.console import Console

    from vigil.incidents.retrain import retrain_priors
    from vigil.incidents.store import IncidentStore
    from vigil.rca.priors import priors_dir

    out = console or Console(stderr=True, highlight=False)
    if not Path(store).is_file():
        raise ConfigError("does not exist", field="--postmortems", value=store,
                          hint="the incident store, by convention vigil-out/incidents.db")  # fmt: skip
    s = IncidentStore(store)
    try:
        r = retrain_priors(s, holdout=holdout, alpha=alpha, weight=weight, who=who, why=reason, dry_run=dry_run)
    finally:
        s.close()
    out.print(f"RCA priors from {store}: learned from {r.learned} post-mortems, judged on the {len(r.held_back)} "
              f"latest ({', '.join(r.held_back[:5])}{', ...' if len(r.held_back) > 5 else ''})")  # fmt: skip
    out.print(f"RCA top-1: {r.before['top1']:.2f} with {r.current or 'no prior'} -> {r.after['top1']:.2f} with the "
              f"new priors · top-3: {r.before['top3']:.2f} -> {r.after['top3']:.2f}")  # fmt: skip
    out.print(("[green]" if r.promoted else "[yellow]") + r.decision + "[/]"
              + (f" (in {priors_dir(store)})" if r.promoted else ""))  # fmt: skip
    return r.to_dict()
