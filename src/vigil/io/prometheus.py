"""Scraping Prometheus ``/metrics`` endpoints (node_exporter, any exporter) into metric samples.

:class:`PrometheusScrapeSource` pulls every target every ``interval_s`` and emits one row per sample in
the long metric layout of :mod:`vigil.io.metrics` (key = host, ``value`` column, ``metric`` extra
column):

- **metric**: the sample name with its labels folded in, sorted by label name:
  ``node_cpu_seconds_total{cpu="0",mode="idle"}`` → ``node_cpu_seconds_total:cpu=0,mode=idle``.
- **host**: the ``host_label`` label when a sample has it (default ``instance``: federation,
  Pushgateway), which is then not folded into the name; otherwise the target's ``host:port``, as
  Prometheus's own ``instance`` label.
- **event time**: the sample's timestamp when the exposition gives one, else the time the scrape
  started (the injected ``wall_clock``).
- ``metrics``: an allow-list of regular expressions matched against the whole sample name
  (``node_cpu_.*``), as Prometheus anchors them. Samples that are NaN or infinite are dropped and
  counted (``stats["non_finite"]``).

**Rates** (``rate=True``): cumulative samples — counters, histogram ``_bucket``/``_sum``/``_count``,
summary ``_sum``/``_count``, and untyped samples named ``*_total`` — are turned into per-second
increases since the target's previous successful scrape, under the same metric name. A value lower
than the previous one is a counter reset (the exporter restarted): the increase is then the new value
itself, as Prometheus's ``rate()`` does. The first scrape of a series gives no rate row (nothing to
compare with); neither does a series whose timestamps did not advance. Gauges pass through as they are.

**Failures** never raise: an unreachable target, a timeout, an HTTP error status, an oversized or
unparseable body each become a dead letter for that target and scrape (reason code ``unreachable``,
``scrape_failed``, ``too_large`` or ``invalid_utf8``, with a message such as ``target unreachable: ...``
or ``scrape failed: HTTP 503 ...``; ``raw`` = the URL, ``position`` = the scrape number), counted in
``stats["failed"]``, and the other targets' samples still flow. As in
Prometheus, a scrape whose body can't be parsed is rejected whole.

**Pacing**: targets are fetched in parallel by worker threads; ``read_batch`` starts a scrape when one
is due, waits for it at most until its timeout (returning ``None`` if it isn't done; the next call picks
it up) and hands the samples out ``max_items`` at a time. The schedule is fixed-rate: scrapes start at
``open + k × interval_s``; slots missed while the consumer was busy are skipped, not made up.

**Positions and resume**: ``position()`` is the number of scrapes completed and fully handed out. A
scrape source is live: it can't replay the past, so ``open(resume=n)`` only continues the count (and
``max_scrapes``) from ``n``; samples of the time the pipeline was down are lost, and rates start again
after one scrape.
"""

from __future__ import annotations

import math
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from vigil.errors import ConfigError, SourceError
from vigil.io.base import DeadLetter, Records

_ACCEPT = "text/plain;version=0.0.4;q=1,application/openmetrics-text;version=1.0.0;q=0.5,*/*;q=0.1"
_CUMULATIVE_SUFFIXES = {"histogram": ("_bucket", "_sum", "_count"), "summary": ("_sum", "_count")}

Sample = tuple[str, str, dict[str, str], float, float | None]
"""(family type, sample name, labels, value, timestamp in s or None)."""


def _http_fetch(url: str, timeout_s: float, max_bytes: int) -> tuple[str, str]:
    """GET ``url``: (content type, body text). Raises ``_ScrapeError`` with the dead-letter reason."""
    req = urllib.request.Request(url, headers={"Accept": _ACCEPT, "User-Agent": "vigil-scraper"})
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:  # noqa: S310 - http(s) checked at config
            body = resp.read(max_bytes + 1)
            ctype = resp.headers.get("Content-Type", "")
    except urllib.error.HTTPError as e:
        raise _ScrapeError(f"scrape failed: HTTP {e.code} {e.reason}") from None
    except urllib.error.URLError as e:
        raise _ScrapeError(f"target unreachable: {e.reason}", "unreachable") from None
    except (TimeoutError, OSError) as e:
        raise _ScrapeError(f"target unreachable: {type(e).__name__}: {e}", "unreachable") from None
    if len(body) > max_bytes:
        raise _ScrapeError(f"scrape failed: body larger than max_body_bytes ({max_bytes})", "too_large")
    try:
        return ctype, body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _ScrapeError(f"unparseable exposition: invalid UTF-8 at byte {e.start}", "invalid_utf8") from None


class _ScrapeError(Exception):
    """A failed scrape: the message and the dead letter's reason code (default ``scrape_failed``)."""

    def __init__(self, message: str, code: str = "scrape_failed") -> None:
        super().__init__(message)
        self.code = code


def _target_url(target: str) -> str:
    url = target if "://" in target else f"http://{target}"
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError("must be an http(s) URL of a /metrics endpoint", field="targets", value=target,
                          hint="e.g. http://127.0.0.1:9100/metrics")
    return url if parts.path not in ("", "/") else f"{parts.scheme}://{parts.netloc}/metrics"


class PrometheusScrapeSource:
    """Pulls Prometheus ``/metrics`` endpoints; see the module docstring.

    Args:
        targets: URLs of ``/metrics`` endpoints (``host:port`` alone means ``http://host:port/metrics``).
        interval_s: time between scrapes (the first one starts at ``open``).
        metrics: allow-list: a regular expression or a list of them, matched against whole sample names.
        host_label: label naming the host when a sample has it (``None``: always the target's host:port).
        rate: turn cumulative samples into per-second rates.
        timeout_s: HTTP timeout of one scrape of one target.
        max_scrapes: stop after this many scrapes (``at_end`` becomes true); ``None``: live forever.
        max_body_bytes: larger responses are failed scrapes.
        name: source name (dead letters carry it).
        clock, sleep: monotonic clock and sleep for pacing (injectable).
        wall_clock: epoch seconds, the event time of samples without their own timestamp.
        fetch: ``fetch(url, timeout_s, max_bytes) -> (content_type, text)``, raising on failure
            (default: ``urllib``).

    Examples:
        >>> src = PrometheusScrapeSource(["127.0.0.1:9100"], interval_s=15, metrics=["node_cpu_.*"], rate=True)
        >>> src.targets, src.partitions()
        (['http://127.0.0.1:9100/metrics'], ['0'])
    """

    def __init__(
        self,
        targets: Sequence[str],
        interval_s: float = 10.0,
        *,
        metrics: str | Sequence[str] | None = None,
        host_label: str | None = "instance",
        rate: bool = False,
        timeout_s: float = 5.0,
        max_scrapes: int | None = None,
        max_body_bytes: int = 64 << 20,
        name: str = "prometheus",
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        wall_clock: Callable[[], float] = time.time,
        fetch: Callable[[str, float, int], tuple[str, str]] | None = None,
    ) -> None:
        if isinstance(targets, str) or not targets:
            raise ConfigError("must be a non-empty list of URLs", field="targets", value=targets)
        if not interval_s > 0:
            raise ConfigError("must be > 0", field="interval_s", value=interval_s, hint="Prometheus uses 15 s")
        if not timeout_s > 0:
            raise ConfigError("must be > 0", field="timeout_s", value=timeout_s)
        if max_scrapes is not None and max_scrapes < 0:
            raise ConfigError("must be >= 0 or None", field="max_scrapes", value=max_scrapes)
        self.targets = [_target_url(t) for t in targets]
        patterns = [metrics] if isinstance(metrics, str) else list(metrics or [])
        try:
            self._allow = [re.compile(p) for p in patterns]
        except re.error as e:
            raise ConfigError(f"is not a valid regular expression: {e}", field="metrics", value=metrics) from None
        self.interval_s, self.host_label, self.rate = interval_s, host_label, rate
        self.timeout_s, self.max_scrapes, self.max_body_bytes = timeout_s, max_scrapes, max_body_bytes
        self.name = name
        self._clock, self._sleep, self._wall_clock = clock, sleep, wall_clock
        self._fetch = fetch or _http_fetch

    def partitions(self) -> list[str]:
        """One partition, ``"0"``, scraping every target."""
        return ["0"]

    def open(self, partition: str = "0", resume: Any = None) -> PrometheusScrapeReader:
        """Start scraping; ``resume=n`` continues the scrape count from ``n`` (nothing is replayed)."""
        if partition != "0":
            raise SourceError(f"source `{self.name}` has one partition, '0'; got {partition!r}")
        if resume is not None and (isinstance(resume, bool) or not isinstance(resume, int) or resume < 0):
            raise SourceError(f"source `{self.name}`: resume must be a scrape count >= 0; got {resume!r}")
        return PrometheusScrapeReader(self, resume or 0)

    # -- runs in worker threads --------------------------------------------------------------------

    def _scrape(self, url: str) -> list[Sample]:
        ctype, text = self._fetch(url, self.timeout_s, self.max_body_bytes)
        if "openmetrics" in ctype:
            from prometheus_client.openmetrics.parser import text_string_to_metric_families
        else:
            from prometheus_client.parser import text_string_to_metric_families  # type: ignore[assignment]
        allow = self._allow
        out: list[Sample] = []
        try:
            for fam in text_string_to_metric_families(text):
                for s in fam.samples:
                    if allow and not any(p.fullmatch(s.name) for p in allow):
                        continue
                    ts = None if s.timestamp is None else float(s.timestamp)  # type: ignore[arg-type]
                    out.append((fam.type, s.name, dict(s.labels), float(s.value), ts))
        except (ValueError, TypeError, KeyError, IndexError) as e:
            raise _ScrapeError(f"unparseable exposition: {type(e).__name__}: {e}") from None
        return out


def _cumulative(ftype: str, name: str) -> bool:
    if ftype == "counter":
        return not name.endswith("_created")
    if ftype in _CUMULATIVE_SUFFIXES:
        return name.endswith(_CUMULATIVE_SUFFIXES[ftype])
    return ftype in ("unknown", "untyped") and name.endswith("_total")


class PrometheusScrapeReader:
    """Reads a :class:`PrometheusScrapeSource`; see the module docstring for pacing and positions.

    ``stats`` counts ``scrapes`` (completed rounds over all targets), ``failed`` (failed target
    scrapes), ``samples`` (rows emitted) and ``non_finite`` (NaN / infinite samples dropped).
    """

    def __init__(self, src: PrometheusScrapeSource, scrapes: int) -> None:
        self.src = src
        self._scrapes = scrapes
        self._pool = ThreadPoolExecutor(max_workers=min(len(src.targets), 16), thread_name_prefix="vigil-scrape")
        self._futures: list[Future[list[Sample]]] | None = None
        self._next_due = src._clock()
        self._scrape_ms = 0
        self._pending: Records | None = None
        self._row = 0
        self._prev: dict[str, dict[tuple[str, str], tuple[float, int]]] = {}  # url -> (host, metric) -> (v, ms)
        self._instance = {u: urlsplit(u).netloc for u in src.targets}
        self._closed = False
        self.stats = {"scrapes": 0, "failed": 0, "samples": 0, "non_finite": 0}

    def read_batch(self, max_items: int, timeout_ms: int) -> Records | None:
        """Samples of the current scrape, up to ``max_items``; ``None`` while no scrape is done."""
        if self._closed:
            raise SourceError(f"source `{self.src.name}` is closed")
        if max_items < 1:
            return None
        clock = self.src._clock
        deadline = clock() + max(timeout_ms, 0) / 1000.0
        if self._pending is None:
            if self._futures is None:
                if self.at_end:
                    return None
                now = clock()
                if self._next_due > now:
                    self.src._sleep(max(0.0, min(self._next_due, deadline) - now))
                    if clock() < self._next_due:
                        return None
                self._start()
            assert self._futures is not None
            _, not_done = wait(self._futures, timeout=max(0.0, deadline - clock()))
            if not_done:
                return None
            self._pending, self._row = self._collect(self._futures), 0
            self._futures = None
        return self._hand_out(max_items)

    def _start(self) -> None:
        src = self.src
        self._scrape_ms = round(src._wall_clock() * 1000)
        self._futures = [self._pool.submit(src._scrape, url) for url in src.targets]
        now = src._clock()
        self._next_due += src.interval_s
        if self._next_due <= now:  # fell behind: skip the missed slots, keep the phase
            missed = math.floor((now - self._next_due) / src.interval_s) + 1
            self._next_due += missed * src.interval_s

    def _collect(self, futures: list[Future[list[Sample]]]) -> Records:
        src = self.src
        hosts: list[str] = []
        ts: list[int] = []
        values: list[float] = []
        names: list[str] = []
        dead: list[DeadLetter] = []
        for url, fut in zip(src.targets, futures, strict=True):
            try:
                samples = fut.result()
            except _ScrapeError as e:
                code, reason = e.code, str(e)
            except Exception as e:  # noqa: BLE001 - a scrape failure is data, never a crash
                code, reason = "scrape_failed", f"scrape failed: {type(e).__name__}: {e}"
            else:
                self._rows(url, samples, hosts, ts, values, names)
                continue
            self.stats["failed"] += 1
            dead.append(DeadLetter(code, reason, url, src.name, self._scrapes))
        n = len(ts)
        keys = np.empty(n, object)
        keys[:] = hosts
        metric = np.empty(n, object)
        metric[:] = names
        self.stats["scrapes"] += 1
        self.stats["samples"] += n
        return Records(
            keys,
            np.asarray(ts, np.int64).reshape(n),
            {"value": np.asarray(values, np.float64).reshape(n)},
            {"metric": metric},
            dead,
        )

    def _rows(self, url: str, samples: list[Sample], hosts: list[str], ts: list[int], values: list[float],
              names: list[str]) -> None:
        src = self.src
        host_label, instance, scrape_ms = src.host_label, self._instance[url], self._scrape_ms
        prev = self._prev.get(url, {})
        now: dict[tuple[str, str], tuple[float, int]] = {}
        for ftype, name, labels, value, t in samples:
            if not math.isfinite(value):
                self.stats["non_finite"] += 1
                continue
            host = (labels.pop(host_label, None) if host_label else None) or instance
            metric = (name + ":" + ",".join(f"{k}={v}" for k, v in sorted(labels.items()))) if labels else name
            t_ms = scrape_ms if t is None else round(t * 1000)
            if src.rate and _cumulative(ftype, name):
                key = (host, metric)
                now[key] = (value, t_ms)
                before = prev.get(key)
                if before is None or t_ms <= before[1]:
                    continue
                increase = value - before[0] if value >= before[0] else value  # lower = counter reset
                value = increase * 1000.0 / (t_ms - before[1])
            hosts.append(host)
            ts.append(t_ms)
            values.append(value)
            names.append(metric)
        if src.rate:
            self._prev[url] = now  # series gone from the target are forgotten

    def _hand_out(self, max_items: int) -> Records:
        recs = self._pending
        assert recs is not None
        a, b = self._row, min(self._row + max_items, len(recs))
        out = Records(
            recs.keys[a:b], recs.ts_ms[a:b], {k: v[a:b] for k, v in recs.cols.items()},
            {k: v[a:b] for k, v in recs.extra.items()}, recs.dead if a == 0 else [],
        )
        self._row = b
        if b >= len(recs):
            self._pending = None
            self._scrapes += 1
        return out

    def position(self) -> int:
        """Scrapes completed and fully handed out."""
        return self._scrapes

    @property
    def at_end(self) -> bool:
        """True after ``max_scrapes`` scrapes (never for a live source)."""
        m = self.src.max_scrapes
        return m is not None and self._scrapes >= m and self._pending is None and self._futures is None

    def close(self) -> None:
        """Stop the workers (a scrape in flight ends at its HTTP timeout); idempotent."""
        if not self._closed:
            self._closed = True
            self._pool.shutdown(wait=False, cancel_futures=True)
