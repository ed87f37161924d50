"""What every notifier shares: retry policy, HTTP delivery with back-off, JSON and time helpers.

:class:`HttpDelivery` sends one request with retries. It retries what is worth retrying (connection
errors, timeouts, HTTP 5xx and 429) with exponential back-off and jitter, honours ``Retry-After``
(seconds or an HTTP date), and never retries any other 4xx: the server understood the request and
refused it, so sending it again cannot help; it raises :class:`~vigil.errors.NotifyError` at once
with the status and a short excerpt of the body. Every attempt of one request carries the same
``Idempotency-Key`` header, so a server that saw the first attempt succeed (we only lost its answer)
can de-duplicate the retry.

Errors name the notifier and the URL with its secrets taken out (:func:`safe_url`): user and
password, query-string values, and for webhook URLs that are themselves the secret (Slack) the path.

Examples:
    >>> policy = RetryPolicy(attempts=4, base_s=0.5, max_s=3.0, jitter=False)
    >>> [policy.backoff_s(i) for i in range(4)]
    [0.5, 1.0, 2.0, 3.0]
    >>> safe_url("https://bot:s3cret@hooks.example.com/notify?token=abc&team=ops")
    'https://hooks.example.com/notify?token=***&team=***'
    >>> rfc3339(1_700_000_000_123), rfc3339(1_700_000_000_000)
    ('2023-11-14T22:13:20.123Z', '2023-11-14T22:13:20Z')
"""

from __future__ import annotations

import email.utils
import logging
import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import httpx
import orjson

from vigil.errors import ConfigError, NotifyError

log = logging.getLogger("vigil.alerting.notifiers")

ZERO_TIME = "0001-01-01T00:00:00Z"
"""Alertmanager's "no time" (Go's zero ``time.Time``): the ``endsAt`` of a firing alert in webhooks."""

_BODY_EXCERPT_CHARS = 200


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How a notifier retries transient failures.

    Attributes:
        attempts: total attempts (1 = no retry).
        base_s: back-off before the 2nd attempt; doubled for every further attempt ...
        max_s: ... up to this. Also the longest ``Retry-After`` honoured: a server asking for a longer
            pause gets none (the notifier gives up and raises, the caller decides when to send again)
            rather than a notifier that blocks for minutes.
        timeout_s: per-request timeout (connect, read, write).
        jitter: randomize each pause to between half and all of its nominal value, so that notifiers
            that failed together do not retry together.
        sleep: how to wait (tests inject a recorder).
        rng: randomness for the jitter (seed it for reproducible pauses).
    """

    attempts: int = 5
    base_s: float = 0.5
    max_s: float = 30.0
    timeout_s: float = 10.0
    jitter: bool = True
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False, compare=False)
    rng: random.Random = field(default_factory=random.Random, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.attempts, int) or isinstance(self.attempts, bool) or self.attempts < 1:
            raise ConfigError("must be an integer >= 1", field="retry_attempts", value=self.attempts)
        for name in ("base_s", "max_s", "timeout_s"):
            v = getattr(self, name)
            if not isinstance(v, int | float) or not math.isfinite(v) or v <= 0:
                raise ConfigError("must be a number > 0", field=f"retry_{name}" if name != "timeout_s" else name,
                                  value=v)

    def backoff_s(self, retry: int) -> float:
        """The pause before retry number ``retry`` (0 = the first retry)."""
        nominal = min(self.max_s, self.base_s * 2.0**retry)
        return nominal * (0.5 + 0.5 * self.rng.random()) if self.jitter else nominal


def safe_url(url: str, *, hide_path: bool = False) -> str:
    """``url`` fit for logs and errors: no user/password, query values replaced by ``***``.

    With ``hide_path`` the path is replaced too (for URLs whose path is the secret, like Slack's).

    Examples:
        >>> safe_url("https://hooks.slack.com/services/T0/B0/XXXX", hide_path=True)
        'https://hooks.slack.com/***'
    """
    try:
        parts = urlsplit(url)
        netloc = parts.hostname or ""
        if parts.port is not None:
            netloc = f"{netloc}:{parts.port}"
    except ValueError:
        return "<unparseable url>"
    query = "&".join(f"{k}=***" for k, _ in parse_qsl(parts.query, keep_blank_values=True))
    path = "/***" if hide_path and parts.path not in ("", "/") else parts.path
    return urlunsplit((parts.scheme, netloc, path, query, ""))


def check_http_url(url: Any, field_name: str = "url", *, hide_path: bool = False) -> str:
    """``url`` itself, if it is an absolute http(s) URL.

    Raises:
        ConfigError: naming the field and the (secret-free) value.

    Examples:
        >>> check_http_url("http://127.0.0.1:9093/")
        'http://127.0.0.1:9093/'
        >>> check_http_url("127.0.0.1:9093")
        Traceback (most recent call last):
        ...
        vigil.errors.ConfigError: `url` must be an absolute http:// or https:// URL; got '127.0.0.1:9093' ...
    """
    ok = isinstance(url, str)
    if ok:
        try:
            parts = urlsplit(url)
            ok = parts.scheme in ("http", "https") and bool(parts.hostname)
        except ValueError:
            ok = False
    if not ok:
        shown = safe_url(url, hide_path=hide_path) if isinstance(url, str) and "://" in url else url
        raise ConfigError("must be an absolute http:// or https:// URL", field=field_name, value=shown,
                          hint="e.g. http://127.0.0.1:9093")
    return url


def rfc3339(ts_ms: int) -> str:
    """Epoch milliseconds as RFC 3339 UTC (milliseconds shown only when not zero)."""
    dt = datetime.fromtimestamp(ts_ms // 1000, tz=UTC)
    ms = ts_ms % 1000
    return dt.strftime("%Y-%m-%dT%H:%M:%S") + (f".{ms:03d}Z" if ms else "Z")


def _json_default(obj: Any) -> Any:
    # numpy scalars in alert stats, sets, anything else readable
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, set | frozenset | tuple):
        return list(obj)
    return str(obj)


def dumps(obj: Any) -> bytes:
    """Compact JSON (numpy values and arrays allowed).

    Examples:
        >>> dumps({"a": 1, "b": [1.5]})
        b'{"a":1,"b":[1.5]}'
    """
    return orjson.dumps(obj, default=_json_default, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS)


def _retry_after_s(value: str | None, now_s: float) -> float | None:
    """``Retry-After`` as seconds (it may be a number of seconds or an HTTP date), or None.

    Examples:
        >>> _retry_after_s("3", 0.0), _retry_after_s("junk", 0.0), _retry_after_s(None, 0.0)
        (3.0, None, None)
        >>> _retry_after_s("Thu, 01 Jan 1970 00:00:10 GMT", 4.0)
        6.0
    """
    if not value:
        return None
    try:
        s = float(value)
        return max(0.0, s) if math.isfinite(s) else None
    except ValueError:
        pass
    try:
        dt = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return max(0.0, dt.timestamp() - now_s)


def _excerpt(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _BODY_EXCERPT_CHARS else text[:_BODY_EXCERPT_CHARS] + "…"


class HttpDelivery:
    """One notifier's HTTP client: requests with retries, the idempotency key and safe error messages.

    Args:
        notifier: the notifier's name (for errors and logs).
        policy: retries and timeout.
        headers: sent with every request (e.g. an ``Authorization``).
        hide_path: the URL path is a secret (kept out of errors).
        transport: an httpx transport (tests); the default opens real connections.
    """

    def __init__(
        self,
        notifier: str,
        policy: RetryPolicy | None = None,
        headers: Mapping[str, str] | None = None,
        *,
        hide_path: bool = False,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.notifier = notifier
        self.policy = policy or RetryPolicy()
        self.hide_path = hide_path
        base = {"User-Agent": "vigil-notifier", "Content-Type": "application/json"}
        base.update(headers or {})
        self._client = httpx.Client(timeout=self.policy.timeout_s, headers=base, transport=transport,
                                    follow_redirects=False)

    def safe(self, url: str) -> str:
        """``url`` as errors show it."""
        return safe_url(url, hide_path=self.hide_path)

    def request(self, method: str, url: str, body: Any, idempotency_key: str) -> httpx.Response:
        """Send ``body`` as JSON; retry transient failures; return the 2xx response.

        Raises:
            NotifyError: a 4xx other than 429 (at once), or still failing after the last attempt.
        """
        content = body if isinstance(body, bytes) else dumps(body)
        headers = {"Idempotency-Key": idempotency_key}
        p = self.policy
        where = f"{method} {self.safe(url)}"
        last = "no attempt made"
        for attempt in range(p.attempts):
            if attempt:
                log.info("notifier `%s`: %s failed (%s); retry %d of %d", self.notifier, where, last, attempt,
                         p.attempts - 1)
            pause: float | None = None
            try:
                resp = self._client.request(method, url, content=content, headers=headers)
            except httpx.TransportError as exc:  # connection refused/reset, DNS, timeouts
                last = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            else:
                if resp.is_success:
                    return resp
                status = resp.status_code
                last = f"HTTP {status}: {_excerpt(resp.text)}"
                if status != 429 and not 500 <= status <= 599:
                    raise NotifyError(f"notifier `{self.notifier}`: {where} was rejected with {last} (not retried)")
                pause = _retry_after_s(resp.headers.get("Retry-After"), time.time())
                if pause is not None and pause > p.max_s:
                    raise NotifyError(
                        f"notifier `{self.notifier}`: {where} failed with {last} and the server asks to retry "
                        f"after {pause:g} s, more than retry_max_s={p.max_s:g}; giving up for now"
                    )
            if attempt + 1 < p.attempts:
                p.sleep(pause if pause is not None else p.backoff_s(attempt))
        raise NotifyError(f"notifier `{self.notifier}`: {where} failed after {p.attempts} attempts; last error: {last}")

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()
