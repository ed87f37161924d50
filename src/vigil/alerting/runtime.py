"""The alert manager inside a running pipeline: raw alerts in, few grouped notifications out.

:class:`ManagedAlerts` is an alert sink. The engine sends it every raw alert, in order, followed by the
watermark (so alerts resolve in event time, after ``resolve_after`` without a new observation); a ticker
thread runs the manager's grouping timers (``group_wait``, ``group_interval``, ``repeat_interval``) once a
second and delivers the notifications to the receivers' notifiers (built from the policy's
``receivers``), recording every delivery in the alert store. The sink only enqueues; the manager's own
thread takes everything queued in one go, with one store transaction.

The manager's state lives in the alert store, saved incrementally (what changed) at every engine checkpoint,
keyed by its sequence; a pipeline restarted from checkpoint *n* puts the manager back as it was at *n* and
removes what it wrote after it, so the replay neither forgets open groups nor re-sends what was sent nor
records a change twice (notifiers de-duplicate by idempotency key besides). Without checkpoints, the
latest state is saved at every flush and on close, and loaded at start.

A pipeline with ``alerting:`` but no ``route.group_by`` groups per detector and key (``DEFAULT_GROUP_BY``):
one group per card holder and detector, not every card holder in one group.

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
from vigil.eventtime.watermarks import MAX_WATERMARK
from vigil.types import Alert

log = logging.getLogger("vigil.alerting")


#: how a pipeline's alert manager groups when its policy doesn't say: one group per detector and key
DEFAULT_GROUP_BY = ("alertname", "key")
_STOP = object()
_CHUNK = 256  # queued batches taken in one go (one store transaction)
# alerts (a watermark counts one) waiting for the manager's thread: a burst passes, a storm waits (in the sink
# thread, and through backpressure the stream) instead of piling up in memory
_QUEUE_ITEMS = 20_000
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
        tick_interval_s: seconds between ticks of the timer thread; ``None``: no periodic ticks (call :meth:`tick`).
        persist_interval_s: while alerts pour in, changed rows are written to the store at most this often (and
            at every tick, checkpoint, flush and close): an alert observed ten times in that time is written once.
        notifiers: receiver name -> notifiers; default built from the policy's receivers (``kind`` key).
        suppressor: holds alerts back before grouping and learns as it goes (a :class:`Suppressor`; the
            operators' feedback loop, :class:`vigil.feedback.loop.FeedbackLoop`, which the pipeline builder plugs
            in unless ``alerting.feedback: false``). Suppressed alerts are counted and logged, never silently
            dropped. Also settable as the ``suppressor`` attribute before the first alert.
    """

    def __init__(self, policy: Any, *, pipeline: str, store_path: str | os.PathLike[str] | None = None,
                 clock: Callable[[], int] | str | None = None, tick_interval_s: float | None = 1.0,
                 persist_interval_s: float = 0.5,
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
        # bounded by what it holds (see _QUEUE_ITEMS), not by batches: a manager slower than the stream slows the
        # sink thread (backpressure) rather than holding a storm's alerts in memory, while the many small
        # watermark batches don't block it
        self._queue: queue.Queue[Any] = queue.Queue()
        self._room = threading.Condition()
        self._queued = 0
        self._thread: threading.Thread | None = None
        self.counter_listeners: list[Callable[[dict[str, int]], None]] = []  # e.g. metrics: the manager's counters
        self._min_timer_ms = _min_timer(policy)
        self._persist_interval_s = persist_interval_s
        self._next_persist = 0.0
        self._checkpointed = False  # the engine checkpoints: the state is saved (and restored) by checkpoint
        self._restore_seq: int | None = None
        self._since_checkpoint = False
        self._last_seq: int | None = None
        self._keep_from: int | None = None
        if notifiers is None:
            _check_receivers(policy)  # bad notifier settings fail at load, not at the first alert

    def _start(self) -> None:
        """Open the store, load the saved state, build the notifiers, start the manager's thread (on first use)."""
        if self._started or self._closed:
            return
        from vigil.alerting.manager import AlertManager, Dispatcher
        from vigil.alerting.store import AlertStore

        self.store_path.parent.mkdir(parents=True, exist_ok=True)
        self.store = AlertStore(str(self.store_path))
        self.manager = AlertManager(self.policy, store=self.store, pipeline=self.pipeline, clock=self._clock,
                                    autopersist=False)  # fmt: skip
        self._load_state()
        self.dispatcher = Dispatcher(self._make_notifiers(), store=self.store)
        self._started = True
        self._thread = threading.Thread(target=self._work, daemon=True, name=f"vigil-{self.pipeline}-alerting")
        self._thread.start()

    def _make_notifiers(self) -> dict[str, list[Any]]:
        notifiers = dict(self._notifiers if self._notifiers is not None else _build_notifiers(self.policy))
        # a receiver that only records in the store needs no alert list in its notifications
        self.manager.lean_receivers = {r for r, ns in notifiers.items() if ns and all(isinstance(n, _StoreOnly)
                                                                                      for n in ns)}  # fmt: skip
        return notifiers

    # -- the sink ----------------------------------------------------------------------------------

    def write_batch(self, items: list[Any]) -> None:
        """Raw alerts (and watermark marks), in stream order: queued for the manager's own thread.

        The sink thread only enqueues, so grouping, the store and slow receivers never delay the other
        sinks (nor, through backpressure, the stream).
        """
        self._start()
        n = len(items) or 1
        with self._room:
            while self._queued and self._queued + n > _QUEUE_ITEMS:
                self._room.wait()
            self._queued += n
        self._queue.put(items)

    def on_watermark(self, watermark_ms: int) -> None:
        """The stream's watermark, in order with the alerts (alerts resolve in event time).

        At the end of a finite input the engine sends the end of time: every alert still firing resolves
        ``resolve_after`` after its last observation, as it would have had the stream gone on quietly.
        """
        self.write_batch([WatermarkMark(watermark_ms)])

    def _take(self, chunk: list[list[Any]]) -> None:
        """Queued items, in order: one store transaction for all of them, then the notifications they made."""
        notes: list[Any] = []
        with self._lock:
            self.manager._sync_mutes()  # once for the chunk: silences and acks as of the moment it is taken
            self.manager.mutes_synced = True
            try:
                self._take_chunk(chunk, notes)
            finally:
                self.manager.mutes_synced = False
            self._since_checkpoint = True
            if time.monotonic() >= self._next_persist:
                self._persist()
        self._deliver(notes)

    def _take_chunk(self, chunk: list[list[Any]], notes: list[Any]) -> None:
        for items in chunk:
            if self._event_clock:
                self._take_event_time(items, notes)
                continue
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

    def _persist(self) -> None:
        """Write what changed (under the lock): at most every ``persist_interval_s`` while alerts pour in."""
        self.manager.persist()
        self._next_persist = time.monotonic() + self._persist_interval_s

    def _take_event_time(self, items: list[Any], notes: list[Any]) -> None:
        """Event clock: alerts in event-time order, every timer and resolution due in between run at its time.

        A batch covering hours of a replay then groups and resolves as the live stream would. Alerts between
        two timers are ingested together (each at its own event time).
        """
        alerts = sorted((it for it in items if isinstance(it, Alert)), key=lambda a: a.event_ts_ms)
        m, i, n = self.manager, 0, len(alerts)
        gap = self._min_timer_ms
        while i < n:
            t = alerts[i].event_ts_ms
            self._run_until(t, notes)
            due = m.next_due_ms()
            bound = t + gap if due is None else min(due, t + gap)  # no timer ingesting these can start runs before
            j = i + 1
            while j < n and alerts[j].event_ts_ms < bound:
                j += 1
            run = alerts[i:j]
            self._ingest(run, nows=[max(self._event_ms, a.event_ts_ms) for a in run])
            self._event_ms = max(self._event_ms, run[-1].event_ts_ms)
            i = j
        marks = [it.watermark_ms for it in items if isinstance(it, WatermarkMark)]
        if marks:
            self._run_until(max(marks), notes)
            m.advance(max(marks))

    def _ingest(self, alerts: list[Alert], now_ms: int | None = None, nows: list[int] | None = None) -> None:
        """Firing observations, and the revisions late data made (``stats["revision"]``).

        A retraction or a revision changes the logical alert it names; an alert raised late is a new
        observation like any other. ``nows``: each alert's own processing time (the event clock).
        """
        from vigil.alerting.manager import labels_of
        from vigil.alerting.notification import fingerprint

        plain: list[Alert] = []
        times: list[int] = []
        for i, a in enumerate(alerts):
            rev = a.stats.get("revision") if isinstance(a.stats, dict) else None
            action = rev.get("action") if isinstance(rev, dict) else None
            if action in ("retracted", "revised"):
                assert isinstance(rev, dict)
                if plain:
                    self._observe(plain, now_ms, times if nows is not None else None)
                    plain, times = [], []
                fp = fingerprint(labels_of(a, self.pipeline))
                if not self.manager.known(fp):
                    continue  # never told: nothing to take back or update
                if action == "retracted":
                    self.manager.retract(fp, a.event_ts_ms, str(rev.get("why", "late data")))
                else:
                    self.manager.revise(a, now_ms if nows is None else nows[i])
            else:
                plain.append(a)
                if nows is not None:
                    times.append(nows[i])
        if plain:
            self._observe(plain, now_ms, times if nows is not None else None)

    def _observe(self, plain: list[Alert], now_ms: int | None, nows: list[int] | None) -> None:
        if self.suppressor is not None:
            kept, _ = self.suppressor.filter(plain)
            if nows is not None and len(kept) < len(plain):
                ids = {id(a) for a in kept}
                nows = [t for a, t in zip(plain, nows, strict=True) if id(a) in ids]
            plain = kept
        if plain:
            self.manager.ingest(plain, now_ms, nows=nows)

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
        if t < MAX_WATERMARK:  # the end of time is not a time to stamp anything with
            self._event_ms = max(self._event_ms, t)

    def _work(self) -> None:
        """The manager's thread: queued items in order (all that wait, in one go), the timers once a second."""
        next_tick = time.monotonic() + (self._tick_interval_s or 1.0)
        while True:
            wake = min(next_tick, self._next_persist) if self._pending() else next_tick
            try:
                first = self._queue.get(timeout=max(0.0, wake - time.monotonic()))
            except queue.Empty:
                first = None
            chunk = [] if first is None else [first]
            while first is not None and len(chunk) < _CHUNK:
                try:
                    chunk.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = _STOP in chunk
            work = [c for c in chunk if c is not _STOP]
            try:
                if work:
                    self._take(work)
                if stop:
                    return
                if self._pending() and time.monotonic() >= self._next_persist:
                    with self._lock:
                        self._persist()
                if self.suppressor is not None and time.monotonic() >= self._next_learn:
                    self._next_learn = time.monotonic() + self.suppressor.learn_every_s
                    self.suppressor.learn(self.store)
                if self._tick_interval_s is not None and time.monotonic() >= next_tick:
                    next_tick = time.monotonic() + self._tick_interval_s
                    if not self._event_clock:
                        self.tick()
                    self._tell_listeners()
            except Exception:  # noqa: BLE001 - alerting trouble must never stop the pipeline
                log.exception("alert manager failed on a batch; going on")
            finally:
                taken = sum(len(c) or 1 for c in work)
                with self._room:
                    self._queued -= taken
                    self._room.notify_all()
                for _ in chunk:
                    self._queue.task_done()

    def _pending(self) -> bool:
        m = self.manager
        return bool(m._dirty or m._revs)

    def _tell_listeners(self) -> None:
        if self.state_listeners:
            states = self.states()
            for listen in self.state_listeners:
                listen(states)
        if self.counter_listeners:
            counters = self.counters
            for listen_c in self.counter_listeners:
                listen_c(counters)

    # -- durability: checkpoints, flush, close -----------------------------------------------------

    def restore_checkpoint(self, seq: int | None) -> None:
        """The engine resumes from checkpoint ``seq`` (``None``: from the start): the manager goes back to it.

        Its state is put back as it was at that checkpoint, and what it wrote to the store after it (state
        versions, revision rows) is removed, so the replay that follows records every change once.
        """
        self._checkpointed, self._restore_seq = True, seq
        if self._started:
            with self._lock:
                self._load_state()
        else:
            self._start()

    def checkpoint(self, seq: int, keep_from: int | None = None) -> None:
        """Checkpoint ``seq`` (the sink thread, at its barrier): take in what is queued, save the state as ``seq``.

        Args:
            seq: the engine's checkpoint sequence.
            keep_from: the oldest checkpoint the engine may still restore (older state versions are pruned).
        """
        self._start()
        self._checkpointed = True
        self._queue.join()
        self.tick()
        with self._lock:
            self.manager.save_state(seq, keep_from=keep_from, extra=self._extra())
            self._since_checkpoint, self._last_seq, self._keep_from = False, seq, keep_from

    def flush(self) -> None:
        """Everything queued is taken in, the timers run, the rows are written.

        The state is saved at :meth:`close` (and, with checkpoints, at :meth:`checkpoint`).
        """
        self._start()
        self._queue.join()
        self.tick()

    def close(self) -> None:
        """Last tick and delivery, save the state, stop the manager's thread, close notifiers and the store."""
        if self._closed or not self._started:
            self._closed = True
            return
        self._queue.join()
        self._queue.put(_STOP)
        if self._thread is not None:
            self._thread.join(timeout=30)
        # the stream ended (or the run stops): groups still in their group_wait/group_interval are sent now
        self.tick(drain=True)
        with self._lock:  # what the drain told and settled may be forgotten now (kept in the store)
            self.manager.advance(self.manager.watermark_ms)
        self._save()
        self._closed = True
        self.dispatcher.close()
        self.store.close()

    def _save(self) -> None:
        """The state at close: without checkpoints, a version of its own (only the latest is kept)."""
        with self._lock:
            m = self.manager
            if not self._checkpointed:
                seq = (m.saved_seq or 0) + 1
                m.save_state(seq, keep_from=seq, extra=self._extra())
            elif not self._since_checkpoint and self._last_seq is not None:
                # nothing came in since the last checkpoint: what the drain sent belongs to it
                m.save_state(self._last_seq, keep_from=self._keep_from, extra=self._extra())
            else:  # state beyond the last checkpoint is never saved: a restart replays from the checkpoint
                m.persist()

    # -- timers ------------------------------------------------------------------------------------

    def tick(self, drain: bool = False) -> None:
        """Run the grouping timers now and deliver what they produced (``drain``: also what is still waiting)."""
        self._start()
        with self._lock:
            now = self._clock()
            notes = self.manager.drain(now, _DRAIN_MS) if drain else self.manager.tick(now)
            self._persist()
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
        from vigil.alerting.manager import Dispatcher

        policy = _policy(policy)
        if self._notifiers is None:
            _check_receivers(policy)
        self.policy = policy
        self._min_timer_ms = _min_timer(policy)
        if not self._started:
            return
        with self._lock:
            self.manager.set_policy(policy)
            old = self.dispatcher
            self.dispatcher = Dispatcher(self._make_notifiers(), store=self.store)
        old.close()

    @property
    def counters(self) -> dict[str, int]:
        """Raw alerts in, logical alerts, notifications out, what was suppressed and why, group overflow."""
        if not self._started:
            from vigil.alerting.manager import COUNTERS

            return dict.fromkeys(COUNTERS, 0)
        with self._lock:
            return dict(self.manager.counters)

    def states(self) -> dict[str, int]:
        """Logical alerts by state (firing, resolved, retracted; silenced, inhibited, acked), for metrics."""
        self._start()
        with self._lock:
            return self.manager.state_counts()

    # -- state -------------------------------------------------------------------------------------

    def _extra(self) -> dict[str, Any]:
        return {"event_ms": self._event_ms, "epoch": self._checkpointed}

    def _load_state(self) -> None:
        """The saved state: as of the restored checkpoint, else the latest (or an earlier Vigil's state file)."""
        m = self.manager
        try:
            if self._checkpointed:
                extra = self._load_checkpointed()
            else:
                extra = m.load_state(None)
                if extra is None:
                    self._load_legacy()
        except (ValueError, KeyError, TypeError, VigilError) as exc:
            log.warning("alert manager state in %s not loaded (%s): starting with no open groups", self.store_path,
                        exc)  # fmt: skip
            return
        self._event_ms = int((extra or {}).get("event_ms", self._event_ms) or 0)

    def _load_checkpointed(self) -> dict[str, Any] | None:
        m, seq = self.manager, self._restore_seq
        if seq is not None:
            extra = m.load_state(seq, rollback=True)
            if extra is None:
                log.warning("alert store %s has no alert manager state for checkpoint %d: starting from its latest",
                            self.store_path, seq)  # fmt: skip
                extra = m.load_state(None)
            return extra
        # no checkpoint: the run starts from the beginning, and so does the alert history this pipeline wrote
        if 0 in self.store.manager_seqs():
            return m.load_state(0, rollback=True)
        extra = m.load_state(None) or self._load_legacy()
        self.store.rollback_manager(-1, 2**62)  # no versions: version 0 below is the whole state, the epoch start
        m.mark_all_changed()
        m.save_state(0, extra={**(extra or {}), "event_ms": self._event_ms, "epoch": True})
        return extra

    def _load_legacy(self) -> dict[str, Any] | None:
        """The whole-state JSON file Vigil wrote beside the store before version 2 of its schema, if any."""
        try:
            text = self.state_path.read_text(encoding="utf-8")
        except (FileNotFoundError, OSError):
            return None
        self.manager.restore(json.loads(text))
        return None


def _min_timer(policy: Any) -> int:
    """The shortest time from an alert to a timer it can start (a group's wait, or its resolution)."""

    def waits(node: Any) -> Any:
        yield node.group_wait_ms
        for child in node.children:
            yield from waits(child)

    return min(min(waits(policy.tree)), policy.resolve_after_ms)


def _policy(policy: Any) -> Any:
    """An AlertPolicy from the ``alerting:`` mapping.

    ``store`` is dropped, ``type`` reads as ``kind``, and a lone receiver (or none: ``default``) becomes the
    root route's receiver.
    """
    from vigil.alerting.policy import AlertPolicy

    if policy is None:
        policy = {}
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
    route.setdefault("group_by", list(DEFAULT_GROUP_BY))
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
