"""The alert manager inside a running pipeline: raw alerts in, few grouped notifications out.

:class:`ManagedAlerts` is an alert sink. The engine sends it every raw alert, in order, followed by the
watermark (so alerts resolve in event time, after ``resolve_after`` without a new observation); a ticker
thread runs the manager's grouping timers (``group_wait``, ``group_interval``, ``repeat_interval``) once a
second and delivers the notifications to the receivers' notifiers (built from the policy's
``receivers``), recording every delivery in the alert store. The manager's state is saved next to the
store at every checkpoint flush and on close, and loaded at start, so a restart neither forgets open
groups nor re-sends what was sent (notifiers de-duplicate by idempotency key besides).

In a pipeline file::

    alerting:
      store: vigil-out/fraud/alerts.db          # default: vigil-out/<pipeline>/alerts.db
      route: {receiver: ops, group_by: [alertname, key], group_wait: 30s}
      receivers:
        - {name: ops, kind: webhook, url: "http://127.0.0.1:9000/hook"}
        - {name: am, kind: alertmanager, url: "http://127.0.0.1:9093"}

Examples:
    >>> import tempfile, os
    >>> from vigil.types import Alert
    >>> d = tempfile.mkdtemp()
    >>> now = [0]
    >>> m = ManagedAlerts({"route": {"group_wait": "10s"}}, pipeline="p", store_path=os.path.join(d, "a.db"),
    ...                   clock=lambda: now[0], tick_interval_s=None)
    >>> m.write_batch([Alert("a1", "u1", "e1", "z", 5.0, 3.0, 1_000, 0),
    ...                Alert("a2", "u1", "e2", "z", 6.0, 3.0, 2_000, 0)])
    >>> m.flush()                    # what is queued is taken in (at 0 ms), the timers run
    >>> now[0] = 11_000; m.flush()   # group_wait (10 s) is over: one notification for the two
    >>> m.counters["raw_alerts_in"], m.counters["logical_alerts"], m.counters["notifications_out"]
    (2, 1, 1)
    >>> m.close()
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from vigil.dataflow.capabilities import WatermarkMark
from vigil.errors import VigilError
from vigil.types import Alert

log = logging.getLogger("vigil.alerting")


_STOP = object()
_DRAIN_MS = 15 * 60_000  # at close: longer than a group_wait + group_interval, shorter than a repeat_interval


@runtime_checkable
class Suppressor(Protocol):
    """What holds alerts back before grouping, learning as it goes (the operators' feedback loop plugs in here).

    :class:`vigil.feedback.loop.FeedbackLoop` is the one Vigil ships; the alert manager knows only this protocol.
    """

    learn_every_s: float

    def filter(self, alerts: list[Alert]) -> tuple[list[Alert], list[Any]]:
        """``(kept, held back)``; what is held back has ``alert`` and ``reason``."""
        ...

    def learn(self, store: Any) -> None:
        """Learn from the alert store (labels); called every ``learn_every_s`` on the manager's thread."""
        ...


class ManagedAlerts:
    """An alert sink that runs the alert manager (see the module docstring).

    Args:
        policy: the ``alerting:`` mapping (or an :class:`~vigil.alerting.policy.AlertPolicy`); ``store`` and
            ``state`` keys, if present, are this class's, the rest is the policy.
        pipeline: the pipeline's name (the ``pipeline`` label).
        store_path: the SQLite alert store (shared with ``vigil alerts``, ``vigil silence`` and the console).
        clock: milliseconds for the grouping timers: a callable, ``"processing"`` (the wall clock, the default)
            or ``"event"`` (the stream's watermark: for replays and backfills, where hours of event time pass in
            seconds and grouping should follow the stream's time). In a pipeline file: ``alerting.clock``.
        tick_interval_s: seconds between ticks of the timer thread; ``None``: no thread (call :meth:`tick`).
        notifiers: receiver name -> notifiers; default built from the policy's receivers (``kind`` key).
        suppressor: holds alerts back before grouping and learns as it goes (a :class:`Suppressor`; the
            operators' feedback loop, :class:`vigil.feedback.loop.FeedbackLoop`, which the pipeline builder plugs
            in unless ``alerting.feedback: false``). Suppressed alerts are counted and logged, never silently
            dropped. Also settable as the ``suppressor`` attribute before the first alert.
    """

    def __init__(self, policy: Any, *, pipeline: str, store_path: str | os.PathLike[str] | None = None,
                 clock: Callable[[], int] | str | None = None, tick_interval_s: float | None = 1.0,
                 notifiers: Mapping[str, list[Any]] | None = None,
                 suppressor: Suppressor | None = None) -> None:  # fmt: skip
        if isinstance(policy, Mapping):
            store_path = store_path or policy.get("store")
            clock = clock or policy.get("clock")
        policy = _policy(policy)
        self.pipeline, self.policy = pipeline, policy
        self.store_path = Path(store_path or os.path.join("vigil-out", pipeline, "alerts.db"))
        self.state_path = self.store_path.with_suffix(".state.json")
        self._event_ms = 0
        self._event_clock = clock == "event"
        if clock == "event":
            self._clock: Callable[[], int] = lambda: self._event_ms
        elif clock in (None, "processing"):
            self._clock = lambda: time.time_ns() // 1_000_000
        elif callable(clock):
            self._clock = clock
        else:
            from vigil.errors import ConfigError

            raise ConfigError("must be 'processing' or 'event'", field="alerting.clock", value=clock)
        self._notifiers = notifiers
        self._tick_interval_s = tick_interval_s
        self._lock = threading.Lock()
        self._closed = False
        self._started = False
        self.deliveries = {"sent": 0, "failed": 0}
        self.sent_by_reason: dict[str, int] = {}  # notifications made, by reason (new, update, resolved, ...)
        self.state_listeners: list[Callable[[dict[str, int]], None]] = []  # e.g. metrics: alerts by state
        self.suppressor = suppressor
        self._next_learn = 0.0
        self._queue: queue.Queue[Any] = queue.Queue()
        self._thread: threading.Thread | None = None
        if notifiers is None:
            _check_receivers(policy)  # bad notifier settings fail at load, not at the first alert

    def _start(self) -> None:
        """Open the store, load the saved state, build the notifiers, start the timer thread (on first use)."""
        if self._started or self._closed:
            return
        from vigil.alerting.manager import AlertManager, Dispatcher
        from vigil.alerting.store import AlertStore

        self.store_path.parent.mkdir(parents=True, exist_ok=True)
        self.store = AlertStore(str(self.store_path))
        self.manager = AlertManager(self.policy, store=self.store, pipeline=self.pipeline, clock=self._clock)
        self._load_state()
        notifiers = self._notifiers if self._notifiers is not None else _build_notifiers(self.policy)
        self.dispatcher = Dispatcher(dict(notifiers), store=self.store)
        self._started = True
        self._thread = threading.Thread(target=self._work, daemon=True, name=f"vigil-{self.pipeline}-alerting")
        self._thread.start()

    # -- the sink ----------------------------------------------------------------------------------

    def write_batch(self, items: list[Any]) -> None:
        """Raw alerts (and watermark marks), in stream order: queued for the manager's own thread.

        The sink thread only enqueues, so grouping, the store and slow receivers never delay the other
        sinks (nor, through backpressure, the stream).
        """
        self._start()
        self._queue.put(items)

    def on_watermark(self, watermark_ms: int) -> None:
        """The stream's watermark, in order with the alerts (alerts resolve in event time)."""
        self.write_batch([WatermarkMark(watermark_ms)])

    def _take(self, items: list[Any]) -> None:
        notes: list[Any] = []
        with self._lock:
            if self._event_clock:
                self._take_event_time(items, notes)
            else:
                alerts: list[Alert] = []
                for it in items:
                    if isinstance(it, WatermarkMark):
                        if alerts:
                            self._ingest(alerts)
                            alerts = []
                        self.manager.advance(it.watermark_ms)
                    elif isinstance(it, Alert):
                        alerts.append(it)
                if alerts:
                    self._ingest(alerts)
        self._deliver(notes)

    def _take_event_time(self, items: list[Any], notes: list[Any]) -> None:
        """Event clock: alerts in event-time order, every timer and resolution due in between run at its time.

        A batch covering hours of a replay then groups and resolves as the live stream would.
        """
        alerts = sorted((it for it in items if isinstance(it, Alert)), key=lambda a: a.event_ts_ms)
        for a in alerts:
            self._run_until(a.event_ts_ms, notes)
            self._ingest([a], now_ms=max(self._event_ms, a.event_ts_ms))
        marks = [it.watermark_ms for it in items if isinstance(it, WatermarkMark)]
        if marks:
            self._run_until(max(marks), notes)
            self.manager.advance(max(marks))

    def _ingest(self, alerts: list[Alert], now_ms: int | None = None) -> None:
        """Firing observations, and the revisions late data made (``stats["revision"]``).

        A retraction or a revision changes the logical alert it names; an alert raised late is a new
        observation like any other.
        """
        from vigil.alerting.manager import labels_of
        from vigil.alerting.notification import fingerprint

        plain: list[Alert] = []
        for a in alerts:
            rev = a.stats.get("revision") if isinstance(a.stats, dict) else None
            rev = rev if isinstance(rev, dict) else {}
            action = rev.get("action")
            if action in ("retracted", "revised"):
                if plain:
                    self.manager.ingest(plain, now_ms)
                    plain = []
                fp = fingerprint(labels_of(a, self.pipeline))
                if fp not in self.manager._entries:
                    continue  # never told: nothing to take back or update
                if action == "retracted":
                    self.manager.retract(fp, a.event_ts_ms, str(rev.get("why", "late data")))
                else:
                    self.manager.revise(a, now_ms)
            else:
                plain.append(a)
        if plain and self.suppressor is not None:
            plain, _ = self.suppressor.filter(plain)
        if plain:
            self.manager.ingest(plain, now_ms)

    def learn_now(self) -> None:
        """Learn from the store's labels now (the manager's thread does it every ``learn_every``)."""
        self._start()
        if self.suppressor is not None:
            self.suppressor.learn(self.store)

    def _run_until(self, t: int, notes: list[Any]) -> None:
        """Run the manager's timers (group flushes, resolutions) due up to event time ``t``, in order."""
        m, last = self.manager, None
        while True:
            due = m.next_due_ms()
            if due is None or due > t or (last is not None and due <= last):
                break
            last = self._event_ms = max(self._event_ms, due)
            m.advance(due)
            notes += m.tick(due)
        self._event_ms = max(self._event_ms, t)

    def _work(self) -> None:
        """The manager's thread: queued items in order, and the timers once a second of wall clock."""
        next_tick = time.monotonic() + (self._tick_interval_s or 1.0)
        while True:
            try:
                items = self._queue.get(timeout=max(0.0, next_tick - time.monotonic()))
            except queue.Empty:
                items = None
            try:
                if items is _STOP:
                    return
                if items is not None:
                    self._take(items)
                if self.suppressor is not None and time.monotonic() >= self._next_learn:
                    self._next_learn = time.monotonic() + self.suppressor.learn_every_s
                    self.suppressor.learn(self.store)
                if self._tick_interval_s is not None and time.monotonic() >= next_tick:
                    next_tick = time.monotonic() + self._tick_interval_s
                    if not self._event_clock:
                        self.tick()
                    if self.state_listeners:
                        states = self.states()
                        for listen in self.state_listeners:
                            listen(states)
            except Exception:  # noqa: BLE001 - alerting trouble must never stop the pipeline
                log.exception("alert manager failed on a batch; going on")
            finally:
                if items is not None:
                    self._queue.task_done()

    def flush(self) -> None:
        """The checkpoint point: everything queued is taken in, the timers run, the state is saved."""
        self._start()
        self._queue.join()
        self.tick()
        self._save_state()

    def close(self) -> None:
        """Last tick and delivery, save the state, stop the timer thread, close notifiers and the store."""
        if self._closed or not self._started:
            self._closed = True
            return
        self._queue.join()
        self._queue.put(_STOP)
        if self._thread is not None:
            self._thread.join(timeout=30)
        # the stream ended (or the run stops): groups still in their group_wait/group_interval are sent now
        self.tick(drain=True)
        self._save_state()
        self._closed = True
        self.dispatcher.close()
        self.store.close()

    # -- timers ------------------------------------------------------------------------------------

    def tick(self, drain: bool = False) -> None:
        """Run the grouping timers now and deliver what they produced (``drain``: also what is still waiting)."""
        self._start()
        with self._lock:
            now = self._clock()
            notes = self.manager.drain(now, _DRAIN_MS) if drain else self.manager.tick(now)
        self._deliver(notes)

    def _deliver(self, notes: list[Any]) -> None:
        for n in notes:
            self.sent_by_reason[n.reason] = self.sent_by_reason.get(n.reason, 0) + 1
        if notes:
            report = self.dispatcher.deliver(notes)
            self.deliveries["sent"] += report.sent
            self.deliveries["failed"] += report.failed

    def set_policy(self, policy: Any) -> None:
        """Swap the policy of a running manager (live reconfiguration), keeping every alert and group.

        Inhibition, resolution and flap settings apply at once; routes and grouping apply to alerts that
        fire from now on (open ones keep their groups until they resolve). Notifiers are rebuilt.
        """
        from vigil.alerting.manager import AlertManager, Dispatcher

        policy = _policy(policy)
        if self._notifiers is None:
            _check_receivers(policy)
        self.policy = policy
        if not self._started:
            return
        with self._lock:
            snap = self.manager.snapshot()
            self.manager = AlertManager(policy, store=self.store, pipeline=self.pipeline, clock=self._clock)
            self.manager.restore(snap)
            old = self.dispatcher
            notifiers = self._notifiers if self._notifiers is not None else _build_notifiers(policy)
            self.dispatcher = Dispatcher(dict(notifiers), store=self.store)
        old.close()

    @property
    def counters(self) -> dict[str, int]:
        """Raw alerts in, logical alerts, notifications out, and what was suppressed and why."""
        if not self._started:
            from vigil.alerting.manager import COUNTERS

            return dict.fromkeys(COUNTERS, 0)
        with self._lock:
            return dict(self.manager.counters)

    def states(self) -> dict[str, int]:
        """Logical alerts by state (firing, resolved, retracted, silenced, acked), for metrics and the console."""
        self._start()
        with self._lock:
            out: dict[str, int] = {}
            for a in self.manager.alerts():
                out[a.status] = out.get(a.status, 0) + 1
                for flag in ("silenced_by", "inhibited_by"):
                    if getattr(a, flag):
                        out[flag.removesuffix("_by")] = out.get(flag.removesuffix("_by"), 0) + 1
                if a.acked:
                    out["acked"] = out.get("acked", 0) + 1
            return out

    # -- state -------------------------------------------------------------------------------------

    def _save_state(self) -> None:
        with self._lock:
            snap = self.manager.snapshot()
        tmp = self.state_path.with_name(self.state_path.name + ".tmp")
        try:
            tmp.write_text(json.dumps(snap, default=str), encoding="utf-8")
            os.replace(tmp, self.state_path)
        except OSError as exc:
            log.warning("alert manager state not saved to %s: %s", self.state_path, exc.strerror)

    def _load_state(self) -> None:
        try:
            text = self.state_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return
        try:
            self.manager.restore(json.loads(text))
        except (ValueError, KeyError, TypeError, VigilError) as exc:
            log.warning("alert manager state %s not loaded (%s): starting with no open groups", self.state_path, exc)


def _policy(policy: Any) -> Any:
    """An AlertPolicy from the ``alerting:`` mapping.

    ``store`` is dropped, ``type`` reads as ``kind``, and a lone receiver (or none: ``default``) becomes the
    root route's receiver.
    """
    from vigil.alerting.policy import AlertPolicy

    if policy is None:
        return AlertPolicy.from_dict({"receivers": [{"name": "default"}], "route": {"receiver": "default"}})
    if not isinstance(policy, Mapping):
        return policy
    raw = {k: v for k, v in policy.items() if k not in ("store", "state", "clock", "feedback")}
    receivers = []
    for r in raw.get("receivers") or []:
        if isinstance(r, dict) and "type" in r and "kind" not in r:
            r = {**{k: v for k, v in r.items() if k != "type"}, "kind": r["type"]}
        receivers.append(r)
    raw["receivers"] = receivers or [{"name": "default"}]  # no receivers: recorded in the store only
    route = dict(raw.get("route") or {})
    if "receiver" not in route and len(raw["receivers"]) == 1 and isinstance(raw["receivers"][0], dict):
        route["receiver"] = raw["receivers"][0].get("name", "default")
    raw["route"] = route
    return AlertPolicy.from_dict(raw)


def _build_notifiers(policy: Any) -> dict[str, list[Any]]:
    """One notifier per receiver with a ``kind``; a receiver without one is only recorded in the store."""
    from vigil.alerting.notifiers import build_notifier

    return {r.name: [build_notifier(dict(r.config), r.name)] if "kind" in (r.config or {}) else [_StoreOnly(r.name)]
            for r in policy.receivers}  # fmt: skip


class _StoreOnly:
    """The notifier of a receiver without ``kind``: its notifications are only recorded in the alert store."""

    def __init__(self, name: str) -> None:
        self.name = name

    def send(self, notification: Any) -> None:
        """Nothing to deliver."""

    def close(self) -> None:
        """Nothing to release."""


def _check_receivers(policy: Any) -> None:
    from vigil.alerting.notifiers import parse_notifier_spec

    for r in policy.receivers:
        if "kind" in (r.config or {}):
            parse_notifier_spec(dict(r.config), r.name)
