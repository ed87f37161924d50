"""Live reconfiguration: which changes a running pipeline can take without a restart, and applying them.

A change is *live* when it keeps every key's state meaningful: a detector's threshold or warm-up
(``live_params`` of its class, e.g. ``threshold``, ``min_count``; a velocity rule's ``max_count``), a step's
``severity``, the server pipeline's voting and thresholds (``k``, ``threshold``, ``per_metric``,
``persist_windows``, ``rearm_windows``, ``model_threshold``), and the ``alerting:`` policy (routes, grouping,
inhibition, silencing matchers, receivers; open alerts and groups are kept). Anything that lays state out differently (a
window size, the metrics joined, the source, the steps themselves) is refused with the step, field and
value named, and the hint to restart with the new file.

What may change is each step kind's rule (:attr:`~vigil.dataflow.kinds.StepKind.live`, e.g. the servers
app's in :mod:`vigil.apps.servers.spec`). Applying happens in the engine thread between two batches
(:meth:`LiveControl.poll`): each changed step is rebuilt with the new parameters and takes over the running
step's state (:meth:`~vigil.engine.runner.EmbeddedRunner.replace_step`), so no key loses its history, and
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

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

from vigil.config.registry import step_kind_of
from vigil.config.spec import PipelineContext, PipelineSpec, parse_spec
from vigil.errors import ConfigError
from vigil.state.history import ConfigHistory

log = logging.getLogger("vigil.control")


@dataclass
class LivePlan:
    """What applying a new configuration would do: readable ``changes``, or ``problems`` that forbid it."""

    changes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    steps: dict[str, Any] = field(default_factory=dict)  # step name -> new step (the running one's state moves in)
    alerting: dict[str, Any] | None = None  # the new alert policy, when it changed

    @property
    def ok(self) -> bool:
        """True when every change can be applied live."""
        return not self.problems


def plan_changes(old: PipelineSpec, new: PipelineSpec, base_dir: str = ".", running: Any = None) -> LivePlan:
    """Compare the running spec with a new one (both validated); see the module docstring.

    Each step's kind decides what of it may change live (:attr:`~vigil.dataflow.kinds.StepKind.live`).
    ``running`` is the running pipeline (its steps are handed to the kinds' rules); without it the plan is
    checked but builds nothing that needs the running steps.
    """
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
    ctx = PipelineContext(base_dir, new.name, new.delivery)
    steps = {s.name: s for s in running.p.steps} if running is not None else {}
    for sa, sb in zip(old.steps, new.steps, strict=True):
        ka, kb = step_kind_of(sa), step_kind_of(sb)
        if ka is not kb or (kb.live is None and sa.model_dump() != sb.model_dump()):
            plan.problems.append(f"step `{sb.name}`: it can't change on a running pipeline; restart with the new "
                                 "file")  # fmt: skip
            continue
        if kb.live is None:
            continue
        change = kb.live(sa, sb, ctx, steps.get(sb.name))
        plan.changes += change.changes
        plan.problems += change.problems
        if change.step is not None:
            plan.steps[sb.name] = change.step
    return plan


def apply_plan(runner: Any, plan: LivePlan, alerts: Any = None) -> None:
    """Apply a live plan to a runner (engine thread, between batches): each step's state moves into its new one.

    ``alerts``: the pipeline's alert manager, which takes a changed policy.
    """
    if plan.alerting is not None and alerts is not None:
        alerts.set_policy(plan.alerting)
    for name, step in plan.steps.items():
        runner.replace_step(name, step)


def history_for(pipeline_name: str, out: str) -> ConfigHistory:
    """Where a pipeline run with ``vigil run --out OUT`` keeps its configuration versions."""
    return ConfigHistory(os.path.join(out, pipeline_name, "config"))


class LiveControl:
    """Follows a pipeline's :class:`ConfigHistory` and applies new current versions to its runner.

    Args:
        history: the pipeline's configuration history.
        running: the spec the runner was built from, and its version.
        base_dir: where relative paths of the pipeline file resolve.
        interval_s: seconds between two looks at ``CURRENT`` (0: every batch).
        alerts: the pipeline's alert manager (a changed ``alerting:`` policy goes there).
    """

    def __init__(self, history: ConfigHistory, running: PipelineSpec, version: str, *, base_dir: str = ".",
                 interval_s: float = 1.0, alerts: Any = None) -> None:  # fmt: skip
        self.history, self.spec, self.version = history, running, version
        self.base_dir, self.interval_s = base_dir, interval_s
        self.alerts = alerts
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
            plan = plan_changes(self.spec, spec, self.base_dir, running=runner)
        except ConfigError as exc:
            log.error("config %s is not applied: %s", target, exc)
            self.version = target  # do not retry every second; the next version is looked at again
            return
        if not plan.ok:
            log.error("config %s is not applied: %s", target, "; ".join(plan.problems))
            self.version = target
            return
        apply_plan(runner, plan, self.alerts)
        self.spec, self.version = spec, target
        self.applied.append((target, plan.changes))
        self.history.mark_applied(target)
        log.warning("config %s applied live: %s", target, "; ".join(plan.changes) or "no effective change")
