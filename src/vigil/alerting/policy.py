"""The alert policy: Alertmanager's route tree, inhibit rules, silence matchers, resolution and flap damping.

A policy is plain YAML (usually under ``alerting:`` in a pipeline file), validated at load: every error is a
:class:`~vigil.errors.ConfigError` naming the field path and the value
(```alerting.route.routes[1].group_wait` is not a duration; got 'soon'``). Durations are strings such as
``'30s'``, ``'5m'``, ``'4h'`` or integers of milliseconds (as in pipeline specs)::

    resolve_after: 5m               # event time without a new firing observation -> resolved
    retain_resolved: 1h             # then forgotten in memory (the alert store keeps them)
    group_limit: 1000               # alerts one group holds; more are counted as overflow (stored, not notified)
    route:
      receiver: default             # the root route matches every alert
      group_by: [alertname, key]    # '...' groups by every label
      group_wait: 30s               # a new group waits this long before its first notification
      group_interval: 5m            # later changes to a group are batched this long
      repeat_interval: 4h           # an unchanged firing group is re-sent this often
      routes:
        - matchers: ["severity=critical"]
          receiver: pager           # children inherit unset settings from their parent
          continue: true            # let later siblings match too
        - matchers: ["key=~u1.*", "alertname!=velocity"]
          group_wait: 10s
    inhibit_rules:                  # a firing critical alert mutes warnings on the same key
      - source_matchers: ["severity=critical"]
        target_matchers: ["severity=warning"]
        equal: [key]
    flap: {window: 10m, threshold: 4, hold: 10m}   # or `flap: null` to turn damping off
    receivers:                      # the notifier settings are kept as a raw dict per receiver
      - name: default
      - {name: pager, type: webhook, url: "http://127.0.0.1:9000/hook"}

Matchers are Alertmanager's: ``label=value``, ``label!=value``, ``label=~regex``, ``label!~regex``; regular
expressions are fully anchored, and a missing label matches as the empty string.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, PrivateAttr, ValidationError

from vigil.errors import ConfigError
from vigil.types import parse_duration_ms

_MATCHER = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*(.*?)\s*$")
_DURATION_HINT = "use a duration such as '30s', '5m', '4h', or an integer of milliseconds"


@dataclass(frozen=True, slots=True)
class Matcher:
    """One label matcher, Alertmanager style.

    Examples:
        >>> m = Matcher.parse("key=~u1.*")
        >>> m.matches({"key": "u12"}), m.matches({"key": "xu1"})
        (True, False)
        >>> Matcher.parse("severity!=info").matches({}), str(Matcher.parse('env="prod"'))
        (True, 'env=prod')
    """

    label: str
    op: str
    value: str
    regex: re.Pattern[str] | None = dataclasses.field(default=None, compare=False, repr=False)

    @classmethod
    def parse(cls, text: str) -> Matcher:
        """Parse ``label=value``, ``label!=value``, ``label=~regex`` or ``label!~regex`` (value may be quoted).

        Raises:
            ValueError: if the text is not a matcher or its regex does not compile.
        """
        m = _MATCHER.match(text) if isinstance(text, str) else None
        if m is None:
            raise ValueError("is not a matcher such as 'severity=critical', 'key=~u1.*' or 'alertname!=x'")
        label, op, value = m.groups()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        regex = None
        if op in ("=~", "!~"):
            try:
                regex = re.compile(value)
            except re.error as exc:
                raise ValueError(f"has an invalid regular expression ({exc})") from None
        return cls(label, op, value, regex)

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether ``labels`` satisfy this matcher (a missing label is the empty string)."""
        v = labels.get(self.label, "")
        if self.op == "=":
            return v == self.value
        if self.op == "!=":
            return v != self.value
        assert self.regex is not None
        hit = self.regex.fullmatch(v) is not None
        return hit if self.op == "=~" else not hit

    def __str__(self) -> str:
        return f"{self.label}{self.op}{self.value}"


def parse_matchers(texts: list[str], field: str = "matchers") -> tuple[Matcher, ...]:
    """Parse matcher strings, raising :class:`ConfigError` naming ``field[i]`` and the bad text.

    Examples:
        >>> [str(m) for m in parse_matchers(["key=u1", "severity=~warn.*"])]
        ['key=u1', 'severity=~warn.*']
        >>> parse_matchers(["key"], "-m")
        Traceback (most recent call last):
        vigil.errors.ConfigError: `-m[0]` is not a matcher such as ...; got 'key'
    """
    out = []
    for i, text in enumerate(texts):
        try:
            out.append(Matcher.parse(text))
        except ValueError as exc:
            raise ConfigError(str(exc), field=f"{field}[{i}]", value=text) from None
    return tuple(out)


def matches_all(matchers: tuple[Matcher, ...], labels: Mapping[str, str]) -> bool:
    """True when every matcher matches (so no matchers match everything)."""
    return all(m.matches(labels) for m in matchers)


def _duration(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError("is not a duration")
    try:
        return value if isinstance(value, int) else parse_duration_ms(value)
    except ValueError:
        raise ValueError("is not a duration") from None


def _positive(ms: int) -> int:
    if ms <= 0:
        raise ValueError("must be > 0")
    return ms


def _non_negative(ms: int) -> int:
    if ms < 0:
        raise ValueError("must be >= 0")
    return ms


def _matcher_text(text: str) -> str:
    Matcher.parse(text)
    return text


DurationMs = Annotated[int, BeforeValidator(_duration), AfterValidator(_non_negative)]
PositiveMs = Annotated[int, BeforeValidator(_duration), AfterValidator(_positive)]
MatcherText = Annotated[str, AfterValidator(_matcher_text)]


class Route(BaseModel):
    """One node of the route tree as written (unset fields are inherited; see :class:`RouteNode`)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    receiver: str | None = None
    matchers: list[MatcherText] = Field(default_factory=list)
    group_by: list[str] | None = None
    group_wait_ms: DurationMs | None = Field(None, alias="group_wait")
    group_interval_ms: PositiveMs | None = Field(None, alias="group_interval")
    repeat_interval_ms: PositiveMs | None = Field(None, alias="repeat_interval")
    continue_: bool = Field(False, alias="continue")
    routes: list[Route] = Field(default_factory=list)


class InhibitRule(BaseModel):
    """A firing source alert mutes target alerts with equal values of the ``equal`` labels (never itself)."""

    model_config = ConfigDict(extra="forbid")

    source_matchers: list[MatcherText] = Field(default_factory=list)
    target_matchers: list[MatcherText] = Field(default_factory=list)
    equal: list[str] = Field(default_factory=list)
    _source: tuple[Matcher, ...] = PrivateAttr(default=())
    _target: tuple[Matcher, ...] = PrivateAttr(default=())

    def model_post_init(self, context: Any) -> None:  # noqa: D102
        self._source = tuple(Matcher.parse(t) for t in self.source_matchers)
        self._target = tuple(Matcher.parse(t) for t in self.target_matchers)

    def is_source(self, labels: Mapping[str, str]) -> bool:
        """Whether an alert with ``labels`` can inhibit others under this rule."""
        return matches_all(self._source, labels)

    def is_target(self, labels: Mapping[str, str]) -> bool:
        """Whether an alert with ``labels`` can be inhibited under this rule."""
        return matches_all(self._target, labels)

    def equal_values(self, labels: Mapping[str, str]) -> tuple[str, ...]:
        """The values of the ``equal`` labels (missing = empty string), the join key of source and target."""
        return tuple(labels.get(n, "") for n in self.equal)


class FlapPolicy(BaseModel):
    """Flap damping: ``threshold`` firing<->resolved flips inside ``window`` hold notifications until ``hold``."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    window_ms: PositiveMs = Field(600_000, alias="window")
    threshold: int = Field(4, ge=2)
    hold_ms: PositiveMs = Field(600_000, alias="hold")


def _receiver_in(value: Any) -> Any:
    if isinstance(value, str):
        return {"name": value}
    if isinstance(value, dict) and "config" not in value:
        out: dict[str, Any] = {"config": {k: v for k, v in value.items() if k != "name"}}
        if "name" in value:
            out["name"] = value["name"]
        return out
    return value


class Receiver(BaseModel):
    """A declared receiver: its ``name`` and whatever else was written, raw, for the notifiers to read."""

    model_config = ConfigDict(extra="forbid")

    name: str
    config: dict[str, Any] = Field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RouteNode:
    """A route with its inherited settings filled in; ``path`` is ``0`` for the root, ``0.1`` for its 2nd child."""

    path: str
    receiver: str
    matchers: tuple[Matcher, ...]
    group_by: tuple[str, ...]
    group_wait_ms: int
    group_interval_ms: int
    repeat_interval_ms: int
    continue_: bool = False
    children: tuple[RouteNode, ...] = ()

    def match(self, labels: Mapping[str, str]) -> list[RouteNode]:
        """The routes an alert goes to: depth-first, first matching child wins unless it has ``continue``."""
        if not matches_all(self.matchers, labels):
            return []
        out: list[RouteNode] = []
        for child in self.children:
            hit = child.match(labels)
            if hit:
                out.extend(hit)
                if not child.continue_:
                    break
        return out or [self]

    def group_labels(self, labels: Mapping[str, str]) -> dict[str, str]:
        """The ``group_by`` labels an alert has (every label for ``...``)."""
        if self.group_by == ("...",):
            return dict(sorted(labels.items()))
        return {k: labels[k] for k in self.group_by if k in labels}

    def group_key(self, labels: Mapping[str, str]) -> str:
        """Deterministic, readable group id: route path, receiver and the group label values.

        Examples:
            >>> AlertPolicy().tree.group_key({"alertname": "amount_z", "key": "u1"})
            '0|default|{alertname="amount_z"}'
        """
        if self.group_by == ("...",):
            items = sorted(labels.items())
        else:
            items = [(k, labels[k]) for k in sorted(self.group_by) if k in labels]
        inner = ",".join([f'{k}="{v}"' for k, v in items])
        return f"{self.path}|{self.receiver}|{{{inner}}}"


class AlertPolicy(BaseModel):
    """The whole alert policy (see the module docstring for the YAML shape).

    Examples:
        >>> p = AlertPolicy.from_dict({"route": {"receiver": "ops", "group_wait": "10s",
        ...     "routes": [{"matchers": ["severity=critical"], "receiver": "pager"}]},
        ...     "receivers": ["ops", {"name": "pager", "url": "http://x"}]})
        >>> [n.receiver for n in p.tree.match({"severity": "critical"})], p.tree.children[0].group_wait_ms
        (['pager'], 10000)
        >>> p.receiver("pager").config
        {'url': 'http://x'}
        >>> AlertPolicy.from_dict({"route": {"routes": [{}, {"group_wait": "soon"}]}})
        Traceback (most recent call last):
        vigil.errors.ConfigError: `alerting.route.routes[1].group_wait` is not a duration; got 'soon' (hint: ...)
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    route: Route = Field(default_factory=lambda: Route.model_validate({"receiver": "default"}))
    receivers: list[Annotated[Receiver, BeforeValidator(_receiver_in)]] = Field(
        default_factory=lambda: [Receiver(name="default")])
    inhibit_rules: list[InhibitRule] = Field(default_factory=list)
    resolve_after_ms: PositiveMs = Field(300_000, alias="resolve_after")
    flap: FlapPolicy | None = Field(default_factory=lambda: FlapPolicy.model_validate({}))
    retain_resolved_ms: PositiveMs = Field(3_600_000, alias="retain_resolved")
    group_limit: int = Field(1000, ge=1)
    _tree: RouteNode = PrivateAttr()

    def model_post_init(self, context: Any) -> None:  # noqa: D102
        origin = (context or {}).get("origin", "alerting") if isinstance(context, dict) else "alerting"
        names = [r.name for r in self.receivers]
        for i, n in enumerate(names):
            if n in names[:i]:
                raise ConfigError("is declared twice", field=f"{origin}.receivers[{i}].name", value=n)
        self._tree = _resolve(self.route, None, "0", f"{origin}.route", set(names))

    @property
    def tree(self) -> RouteNode:
        """The route tree with inherited settings resolved."""
        return self._tree

    def receiver(self, name: str) -> Receiver:
        """The declared receiver called ``name`` (KeyError if none)."""
        for r in self.receivers:
            if r.name == name:
                return r
        raise KeyError(name)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None, origin: str = "alerting") -> AlertPolicy:
        """Validate a parsed mapping; errors are :class:`ConfigError` naming ``origin.path`` and the value."""
        if d is None:
            d = {}
        if not isinstance(d, Mapping):
            raise ConfigError("must be a mapping with `route`, `receivers`, ...", field=origin, value=d)
        try:
            return cls.model_validate(dict(d), context={"origin": origin})
        except ValidationError as exc:
            raise _config_error(exc, origin) from None

    @classmethod
    def from_yaml(cls, path: str) -> AlertPolicy:
        """Read a policy file: either the policy itself or a document with an ``alerting:`` section."""
        from vigil.yamlfile import read_yaml

        raw = read_yaml(path, "alert policy file")
        if isinstance(raw, dict) and "alerting" in raw:
            raw = raw["alerting"]
        return cls.from_dict(raw)


def _resolve(route: Route, parent: RouteNode | None, path: str, where: str, declared: set[str]) -> RouteNode:
    receiver = route.receiver if route.receiver is not None else (parent.receiver if parent else None)
    if receiver is None:
        raise ConfigError("is required on the root route (child routes inherit it)", field=f"{where}.receiver",
                          hint=f"declared receivers: {', '.join(sorted(declared)) or 'none'}")
    if receiver not in declared:
        raise ConfigError("is not a declared receiver", field=f"{where}.receiver", value=receiver,
                          hint=f"declare it under `receivers:` (declared: {', '.join(sorted(declared)) or 'none'})")
    if parent is None and route.matchers:
        raise ConfigError("must be empty on the root route (it matches every alert)", field=f"{where}.matchers",
                          value=route.matchers, hint="put matchers on child routes under `routes:`")
    group_by = tuple(route.group_by) if route.group_by is not None else (parent.group_by if parent else ("alertname",))
    if "..." in group_by and len(group_by) > 1:
        raise ConfigError("can't mix '...' (every label) with label names", field=f"{where}.group_by",
                          value=list(group_by))

    def pick(own: int | None, inherited: str, default: int) -> int:
        return own if own is not None else (getattr(parent, inherited) if parent else default)

    node = RouteNode(
        path=path, receiver=receiver, matchers=tuple(Matcher.parse(t) for t in route.matchers), group_by=group_by,
        group_wait_ms=pick(route.group_wait_ms, "group_wait_ms", 30_000),
        group_interval_ms=pick(route.group_interval_ms, "group_interval_ms", 300_000),
        repeat_interval_ms=pick(route.repeat_interval_ms, "repeat_interval_ms", 14_400_000),
        continue_=route.continue_,
    )  # fmt: skip
    children = tuple(_resolve(c, node, f"{path}.{i}", f"{where}.routes[{i}]", declared)
                     for i, c in enumerate(route.routes))  # fmt: skip
    return dataclasses.replace(node, children=children)


_KNOWN_KEYS = sorted({f.alias or n for m in (AlertPolicy, Route, InhibitRule, FlapPolicy, Receiver)
                      for n, f in m.model_fields.items()})  # fmt: skip
_ALIASES = {"group_wait_ms": "group_wait", "group_interval_ms": "group_interval",
            "repeat_interval_ms": "repeat_interval", "continue_": "continue", "resolve_after_ms": "resolve_after",
            "retain_resolved_ms": "retain_resolved", "window_ms": "window", "hold_ms": "hold"}  # fmt: skip


def _path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part not in ("function-before[_receiver_in(), Receiver]",) and not str(part).startswith("function-"):
            out += f".{_ALIASES.get(str(part), part)}"
    return out


def _config_error(exc: ValidationError, origin: str) -> ConfigError:
    err = exc.errors()[0]
    field = origin + _path(tuple(err["loc"]))
    msg = err["msg"].removeprefix("Value error, ")
    msg = msg[:1].lower() + msg[1:]
    value = err.get("input")
    hint = None
    if err["type"] == "extra_forbidden":
        msg = "is not a known field"
        close = difflib.get_close_matches(str(err["loc"][-1]), _KNOWN_KEYS, n=1)
        hint = f"did you mean `{close[0]}`?" if close else None
    elif err["type"] == "missing":
        msg, value, hint = "is required", None, None
    elif "duration" in msg:
        hint = _DURATION_HINT
    elif "matcher" in msg:
        hint = "write label=value, label!=value, label=~regex or label!~regex"
    if isinstance(value, dict):
        value = None
    return ConfigError(msg, field=field, value=value, hint=hint)
