"""Notifier config (one receiver's ``notifier:`` block) and :func:`build_notifier`.

``NotifierSpec`` is a pydantic union discriminated by ``kind``; the HTTP kinds share the retry
settings (``timeout_s``, ``retry_attempts``, ``retry_base_s``, ``retry_max_s``). Every problem is a
:class:`~vigil.errors.ConfigError` at load that names the receiver, the field and the value (with
secrets such as a Slack webhook path left out).

Examples:
    >>> n = build_notifier({"kind": "webhook", "url": "http://127.0.0.1:8080/hook", "retry_attempts": 3}, "ops")
    >>> type(n).__name__, n.name
    ('WebhookNotifier', 'ops')
    >>> n.close()
    >>> build_notifier({"kind": "webhook", "url": "ftp://x"}, "ops")
    Traceback (most recent call last):
    ...
    vigil.errors.ConfigError: `receivers.ops.url` must be an absolute http:// or https:// URL; got 'ftp://x'
    >>> build_notifier({"kind": "pager"}, "ops")
    Traceback (most recent call last):
    ...
    vigil.errors.ConfigError: `receivers.ops.kind` is not a notifier kind; got 'pager' (hint: one of alertmanager, ...)
"""

from __future__ import annotations

import difflib
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from vigil.alerting.notification import Notifier
from vigil.alerting.notifiers.alertmanager import AlertmanagerNotifier
from vigil.alerting.notifiers.base import RetryPolicy, check_http_url, safe_url
from vigil.alerting.notifiers.slack import SlackNotifier
from vigil.alerting.notifiers.ticket import TicketNotifier
from vigil.alerting.notifiers.webhook import WebhookNotifier
from vigil.errors import ConfigError

KINDS = ("alertmanager", "kafka", "slack", "ticket", "webhook")
_SECRET_PATH_FIELDS = {"webhook_url"}


def _http_url(v: Any) -> Any:
    try:
        check_http_url(v)
    except ConfigError:
        raise ValueError("must be an absolute http:// or https:// URL") from None
    return v


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _HttpSpec(_Spec):
    timeout_s: float = Field(10.0, gt=0, description="per-request timeout")
    retry_attempts: int = Field(5, ge=1, le=100, description="total attempts (1 = no retry)")
    retry_base_s: float = Field(0.5, gt=0, description="first back-off; doubles per retry")
    retry_max_s: float = Field(30.0, gt=0, description="longest back-off and longest Retry-After honoured")
    headers: dict[str, str] = Field(default_factory=dict, description="extra request headers")

    def policy(self) -> RetryPolicy:
        """The retry policy these settings describe."""
        return RetryPolicy(attempts=self.retry_attempts, base_s=self.retry_base_s, max_s=self.retry_max_s,
                           timeout_s=self.timeout_s)


class WebhookSpec(_HttpSpec):
    """Alertmanager-format webhook JSON POSTed to ``url``."""

    kind: Literal["webhook"]
    url: str
    external_url: str = ""

    _check_url = field_validator("url")(_http_url)


class AlertmanagerSpec(_HttpSpec):
    """Alerts pushed to Alertmanager's API v2 at ``url``."""

    kind: Literal["alertmanager"]
    url: str = "http://127.0.0.1:9093"
    firing_ttl_s: float | None = Field(None, gt=0)
    generator_url: str = ""

    _check_url = field_validator("url")(_http_url)


class KafkaSpec(_Spec):
    """Webhook JSON produced to a Kafka topic: ``url: kafka://host:port/topic`` or ``bootstrap`` + ``topic``."""

    kind: Literal["kafka"]
    url: str | None = None
    bootstrap: str | None = None
    topic: str | None = None
    external_url: str = ""
    flush_timeout_s: float = Field(30.0, gt=0)
    producer_config: dict[str, Any] = Field(default_factory=dict)

    def check_target(self, where: str) -> None:
        """Check the broker address and topic (what pydantic can't).

        Raises:
            ConfigError: naming ``where`` and the field.
        """
        from vigil.alerting.notifiers.kafka import kafka_target

        if (self.url is None) == (self.bootstrap is None):
            raise ConfigError("needs either `url` (kafka://host:port/topic) or `bootstrap` and `topic`", field=where)
        try:
            kafka_target(self.url or self.bootstrap or "", self.topic)
        except ConfigError as exc:
            raise _under(exc, where) from None


class SlackSpec(_HttpSpec):
    """A Slack-compatible incoming webhook."""

    kind: Literal["slack"]
    webhook_url: str

    _check_url = field_validator("webhook_url")(_http_url)


class TicketSpec(_HttpSpec):
    """A generic ticket API; ``state_path`` is the SQLite file mapping alert episodes to tickets."""

    kind: Literal["ticket"]
    url: str
    state_path: str

    _check_url = field_validator("url")(_http_url)


NotifierSpec = Annotated[
    WebhookSpec | AlertmanagerSpec | KafkaSpec | SlackSpec | TicketSpec, Field(discriminator="kind")
]
_ADAPTER: TypeAdapter[Any] = TypeAdapter(NotifierSpec)
_BY_KIND: dict[str, type[BaseModel]] = {
    "webhook": WebhookSpec, "alertmanager": AlertmanagerSpec, "kafka": KafkaSpec, "slack": SlackSpec,
    "ticket": TicketSpec,
}  # fmt: skip


def _under(exc: ConfigError, where: str) -> ConfigError:
    """``exc`` with its field placed under ``where`` (the receiver)."""
    text = str(exc)
    if exc.field:
        text = text.replace(f"`{exc.field}` ", f"`{where}.{exc.field}` ", 1)
    else:
        text = f"`{where}`: {text}"
    out = ConfigError(text)
    out.field = f"{where}.{exc.field}" if exc.field else where
    out.value, out.hint = exc.value, exc.hint
    return out


def parse_notifier_spec(spec: Any, name: str) -> BaseModel:
    """Validate receiver ``name``'s notifier spec.

    Raises:
        ConfigError: naming the receiver, the field and the value.
    """
    where = f"receivers.{name}"
    if not isinstance(spec, dict):
        raise ConfigError("must be a mapping with a `kind`", field=where, value=type(spec).__name__)
    try:
        parsed = _ADAPTER.validate_python(spec)
    except ValidationError as exc:
        err = exc.errors()[0]
    else:
        if isinstance(parsed, KafkaSpec):
            parsed.check_target(where)
        return parsed
    kind = spec.get("kind")
    if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
        raise ConfigError("is not a notifier kind" if "kind" in spec else "is missing", field=f"{where}.kind",
                          value=kind, hint="one of " + ", ".join(KINDS)) from None
    loc = [str(p) for p in err["loc"][1:]]  # the first element is the kind
    field = ".".join(loc)
    msg = err["msg"].removeprefix("Value error, ")
    msg = msg[:1].lower() + msg[1:]
    value = err.get("input") if err["type"] != "missing" and not isinstance(err.get("input"), dict) else None
    if isinstance(value, str) and "://" in value:
        value = safe_url(value, hide_path=field in _SECRET_PATH_FIELDS)
    hint = None
    if err["type"] == "extra_forbidden":
        known = list(_BY_KIND[str(kind)].model_fields)
        close = difflib.get_close_matches(loc[-1], known, n=1)
        hint = f"did you mean `{close[0]}`?" if close else f"known fields of `{kind}`: {', '.join(known)}"
        value = None
    raise ConfigError(msg, field=f"{where}.{field}" if field else where, value=value, hint=hint) from None


def build_notifier(spec: dict[str, Any], name: str) -> Notifier:
    """The notifier for receiver ``name`` described by ``spec`` (a dict with ``kind``).

    Raises:
        ConfigError: the spec is invalid (naming the receiver, field and value), or the notifier can't
            be set up (e.g. an unwritable ``state_path``).
    """
    s: Any = parse_notifier_spec(spec, name)
    try:
        if s.kind == "webhook":
            return WebhookNotifier(s.url, s.headers, name=name, external_url=s.external_url, policy=s.policy())
        if s.kind == "alertmanager":
            return AlertmanagerNotifier(s.url, s.headers, name=name, firing_ttl_s=s.firing_ttl_s,
                                        generator_url=s.generator_url, policy=s.policy())
        if s.kind == "slack":
            return SlackNotifier(s.webhook_url, name=name, policy=s.policy())
        if s.kind == "ticket":
            return TicketNotifier(s.url, s.state_path, s.headers, name=name, policy=s.policy())
        from vigil.alerting.notifiers.kafka import KafkaNotifier

        return KafkaNotifier(s.url or s.bootstrap, s.topic, name=name, external_url=s.external_url,
                             flush_timeout_s=s.flush_timeout_s, producer_config=s.producer_config)
    except ConfigError as exc:
        raise _under(exc, f"receivers.{name}") from None
