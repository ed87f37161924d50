"""Playbooks in YAML: what may run, on which incidents, with which guards.

A playbook file (or a pipeline file's ``remediation:`` section)::

    dry_run: true                   # the default: every step is recorded as "would …", nothing changes
    allow: [rollback-bad-deploy]    # only allow-listed playbooks ever run
    max_concurrent: 2               # runs in flight at once, over all playbooks
    deploy_api: {url: http://127.0.0.1:8089, token_env: VIGIL_DEPLOY_TOKEN}
    webhooks:                       # the only URLs a step may call, by name
      oncall: {url: http://127.0.0.1:9000/hook, token_env: ONCALL_TOKEN}
    playbooks:
      - name: rollback-bad-deploy
        match: {kind: [deploy], severity: [critical, warning], service: ["*"], min_score: 0.3}
        cooldown: 10m               # per playbook and service
        max_concurrent: 1
        steps:
          - approve: {reason: "roll back {cause.service}?"}     # a person approves (console or CLI)
          - rollback: {service: "{cause.service}"}
          - notify: {webhook: oncall, message: "rolled back {cause.service} for {incident.id}"}

Step kinds: ``rollback``, ``restart`` ``{service}``; ``scale`` ``{service, replicas}``; ``shift_traffic``
``{service, weights}`` or ``{service, drain: <zone>}``; ``ticket`` ``{title, body}``; ``webhook``
``{webhook, payload}``; ``notify`` ``{webhook, message}``; ``approve`` ``{reason}`` (a gate). Strings may
name ``{incident.id}``, ``{incident.severity}``, ``{cause.service}``, ``{cause.kind}``, ``{cause.zone}`` (the
degraded zone, when the evidence names one) and nothing else; a service or zone name from an incident must
look like one (letters, digits, ``.-_``), else the playbook is refused; nothing ever reaches a shell. Tokens are read
from the environment variable named, at call time, and never written anywhere.

Examples:
    >>> s = parse_playbooks({"allow": ["p"], "deploy_api": {"url": "http://127.0.0.1:8089"},
    ...     "playbooks": [{"name": "p", "match": {"kind": ["deploy"]},
    ...                    "steps": [{"rollback": {"service": "{cause.service}"}}]}]})
    >>> s.dry_run, s.playbooks[0].steps[0].action, s.playbooks[0].cooldown_ms
    (True, 'rollback', 600000)
    >>> parse_playbooks({"playbooks": [{"name": "p", "steps": [{"reboot": {}}]}]})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    vigil.errors.ConfigError: playbook `p`: `steps[0]` must be one of approve, notify, ... got 'reboot'
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from vigil.errors import ConfigError
from vigil.incidents.model import Incident
from vigil.types import parse_duration_ms

#: every step kind, with the parameters it needs and the ones it may take
ACTIONS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "approve": ((), ("reason",)),
    "notify": (("webhook", "message"), ()),
    "restart": (("service",), ()),
    "rollback": (("service",), ()),
    "scale": (("service", "replicas"), ()),
    "shift_traffic": (("service",), ("weights", "drain")),
    "ticket": (("title",), ("body", "webhook")),
    "webhook": (("webhook",), ("payload",)),
}
#: steps that change the system (the ones dry-run holds back)
CHANGING = frozenset({"restart", "rollback", "scale", "shift_traffic"})
SERVICE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_PLACEHOLDER = re.compile(r"\{([a-z_]+)\.([a-z_]+)\}")
_FIELDS = {("incident", "id"), ("incident", "severity"), ("cause", "service"), ("cause", "kind"), ("cause", "zone")}


@dataclass(frozen=True)
class Endpoint:
    """An allow-listed HTTP endpoint and the environment variable holding its token (never the token)."""

    url: str
    token_env: str | None = None


@dataclass(frozen=True)
class PlaybookStep:
    """One step: an action and its (still templated) parameters."""

    action: str
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def changing(self) -> bool:
        """Whether the step changes the system (dry-run records it instead)."""
        return self.action in CHANGING


@dataclass(frozen=True)
class Match:
    """Which incidents a playbook is for: every given criterion must hold (the top cause's)."""

    kind: tuple[str, ...] = ()
    service: tuple[str, ...] = ("*",)
    severity: tuple[str, ...] = ()
    min_score: float = 0.0

    def matches(self, incident: Incident) -> bool:
        """Does the incident's top cause meet every criterion?"""
        top = incident.top
        if top is None:
            return False
        return (
            (not self.kind or top.kind in self.kind)
            and any(fnmatch.fnmatchcase(top.service, pat) for pat in self.service)
            and (not self.severity or incident.severity in self.severity)
            and top.score >= self.min_score
        )


@dataclass(frozen=True)
class Playbook:
    """A named, guarded sequence of steps."""

    name: str
    match: Match
    steps: tuple[PlaybookStep, ...]
    cooldown_ms: int = 600_000
    max_concurrent: int = 1


@dataclass(frozen=True)
class PlaybookSet:
    """Everything a remediator needs from the file (module docstring)."""

    playbooks: tuple[Playbook, ...] = ()
    allow: frozenset[str] = frozenset()
    dry_run: bool = True
    max_concurrent: int = 2
    deploy_api: Endpoint | None = None
    webhooks: Mapping[str, Endpoint] = field(default_factory=dict)

    def candidates(self, incident: Incident) -> list[Playbook]:
        """Allow-listed playbooks whose match holds, in file order."""
        return [p for p in self.playbooks if p.name in self.allow and p.match.matches(incident)]


def render(value: Any, incident: Incident) -> Any:
    """``value`` with ``{incident.id}``-style placeholders filled in (strings inside lists and dicts too).

    Raises:
        ConfigError: a placeholder that isn't allowed, or an incident service that doesn't look like a name.

    Examples:
        >>> from vigil.incidents.model import Cause
        >>> inc = Incident("inc-7", 0, causes=[Cause("cart", "deploy", 1.0)])
        >>> render({"service": "{cause.service}", "msg": "{incident.id}: {cause.kind}"}, inc)
        {'service': 'cart', 'msg': 'inc-7: deploy'}
        >>> render("{cause.service}", Incident("x", 0, causes=[Cause("cart; rm -rf /", "deploy", 1.0)]))
        Traceback (most recent call last):
        ...
        vigil.errors.ConfigError: incident: `cause.service` is not a service name; got 'cart; rm -rf /'
    """
    if isinstance(value, str):
        top = incident.top
        values = {
            ("incident", "id"): incident.id,
            ("incident", "severity"): incident.severity,
            ("cause", "service"): top.service if top else "",
            ("cause", "kind"): top.kind if top else "",
            ("cause", "zone"): str(top.evidence.get("zone") or "") if top else "",
        }
        if top is not None and not SERVICE_NAME.match(top.service):
            if "{cause.service}" in value:
                raise ConfigError("is not a service name", section="incident", field="cause.service", value=top.service)
        if "{cause.zone}" in value and not SERVICE_NAME.match(values[("cause", "zone")]):
            raise ConfigError(
                "is not a zone name (the cause's evidence names no degraded zone)",
                section="incident",
                field="cause.zone",
                value=values[("cause", "zone")],
            )

        def fill(m: re.Match[str]) -> str:
            key = (m.group(1), m.group(2))
            if key not in _FIELDS:
                raise ConfigError(
                    "is not a placeholder a playbook may use",
                    field=m.group(0),
                    hint="use {incident.id}, {incident.severity}, {cause.service}, {cause.kind}, {cause.zone}",
                )
            return str(values[key])

        return _PLACEHOLDER.sub(fill, value)
    if isinstance(value, list):
        return [render(v, incident) for v in value]
    if isinstance(value, dict):
        return {k: render(v, incident) for k, v in value.items()}
    return value


def _endpoint(raw: Any, where: str) -> Endpoint:
    if not isinstance(raw, Mapping) or not isinstance(raw.get("url"), str):
        raise ConfigError("must be a mapping with a `url`", section="remediation", field=where, value=raw)
    url = raw["url"]
    if not url.startswith(("http://", "https://")):
        raise ConfigError("must be an http(s) URL", section="remediation", field=f"{where}.url", value=url)
    extra = set(raw) - {"url", "token_env"}
    if extra:
        raise ConfigError(f"unknown keys {sorted(extra)}", section="remediation", field=where)
    token_env = raw.get("token_env")
    if token_env is not None and not (isinstance(token_env, str) and re.match(r"^[A-Z_][A-Z0-9_]*$", token_env)):
        raise ConfigError(
            "must name an environment variable (the token itself never goes in the file)",
            section="remediation",
            field=f"{where}.token_env",
            value=token_env,
        )
    return Endpoint(url.rstrip("/"), token_env)


def _step(raw: Any, i: int, pb: str, webhooks: Mapping[str, Endpoint], has_api: bool) -> PlaybookStep:
    where = f"steps[{i}]"
    if not isinstance(raw, Mapping) or len(raw) != 1:
        raise ConfigError(
            "must be a mapping with one key, the step kind (e.g. `rollback: {service: ...}`)",
            section=f"playbook `{pb}`",
            field=where,
            value=raw,
        )
    ((action, params),) = raw.items()
    if action not in ACTIONS:
        raise ConfigError(
            f"must be one of {', '.join(sorted(ACTIONS))}", section=f"playbook `{pb}`", field=where, value=action
        )
    params = {} if params is None else params
    if not isinstance(params, Mapping):
        raise ConfigError(
            "must be a mapping of parameters", section=f"playbook `{pb}`", field=f"{where}.{action}", value=params
        )
    need, may = ACTIONS[action]
    missing = [k for k in need if k not in params]
    unknown = sorted(set(params) - set(need) - set(may))
    if missing or unknown:
        raise ConfigError(
            f"needs {list(need)}"
            + (f" and may take {list(may)}" if may else "")
            + (f"; missing {missing}" if missing else "")
            + (f"; unknown {unknown}" if unknown else ""),
            section=f"playbook `{pb}`",
            field=f"{where}.{action}",
        )
    if "webhook" in params and params["webhook"] not in webhooks:
        raise ConfigError(
            f"must name one of the file's webhooks {sorted(webhooks)}",
            section=f"playbook `{pb}`",
            field=f"{where}.{action}.webhook",
            value=params["webhook"],
        )
    if action in CHANGING and not has_api:
        raise ConfigError("needs `deploy_api: {url: ...}` in the file", section=f"playbook `{pb}`", field=where)
    if action == "shift_traffic" and ("weights" in params) == ("drain" in params):
        raise ConfigError(
            "needs either `weights` ({zone: weight}) or `drain` (a zone to take all traffic off)",
            section=f"playbook `{pb}`",
            field=f"{where}.shift_traffic",
        )
    if action == "scale" and not (isinstance(params["replicas"], int) and params["replicas"] >= 1):
        raise ConfigError(
            "must be an integer >= 1",
            section=f"playbook `{pb}`",
            field=f"{where}.scale.replicas",
            value=params["replicas"],
        )
    return PlaybookStep(action, dict(params))


def _strings(raw: Any, where: str, pb: str) -> tuple[str, ...]:
    if raw is None:
        return ()
    items = [raw] if isinstance(raw, str) else raw
    if not isinstance(items, list) or not all(isinstance(x, str) for x in items):
        raise ConfigError("must be a string or a list of strings", section=f"playbook `{pb}`", field=where, value=raw)
    return tuple(items)


def _playbook(raw: Any, i: int, webhooks: Mapping[str, Endpoint], has_api: bool) -> Playbook:
    if not isinstance(raw, Mapping) or not isinstance(raw.get("name"), str):
        raise ConfigError("must be a mapping with a `name`", section="remediation", field=f"playbooks[{i}]", value=raw)
    name = raw["name"]
    unknown = set(raw) - {"name", "match", "steps", "cooldown", "max_concurrent"}
    if unknown:
        raise ConfigError(f"unknown keys {sorted(unknown)}", section=f"playbook `{name}`")
    m = raw.get("match") or {}
    if not isinstance(m, Mapping) or set(m) - {"kind", "service", "severity", "min_score"}:
        raise ConfigError(
            "takes kind, service, severity, min_score", section=f"playbook `{name}`", field="match", value=m
        )
    match = Match(
        kind=_strings(m.get("kind"), "match.kind", name),
        service=_strings(m.get("service"), "match.service", name) or ("*",),
        severity=_strings(m.get("severity"), "match.severity", name),
        min_score=float(m.get("min_score", 0.0)),
    )
    steps = raw.get("steps")
    if not isinstance(steps, list) or not steps:
        raise ConfigError("must be a non-empty list", section=f"playbook `{name}`", field="steps", value=steps)
    try:
        cooldown = parse_duration_ms(raw.get("cooldown", "10m"))
    except (ValueError, TypeError):
        raise ConfigError(
            "must be a duration like '10m'", section=f"playbook `{name}`", field="cooldown", value=raw.get("cooldown")
        ) from None
    limit = raw.get("max_concurrent", 1)
    if not isinstance(limit, int) or limit < 1:
        raise ConfigError("must be an integer >= 1", section=f"playbook `{name}`", field="max_concurrent", value=limit)
    return Playbook(
        name, match, tuple(_step(s, j, name, webhooks, has_api) for j, s in enumerate(steps)), cooldown, limit
    )


def parse_playbooks(raw: Any) -> PlaybookSet:
    """Validate a playbook file's data (module docstring); errors name the playbook, the field and the value."""
    if raw is None:
        return PlaybookSet()
    if not isinstance(raw, Mapping):
        raise ConfigError("must be a mapping", section="remediation", value=type(raw).__name__)
    if "remediation" in raw and "playbooks" not in raw:
        return parse_playbooks(raw["remediation"])
    unknown = set(raw) - {"dry_run", "allow", "max_concurrent", "deploy_api", "webhooks", "playbooks"}
    if unknown:
        raise ConfigError(f"unknown keys {sorted(unknown)}", section="remediation")
    webhooks = {str(k): _endpoint(v, f"webhooks.{k}") for k, v in (raw.get("webhooks") or {}).items()}
    api = _endpoint(raw["deploy_api"], "deploy_api") if raw.get("deploy_api") is not None else None
    pbs = raw.get("playbooks") or []
    if not isinstance(pbs, list):
        raise ConfigError("must be a list", section="remediation", field="playbooks", value=pbs)
    playbooks = tuple(_playbook(p, i, webhooks, api is not None) for i, p in enumerate(pbs))
    names = [p.name for p in playbooks]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError("names must be unique", section="remediation", field="playbooks", value=dup)
    allow = raw.get("allow") or []
    if not isinstance(allow, list) or not all(isinstance(a, str) for a in allow):
        raise ConfigError("must be a list of playbook names", section="remediation", field="allow", value=allow)
    stray = sorted(set(allow) - set(names))
    if stray:
        raise ConfigError("names playbooks that don't exist", section="remediation", field="allow", value=stray)
    dry = raw.get("dry_run", True)
    if not isinstance(dry, bool):
        raise ConfigError("must be true or false", section="remediation", field="dry_run", value=dry)
    limit = raw.get("max_concurrent", 2)
    if not isinstance(limit, int) or limit < 1:
        raise ConfigError("must be an integer >= 1", section="remediation", field="max_concurrent", value=limit)
    return PlaybookSet(playbooks, frozenset(allow), dry, limit, api, webhooks)


def load_playbooks(path: str | os.PathLike[str]) -> PlaybookSet:
    """The playbook file at ``path`` (module docstring), validated; errors name the file, the field and the value."""
    from vigil.yamlfile import read_yaml

    return parse_playbooks(read_yaml(path, "playbook file"))
