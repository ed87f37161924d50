"""Notifications as Slack incoming-webhook messages (also accepted by Mattermost and Rocket.Chat).

The payload is ``{"text": <fallback>, "blocks": [...]}``: a header with the status, severity and
group, a context line with the receiver and the reason, then one section per alert with its summary,
its key and its top statistics (at most :data:`MAX_ALERT_SECTIONS`, then "and N more").

Every piece of text that comes from alerts or config is escaped by Slack's rules (``&`` → ``&amp;``,
``<`` → ``&lt;``, ``>`` → ``&gt;``), so an alert message cannot inject links, user or ``<!channel>``
mentions, or break the formatting. The webhook URL is a secret (anyone holding it can post), so
errors show only its host.

Examples:
    >>> slack_escape("<!channel> 1 < 2 & 3 > 2")
    '&lt;!channel&gt; 1 &lt; 2 &amp; 3 &gt; 2'
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vigil.alerting.notification import Notification, NotifiedAlert
from vigil.alerting.notifiers.base import HttpDelivery, RetryPolicy, check_http_url

MAX_ALERT_SECTIONS = 20
_HEADER_CHARS = 150  # Slack's limit for a header block
_SECTION_CHARS = 3000  # ... and for a section's text
_TOP_STATS = 4
_SEVERITY_ORDER = {"critical": 0, "error": 1, "warning": 2, "info": 3}
_ICON = {"firing": ":rotating_light:", "resolved": ":white_check_mark:", "retracted": ":leftwards_arrow_with_hook:"}


def slack_escape(text: Any) -> str:
    """``text`` as Slack mrkdwn-safe text (only ``&``, ``<`` and ``>`` are special)."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _clip(escaped: str, limit: int) -> str:
    """Shorten escaped text to ``limit`` chars without cutting an entity like ``&amp;`` in half.

    Examples:
        >>> _clip("abc &amp; def", 7)
        'abc …'
    """
    if len(escaped) <= limit:
        return escaped
    cut = escaped[: limit - 1]
    amp = cut.rfind("&")
    if amp != -1 and ";" not in cut[amp:]:
        cut = cut[:amp]
    return cut + "…"


def _num(v: Any) -> str:
    if isinstance(v, bool) or not isinstance(v, int | float) and not hasattr(v, "item"):
        return str(v)
    v = v.item() if hasattr(v, "item") else v
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _severity(alerts: list[NotifiedAlert]) -> str:
    sev = [a.labels.get("severity") or a.alert.get("severity") or "" for a in alerts]
    sev = [str(s) for s in sev if s]
    return min(sev, key=lambda s: _SEVERITY_ORDER.get(s, 9)) if sev else ""


def alert_section_text(alert: NotifiedAlert) -> str:
    """One alert as mrkdwn: status, summary, key and top stats (all alert-supplied text escaped).

    Examples:
        >>> a = NotifiedAlert("f", "firing", {"alertname": "z", "key": "u<1>"}, {"summary": "x & y"}, 0,
        ...                   alert={"score": 7.25, "threshold": 3.0, "stats": {"mean": 10.0}})
        >>> print(alert_section_text(a))
        :rotating_light: *x &amp; y*
        key `u&lt;1&gt;` · score 7.25 (threshold 3) · mean 10
    """
    summary = alert.annotations.get("summary") or alert.alert.get("message") or alert.labels.get("alertname", "alert")
    lines = [f"{_ICON.get(alert.status, '')} *{slack_escape(summary)}*".strip()]
    facts = []
    key = alert.labels.get("key") or alert.alert.get("key")
    if key:
        facts.append(f"key `{slack_escape(key)}`")
    if "score" in alert.alert:
        score = f"score {_num(alert.alert['score'])}"
        if "threshold" in alert.alert:
            score += f" (threshold {_num(alert.alert['threshold'])})"
        facts.append(score)
    stats = alert.alert.get("stats")
    if isinstance(stats, Mapping):
        for k, v in list(stats.items())[:_TOP_STATS]:
            facts.append(f"{slack_escape(k)} {slack_escape(_num(v))}")
    if alert.status == "retracted":
        facts.append("_retracted: late data showed it should not have fired_")
    if facts:
        lines.append(" · ".join(facts))
    description = alert.annotations.get("description")
    if description:
        lines.append(slack_escape(description))
    return _clip("\n".join(lines), _SECTION_CHARS)


def slack_payload(notification: Notification) -> dict[str, Any]:
    """The incoming-webhook JSON for ``notification``."""
    alerts = notification.alerts
    status = "retracted" if notification.reason == "retracted" else notification.status
    severity = _severity(alerts)
    group = ", ".join(f"{k}={v}" for k, v in sorted(notification.group_labels.items())) or notification.group_key
    title = f"[{status.upper()}:{len(alerts)}]" + (f" {severity}" if severity else "") + f" {group}"
    header = _clip(slack_escape(title), _HEADER_CHARS)
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": header, "emoji": True}},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": _clip(
            f"receiver *{slack_escape(notification.receiver)}* · reason *{slack_escape(notification.reason)}*",
            _SECTION_CHARS)}]},
    ]  # fmt: skip
    for a in alerts[:MAX_ALERT_SECTIONS]:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": alert_section_text(a)}})
    if len(alerts) > MAX_ALERT_SECTIONS:
        more = len(alerts) - MAX_ALERT_SECTIONS
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": f"and {more} more alerts"}]})
    first = alerts[0] if alerts else None
    summary = ""
    if first is not None:
        summary = first.annotations.get("summary") or first.alert.get("message") or ""
    text = header + (f": {_clip(slack_escape(summary), 500)}" if summary else "")
    return {"text": text, "blocks": blocks}


class SlackNotifier:
    """POSTs each notification to a Slack-compatible incoming webhook (see the module docstring).

    Slack's incoming webhooks have no idempotency key; the ``Idempotency-Key`` header is still sent
    (compatible relays honour it) and retries are limited to failures where Slack did not take the message.

    Args:
        webhook_url: the incoming-webhook URL (a secret).
        name: the receiver name (in errors and logs).
        policy: retries and timeout.
        transport: an httpx transport (tests).

    Examples:
        >>> n = SlackNotifier("https://hooks.slack.com/services/T0/B0/secret", name="chat")
        >>> n.name, n.safe_url
        ('chat', 'https://hooks.slack.com/***')
        >>> n.close()
    """

    def __init__(
        self, webhook_url: str, *, name: str = "slack", policy: RetryPolicy | None = None, transport: Any = None
    ) -> None:
        self.name = name
        self._url = check_http_url(webhook_url, "webhook_url", hide_path=True)
        self._http = HttpDelivery(name, policy, None, hide_path=True, transport=transport)
        self.safe_url = self._http.safe(self._url)

    def send(self, notification: Notification) -> None:
        """Post the message (retrying transient failures).

        Raises:
            NotifyError: rejected (e.g. HTTP 404 ``no_service``: the webhook was revoked) or still failing.
        """
        self._http.request("POST", self._url, slack_payload(notification), notification.idempotency_key)

    def close(self) -> None:
        """Release the connection pool."""
        self._http.close()
