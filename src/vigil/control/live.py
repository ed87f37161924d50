"""Live reconfiguration: which changes a running pipeline can take without a restart, and applying them.

A change is *live* when it keeps every key's state meaningful: a detector's threshold or warm-up
(``live_params`` of its class, e.g. ``threshold``, ``min_count``; a velocity rule's ``max_count``), a step's
``severity``, the server pipeline's voting and thresholds (``k``, ``threshold``, ``per_metric``,
``persist_windows``, ``rearm_windows``, ``model_threshold``), and the ``alerting:`` policy (routes, grouping,
inhibition, silencing matchers, receivers; open alerts and groups are kept). Anything that lays state out differently (a
window size, the metrics joined, the source, the steps themselves) is refused with the step, field and
value named, and the hint to restart with the new file.

Applying happens in the engine thread between two batches (:meth:`LiveControl.poll`): each changed
detector is rebuilt with the new parameters *from its own snapshot*, so no key loses its history, and
the next checkpoint records the new parameters.

Examples:
    >>> from vigil.config.spec import parse_spec
    >>> base = {"name": "p", "source": {"kind": "jsonl", "path": "x", "schema": {"key": "k", "time": "t"}},
    ...         "steps": [{"name": "z", "detector": "sliding_zscore", "params": {"field": "v", "window": "60s"}}]}
    >>> new = {**base, "steps": [{**base["steps"][0], "params": {"field": "v", "window": "60s", "threshold": 5}}]}
    >>> plan_changes(parse_spec(base), parse_spec(new)).changes
    ['step `z`: params.threshold 3.0 -> 5']
    >>> bad = {**base, "steps": [{**base["steps"][0], "params": {"field": "v", "window": "30s"}}]}
    >>> plan_changes(parse_spec(base), parse_spec(bad)).problems
    ["step `z`: `params.window` can't change on a running pipeline (it shapes the state); got '30s' (was '60s')"]
"""

from __future__ import annotations

import inspect
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from vigil.config.spec import PipelineSpec, StepSpec, _construct, _servers_step, parse_spec
from vigil.control.history import ConfigHistory
from vigil.errors import ConfigError

log = logging.getLogger("vigil.control")

#: settings of a ``servers`` step that can change live (the others lay out the join and detectors' state)
SERVERS_LIVE = frozenset({"k", "threshold", "per_metric", "persist_windows", "rearm_windows", "model_threshold"})


@dataclass
class LivePlan:
    """What applying a new configuration would do: readable ``changes``, or ``problems`` that forbid it."""

    changes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    detectors: dict[str, Any] = field(default_factory=dict)  # step -> new detector (state not yet moved)
    operators: dict[str, Any] = field(default_factory=dict)  # step -> new servers operator
    severity: dict[str, str] = field(default_factory=dict)
    alerting: dict[str, Any] | None = None  # the new alert policy, when it changed

    @property
    def ok(self) -> bool:
        """True when every change can be applied live."""
        return not self.problems


def _defaults(cls: type[Any]) -> dict[str, Any]:
    sig = inspect.signature(cls.__init__)
    return {n: p.default for n, p in sig.parameters.items() if p.default is not inspect.Parameter.empty}


def plan_changes(old: PipelineSpec, new: PipelineSpec, base_dir: str = ".") -> LivePlan:
    """Compare the running spec with a new one (both validated); see the module docstring."""
    from vigil.detectors import registry

    plan = LivePlan()
    a, b = old.model_dump(exclude={"steps", "alerting"}), new.model_dump(exclude={"steps", "alerting"})
    if old.alerting != new.alerting:
        from vigil.alerting.runtime import _policy

        try:
            _policy(new.alerting)
            plan.alerting = dict(new.alerting or {})
            plan.changes.append("alerting: the alert policy (routes, grouping, inhibition, receivers) is replaced")
        except ConfigError as exc:
            plan.problems.append(str(exc))
    for key in sorted(set(a) | set(b)):
        if a.get(key) != b.get(key):
            plan.problems.append(f"`{key}` can't change on a running pipeline; restart with the new file")
    names_a, names_b = [s.name for s in old.steps], [s.name for s in new.steps]
    if names_a != names_b:
        plan.problems.append(f"the steps can't change on a running pipeline ({names_a} -> {names_b}); restart "
                             "with the new file (state of new steps starts empty)")  # fmt: skip
        return plan
    kinds = registry()
    for sa, sb in zip(old.steps, new.steps, strict=True):
        if sa.severity != sb.severity:
            plan.severity[sb.name] = sb.severity
            plan.changes.append(f"step `{sb.name}`: severity {sa.severity} -> {sb.severity}")
        if sa.detector is not None and sa.detector == sb.detector:
            _detector_change(plan, sa, sb, kinds[sb.detector])
        elif sa.servers is not None and sb.servers is not None:
            _servers_change(plan, sa, sb, base_dir)
        elif sa.model_dump(exclude={"severity"}) != sb.model_dump(exclude={"severity"}):
            what = "detector" if sa.detector is not None else "window" if sa.window is not None else "servers"
            plan.problems.append(f"step `{sb.name}`: its {what} can't change on a running pipeline; restart with "
                                 "the new file")  # fmt: skip
    return plan


def _detector_change(plan: LivePlan, sa: StepSpec, sb: StepSpec, cls: type[Any]) -> None:
    defaults = _defaults(cls)
    pa, pb = {**defaults, **sa.params}, {**defaults, **sb.params}
    changed = sorted(k for k in set(pa) | set(pb) if pa.get(k) != pb.get(k))
    if not changed:
        return
    live: frozenset[str] = getattr(cls, "live_params", frozenset())
    for k in changed:
        if k not in live:
            plan.problems.append(f"step `{sb.name}`: `params.{k}` can't change on a running pipeline (it shapes the "
                                 f"state); got {pb.get(k)!r} (was {pa.get(k)!r})")  # fmt: skip
    if all(k in live for k in changed):
        plan.detectors[sb.name] = _construct(cls, sb.params, sb.name)
        plan.changes += [f"step `{sb.name}`: params.{k} {pa.get(k)!r} -> {pb.get(k)!r}" for k in changed]


def _servers_change(plan: LivePlan, sa: StepSpec, sb: StepSpec, base_dir: str) -> None:
    ca, cb = dict(sa.servers or {}), dict(sb.servers or {})
    changed = sorted(k for k in set(ca) | set(cb) if ca.get(k) != cb.get(k))
    if sa.model != sb.model:
        plan.problems.append(f"step `{sb.name}`: `model` can't change on a running pipeline (promote another version "
                             "in the registry instead: `vigil models promote`)")  # fmt: skip
    bad = [k for k in changed if k not in SERVERS_LIVE]
    for k in bad:
        plan.problems.append(f"step `{sb.name}`: `servers.{k}` can't change on a running pipeline (it shapes the "
                             f"state); got {cb.get(k)!r} (was {ca.get(k)!r})")  # fmt: skip
    if changed and not bad and sa.model == sb.model:
        plan.operators[sb.name] = _servers_step(sb, base_dir)
        plan.changes += [f"step `{sb.name}`: servers.{k} {ca.get(k)!r} -> {cb.get(k)!r}" for k in changed]


def apply_plan(runner: Any, plan: LivePlan) -> None:
    """Apply a live plan to a runner (engine thread, between batches): state moves into the new objects."""
    from vigil.engine.pipeline import ApplyStep, DetectStep

    if plan.alerting is not None:
        for sink in runner.p.alert_sinks:
            if callable(getattr(sink, "set_policy", None)):
                sink.set_policy(plan.alerting)
    for step in runner.p.steps:
        if isinstance(step, DetectStep):
            new = plan.detectors.get(step.name)
            if new is not None:
                step.detector = type(new).from_snapshot(new.params(), step.detector.snapshot())
            if step.name in plan.severity:
                step.severity = plan.severity[step.name]
        elif isinstance(step, ApplyStep) and step.name in plan.operators:
            op = plan.operators[step.name]
            op.restore(step.op.snapshot())
            if callable(getattr(op, "bind", None)):
                op.bind(lambda slots: runner.keys.keys_of(slots))
            step.op = op


class LiveControl:
    """Follows a pipeline's :class:`ConfigHistory` and applies new current versions to its runner.

    Args:
        history: the pipeline's configuration history.
        running: the spec the runner was built from, and its version.
        base_dir: where relative paths of the pipeline file resolve.
        interval_s: seconds between two looks at ``CURRENT`` (0: every batch).
    """

    def __init__(self, history: ConfigHistory, running: PipelineSpec, version: str, *, base_dir: str = ".",
                 interval_s: float = 1.0) -> None:  # fmt: skip
        self.history, self.spec, self.version = history, running, version
        self.base_dir, self.interval_s = base_dir, interval_s
        self._next = 0.0
        self.applied: list[tuple[str, list[str]]] = []
        history.mark_applied(version)

    def poll(self, runner: Any) -> None:
        """If a new version is current and can be applied live, apply it; otherwise log why not (once)."""
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + self.interval_s
        target = self.history.current_version()
        if target is None or target == self.version:
            return
        try:
            import yaml

            spec = parse_spec(yaml.safe_load(self.history.text(target)), origin=f"config {target}")
            plan = plan_changes(self.spec, spec, self.base_dir)
        except ConfigError as exc:
            log.error("config %s is not applied: %s", target, exc)
            self.version = target  # do not retry every second; the next version is looked at again
            return
        if not plan.ok:
            log.error("config %s is not applied: %s", target, "; ".join(plan.problems))
            self.version = target
            return
        apply_plan(runner, plan)
        self.spec, self.version = spec, target
        self.applied.append((target, plan.changes))
        self.history.mark_applied(target)
        log.warning("config %s applied live: %s", target, "; ".join(plan.changes) or "no effective change")
