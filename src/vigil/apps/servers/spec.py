"""The ``servers`` step kind of pipeline files: its spec, builder, live-change rules and feedback base.

In a pipeline file::

    steps:
      - name: fleet
        servers: {window_s: 10, k: 2, threshold: 4.5, metric_aliases: {cpu.usage_active: cpu}}
        model: {registry: ../models, name: fleet, check_interval: 5s}   # optional: the served global model
        to: {kind: jsonl, path: windows.jsonl}                           # optional: every scored window

``servers`` holds :class:`~vigil.apps.servers.ServerConfig` fields (plus ``metric_aliases``); a wrong name
fails at load with a did-you-mean hint. On a running pipeline (``vigil apply``) the voting and thresholds
(:data:`SERVERS_LIVE`) change live; the rest lays out state and needs a restart. The config layer registers
:data:`STEP` (:mod:`vigil.config.registry`).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import fields as dc_fields
from typing import Any

from pydantic import BaseModel, ConfigDict

from vigil.apps.servers.feedback import server_base
from vigil.apps.servers.pipeline import ServerConfig
from vigil.apps.servers.step import ServerStep
from vigil.dataflow.kinds import BuildContext, LiveChange, StepKind
from vigil.errors import ConfigError
from vigil.types import parse_duration_ms

#: settings of a ``servers`` step that can change live (the others lay out the join and detectors' state)
SERVERS_LIVE = frozenset({"k", "threshold", "per_metric", "persist_windows", "rearm_windows", "model_threshold"})

_FIELD_IN_MSG = re.compile(r"`([A-Za-z_][A-Za-z0-9_]*)`")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelSpec(_Model):
    """A model served from the registry: its promoted version, followed live."""

    registry: str
    name: str
    check_interval: str | int = "5s"


class ServersStepSpec(_Model):
    """``servers:`` the multi-metric server pipeline (join per host and window, per-metric detectors, k-of-n)."""

    name: str
    servers: dict[str, Any]
    model: ModelSpec | None = None
    to: dict[str, Any] | None = None


def build(s: ServersStepSpec, ctx: BuildContext, *, sink: Any = None, open_sink: bool = True) -> ServerStep:
    """The step: :class:`ServerConfig` from ``servers``, the registry's model if ``model`` is given.

    ``sink``: the scored windows' sink to use instead of building ``to`` (a live change keeps the running one);
    ``open_sink=False``: build no sink at all (training and retraining read the step's settings only).
    """
    params = dict(s.servers or {})
    aliases = params.pop("metric_aliases", None)
    known = [f.name for f in dc_fields(ServerConfig)] + ["metric_aliases"]
    for name in params:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            raise ConfigError("is not a setting of the servers pipeline", step=s.name, field=f"servers.{name}",
                              value=params[name],
                              hint=f"did you mean `{close[0]}`?" if close else f"settings: {', '.join(known)}")
    if "metrics" in params:
        params["metrics"] = tuple(params["metrics"])
    if sink is None and s.to is not None and open_sink:
        sink = ctx.sink(s.to, step=s.name, field="to")
    try:
        cfg = ServerConfig(**params)
        m = s.model
        if m is None:
            return ServerStep(cfg, name=s.name, sink=sink, metric_aliases=aliases)
        return ServerStep(cfg, name=s.name, sink=sink, registry=ctx.path(m.registry), model_name=m.name,
                          metric_aliases=aliases, check_interval_s=_seconds(m.check_interval, s.name))  # fmt: skip
    except (ValueError, TypeError) as exc:
        text = str(exc)
        found = _FIELD_IN_MSG.search(text)
        field = found.group(1) if found else None
        raise ConfigError(text.split("; got")[0], step=s.name, field=f"servers.{field}" if field else "servers",
                          value=params.get(field) if field else None) from None


def _seconds(value: str | int, step: str) -> float:
    try:
        ms = value if isinstance(value, int) else parse_duration_ms(str(value))
    except ValueError:
        raise ConfigError("is not a duration", step=step, field="model.check_interval", value=value,
                          hint="use e.g. '5s'") from None  # fmt: skip
    if ms <= 0:
        raise ConfigError("must be > 0", step=step, field="model.check_interval", value=value)
    return ms / 1000


def live(old: ServersStepSpec, new: ServersStepSpec, ctx: BuildContext, running: ServerStep | None) -> LiveChange:
    """Voting and thresholds change live; anything that lays out the join or the detectors' state can't."""
    ca, cb = dict(old.servers or {}), dict(new.servers or {})
    changed = sorted(k for k in set(ca) | set(cb) if ca.get(k) != cb.get(k))
    problems = []
    if old.model != new.model:
        problems.append(f"step `{new.name}`: `model` can't change on a running pipeline (promote another version "
                        "in the registry instead: `vigil models promote`)")  # fmt: skip
    if old.to != new.to:
        problems.append(f"step `{new.name}`: `to` can't change on a running pipeline; restart with the new file")
    problems += [f"step `{new.name}`: `servers.{k}` can't change on a running pipeline (it shapes the state); got "
                 f"{cb.get(k)!r} (was {ca.get(k)!r})" for k in changed if k not in SERVERS_LIVE]  # fmt: skip
    if problems:
        return LiveChange(problems=problems)
    if not changed:
        return LiveChange()
    changes = [f"step `{new.name}`: servers.{k} {ca.get(k)!r} -> {cb.get(k)!r}" for k in changed]
    # without a running step (a dry run) nothing is built: building may open the step's sink
    return LiveChange(changes=changes, step=build(new, ctx, sink=running.sink) if running is not None else None)


def find(spec: Any, step: str | None = None, *, origin: str = "pipeline") -> ServersStepSpec:
    """The (first, or named) ``servers`` step of a validated pipeline spec.

    Raises:
        ConfigError: there is none.
    """
    found = [s for s in spec.steps if isinstance(s, ServersStepSpec) and (step is None or s.name == step)]
    if not found:
        raise ConfigError("has no `servers` step" + (f" named `{step}`" if step else ""), field="pipeline",
                          value=origin)  # fmt: skip
    return found[0]


STEP = StepKind(
    "servers", ServersStepSpec, build, live=live, reads=lambda s: ["value"],
    feedback_base=lambda step: server_base(step.config), summary="the multi-metric server pipeline",
)
"""The ``servers`` step kind, registered by :mod:`vigil.config.registry`."""
