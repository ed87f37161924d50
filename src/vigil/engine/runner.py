"""The embedded runtime: one process, no services, a micro-batch loop with bounded queues.

Three threads, two bounded queues::

    source thread ──[records, ≤ queue_batches]──► engine loop ──[outputs, ≤ queue_batches]──► sink thread
    (read + decode)                               (keys → slots, watermark, late split,        (alerts, late,
                                                   steps → outputs)                             dead letters)

A slow sink fills the output queue, which blocks the engine loop, which stops taking from the
input queue, which blocks the source thread: the source slows down instead of memory growing
(backpressure). A micro-batch is flushed by the source reader at ``max_rows`` rows or after
``max_delay_ms``, whichever comes first, so latency stays bounded at low rates.

The runner holds threads, queues, the loop and checkpoint orchestration only. What happens to a batch is
the steps' business (:mod:`vigil.dataflow.steps`), what they produce is built by
:mod:`vigil.dataflow.outputs`, and the optional roles of sources and sinks (pausing, committing,
transactions, watermark listeners, health) are sorted once, when the runner is built
(:mod:`vigil.dataflow.capabilities`).

Nothing is dropped without a trace: unreadable records go to the dead-letter sink with the reason,
events behind the watermark by more than the allowed lateness go to the late sink, and both are
counted in :class:`RunStats`. At the end of a finite input the watermark advances to the end of
time, so every open window is emitted and every timer fires.

A failure anywhere stops the whole run, never one thread alone: an exception of a step (on the engine
thread), of a sink or of the source (on their threads) stops the other threads, what was written is
flushed and the outputs are closed, and :meth:`EmbeddedRunner.run` re-raises the exception, as it is, on
the calling thread. An unexpected one (not a :class:`~vigil.errors.VigilError`) carries where it happened
(:func:`vigil.errors.blame`: ``step `amount_z` failed on a batch``), which the ``vigil`` command prints on
its one ``error:`` line.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from vigil.dataflow.capabilities import (
    BacklogReader,
    CommittingReader,
    HealthReporter,
    PausableReader,
    StateSizer,
    TransactionalSink,
    WatermarkListener,
    having,
)
from vigil.dataflow.outputs import late_rows, model_health_alert
from vigil.dataflow.pipeline import Pipeline
from vigil.dataflow.steps import Step
from vigil.engine.checkpointing import Barrier, Skipped, commit, open_sources, restore, take_snapshot
from vigil.engine.stats import EngineOutputs, RunStats
from vigil.errors import VigilError, blame
from vigil.eventtime.late import split_late
from vigil.eventtime.watermarks import MAX_WATERMARK, NO_WATERMARK, BoundedOutOfOrderness, MultiPartitionWatermark
from vigil.io.sinks import LazyJsonlSink
from vigil.state.checkpoint import CheckpointStore
from vigil.state.keyindex import KeyIndex
from vigil.state.ttl import expired_rows
from vigil.types import Batch

_END = object()
log = logging.getLogger("vigil.engine")


class EmbeddedRunner:
    """Run a :class:`~vigil.dataflow.pipeline.Pipeline` in this process.

    Args:
        pipeline: what to run.
        progress: called with the :class:`RunStats` about every ``progress_interval_s`` (from the engine thread).
        taps: called as ``tap(batch, keys, verdicts)`` after each batch with the on-time rows, their keys and
            every detector step's verdicts — for evaluation and live displays.
        out_dir: where default late and dead-letter files go (``<out_dir>/<pipeline>/``).
        wall_clock_ns: the wall clock (injectable for tests); used for latency and idleness only.
        default_sink: makes the default late and dead-letter sinks from a file path (default: JSON lines,
            created on first write).

    Attributes:
        metrics: an object with ``observe_step``, ``observe_checkpoint`` and ``tick`` (e.g.
            :class:`vigil.ops.metrics.PipelineMetrics`) that the loop calls, or ``None``.
        control: an object whose ``poll(runner)`` the loop calls between two batches (live reconfiguration).
    """

    def __init__(
        self,
        pipeline: Pipeline,
        *,
        progress: Callable[[RunStats], None] | None = None,
        progress_interval_s: float = 0.2,
        taps: tuple[Callable[..., None], ...] = (),
        out_dir: str = "vigil-out",
        wall_clock_ns: Callable[[], int] = time.time_ns,
        default_sink: Callable[[str], Any] | None = None,
    ) -> None:
        pipeline.validate()
        self.p = pipeline
        self.progress = progress
        self.progress_interval_s = progress_interval_s
        self.taps = taps
        self.now_ns = wall_clock_ns
        self.stats = RunStats()
        self.keys = KeyIndex(ttl_ms=pipeline.key_ttl_ms)
        et = pipeline.event_time
        self.watermarks = MultiPartitionWatermark(BoundedOutOfOrderness(et.max_delay_ms, et.idle_timeout_ms))
        self._backlog: frozenset[str] = frozenset()  # partitions with records not read yet: never idle
        self._stop = threading.Event()
        self._error: BaseException | None = None
        base = os.path.join(out_dir, pipeline.name)
        make = default_sink or LazyJsonlSink
        self.late_sink = pipeline.late_sink or make(os.path.join(base, "late.jsonl"))
        self.dead_sink = pipeline.dead_letter_sink or make(os.path.join(base, "dead_letters.jsonl"))
        q = pipeline.batching.queue_batches
        self._in: queue.Queue[Any] = queue.Queue(maxsize=q)
        self._out: queue.Queue[Any] = queue.Queue(maxsize=q)
        self._last_expire_ms = NO_WATERMARK
        self.store = (
            CheckpointStore(os.path.join(pipeline.checkpoint_dir, pipeline.name), keep=pipeline.checkpoint_keep)
            if pipeline.checkpoint_dir
            else None
        )
        self._seq = 0
        self.readers: dict[str, Any] = {}
        self.committing_readers: dict[str, CommittingReader] = {}
        self.restored_from: str | None = None
        self.metrics: Any = None
        self.control: Any = None
        self.out = EngineOutputs(self)
        # the roles each part plays, sorted once
        sinks = self.sinks()
        self.transactional_sinks = [s for s in having(sinks, TransactionalSink) if s.transactional]
        self._wm_listeners = having(pipeline.alert_sinks, WatermarkListener)
        self._healthy: dict[str, bool] = {}  # step -> was its model healthy at the last look
        self._marked_wm = NO_WATERMARK
        self._sort_steps()

    def _sort_steps(self) -> None:
        self._reporters = having(self.p.steps, HealthReporter)
        self._sizers = having(self.p.steps, StateSizer)

    # -- public surface (metrics, live control, console) ------------------------------------------

    def stop(self) -> None:
        """Ask the run to stop after the current batch (e.g. on Ctrl-C); outputs are flushed."""
        self._stop.set()

    def keys_of(self, slots: np.ndarray) -> Any:
        """The key strings of key slots (through the current key index: it is replaced on restore)."""
        return self.keys.keys_of(slots)

    def sinks(self) -> list[Any]:
        """Every output of the pipeline, each once: alerts, late, dead letters, scores, the steps' own."""
        sinks = [*self.p.alert_sinks, self.late_sink, self.dead_sink]
        if self.p.score_sink is not None:
            sinks.append(self.p.score_sink)
        for step in self.p.steps:
            sinks += step.sinks()
        return list({id(s): s for s in sinks}.values())

    def step(self, name: str) -> Step:
        """The step called ``name``."""
        for s in self.p.steps:
            if s.name == name:
                return s
        raise KeyError(name)

    def replace_step(self, name: str, new: Step) -> None:
        """Put ``new`` in place of step ``name``, carrying its state over (engine thread, between two batches).

        Live reconfiguration builds the new step from the new parameters; the state of every key moves into
        it, so nothing is forgotten.
        """
        for i, s in enumerate(self.p.steps):
            if s.name == name:
                new.restore(s.snapshot())
                self.p.steps[i] = new
                self._sort_steps()
                return
        raise KeyError(name)

    def refresh_gauges(self) -> None:
        """Keys, watermark and state bytes into :attr:`stats` (cheap; the display and metrics call it)."""
        st = self.stats
        st.keys = len(self.keys)
        st.watermark_ms = self.watermarks.watermark
        st.state_bytes = sum(s.state_bytes() for s in self._sizers)

    # -- threads ---------------------------------------------------------------------------------

    def _read(self) -> None:
        """Source thread: read every partition round-robin into the input queue."""
        try:
            readers = dict(self.readers)
            backlog = {part: r for part, r in readers.items() if isinstance(r, BacklogReader)}
            pausable = {part: r for part, r in readers.items() if isinstance(r, PausableReader)}
            b = self.p.batching
            while readers and not self._stop.is_set():
                for part, reader in list(readers.items()):
                    recs = reader.read_batch(b.max_rows, b.max_delay_ms)
                    behind = _behind(part, backlog.get(part))
                    if recs is not None and (len(recs) or recs.dead):
                        self._put_behind(pausable.get(part), (part, recs, reader.position(), behind))
                    elif reader.at_end:
                        del readers[part]
                    else:  # idle tick: lets the engine check idleness
                        self._put(self._in, (part, None, None, behind))
        except BaseException as exc:  # noqa: BLE001 - re-raised by the engine thread
            self._error = _blamed(exc, f"the source of `{self.p.name}`")
        finally:
            self._put(self._in, _END, force=True)

    def _open_sources(self) -> None:
        """Open every partition, resuming from the right checkpoint (see :func:`.checkpointing.open_sources`)."""
        loaded = open_sources(self)
        if loaded is not None:
            restore(self, loaded.state)
            self._seq = loaded.seq
            self.restored_from = str(loaded.path)
            log.info("pipeline `%s` resumes from checkpoint %s", self.p.name, loaded.path)

    def _put_behind(self, reader: PausableReader | None, item: Any) -> None:
        """Queue a batch; while the engine is behind (queue full), pause the (pausable) reader's partitions.

        The engine pulls, so at most ``queue_batches`` batches wait in memory whatever the producer's
        rate. A Kafka reader is also paused while blocked here, so its client stops prefetching too,
        and resumed (from the position after the last returned record) once the batch is taken.
        """
        try:
            self._in.put(item, timeout=0.05)
            return
        except queue.Full:
            pass
        if reader is not None:
            reader.pause()
            self.stats.source_pauses += 1
        try:
            self._put(self._in, item)
        finally:
            if reader is not None:
                reader.resume()

    def _put(self, q: queue.Queue[Any], item: Any, force: bool = False) -> None:
        while True:
            try:
                q.put(item, timeout=0.1)
                return
            except queue.Full:
                if self._stop.is_set() and not force:
                    return
                if self._error is not None and not force:
                    return

    def _write(self) -> None:
        """Sink thread: write outputs in order; commit checkpoints at their barriers; flush at the end."""
        seen: dict[int, Any] = {}
        sink: Any = None
        try:
            while True:
                item = self._out.get()
                if item is _END:
                    break
                sink = None
                if isinstance(item, Barrier):
                    t0, ok = time.perf_counter(), False
                    try:
                        commit(self, item, list(seen.values()))
                        ok = True
                    except Skipped:
                        pass
                    finally:
                        if self.metrics is not None:
                            self.metrics.observe_checkpoint(time.perf_counter() - t0, ok)
                    continue
                if isinstance(item, _Watermark):
                    sink = item.listener
                    sink.on_watermark(item.watermark_ms)
                    continue
                sink, items = item
                seen.setdefault(id(sink), sink)
                sink.write_batch(items)
        except BaseException as exc:  # noqa: BLE001 - re-raised by the engine thread (run())
            self._error = _blamed(exc, _sink_name(sink))
            while self._out.get() is not _END:  # drain so the engine never blocks on a dead sink thread
                pass
        finally:
            for sink in seen.values():
                try:
                    sink.flush()
                except BaseException as exc:  # noqa: BLE001
                    self._error = self._error or _blamed(exc, _sink_name(sink))

    def _checkpoint(self, final: bool = False) -> None:
        """Engine thread: snapshot between batches and send the barrier behind the outputs so far."""
        if self.store is None:
            return
        self._seq += 1
        self._put(self._out, Barrier(self._seq, take_snapshot(self, self._seq), final=final), force=True)

    # -- the engine loop -------------------------------------------------------------------------

    def run(self) -> RunStats:
        """Run until the source ends (or :meth:`stop`); return the counters. Re-raises a thread's error."""
        reader = threading.Thread(target=self._read, name=f"vigil-{self.p.name}-source", daemon=True)
        writer = threading.Thread(target=self._write, name=f"vigil-{self.p.name}-sinks", daemon=True)
        st = self.stats
        for step in self.p.steps:
            with _blame(step, "open"):
                step.open()
        self._open_sources()
        st.started_s = time.perf_counter()
        reader.start()
        writer.start()
        next_progress = 0.0
        interval_s = self.p.checkpoint_interval_ms / 1000
        next_checkpoint = time.perf_counter() + interval_s
        try:
            while True:
                item = self._in.get()
                if item is _END:
                    break
                part, recs, pos, self._backlog = item
                if recs is None:
                    self._on_idle()
                else:
                    self._process(part, recs)
                    st.positions[part] = pos
                st.elapsed_s = time.perf_counter() - st.started_s
                if self.progress is not None and st.elapsed_s >= next_progress:
                    next_progress = st.elapsed_s + self.progress_interval_s
                    self.refresh_gauges()
                    self.progress(st)
                if self.metrics is not None:  # gauges and self-watch, at most once a second
                    own = self.metrics.tick()
                    for sink in self.p.alert_sinks:
                        self.out.emit(sink, own)
                if self.control is not None:  # live reconfiguration (vigil apply), between two batches
                    self.control.poll(self)
                if self._error is not None:
                    break
                if self.store is not None and time.perf_counter() >= next_checkpoint:
                    self._checkpoint()
                    next_checkpoint = time.perf_counter() + interval_s
            if self._error is None and not self._stop.is_set():
                self._advance(MAX_WATERMARK)  # end of input: close every window, fire every timer
                self._mark_end()  # ... and every alert resolves in event time (a file run's alerts don't stay firing)
            if self._error is None:
                self._checkpoint(final=True)  # the final checkpoint commits everything up to here
        except BaseException:
            self._stop.set()
            raise
        finally:
            self._stop.set()
            self._put(self._out, _END, force=True)
            writer.join()
            reader.join(timeout=5)
            for sink in self.sinks():
                sink.close()
            for r in self.readers.values():
                r.close()
        st.elapsed_s = time.perf_counter() - st.started_s
        st.finished = True
        self.refresh_gauges()
        if self.progress is not None:
            self.progress(st)
        if self._error is not None:
            raise self._error
        return st

    def _on_idle(self) -> None:
        before = self.watermarks.watermark
        wm = self.watermarks.on_idle(self.now_ns() // 1_000_000, self._backlog)
        if wm > before:
            self._advance(wm)
            self._mark_watermark()

    def _process(self, part: str, recs: Any) -> None:
        st = self.stats
        st.batches += 1
        if recs.dead:
            st.dead_letters += len(recs.dead)
            self.out.emit(self.dead_sink, recs.dead)
        n = len(recs)
        if n == 0:
            return
        st.events_in += n
        if self.p.event_time.mode == "processing":
            recs.ts_ms = np.full(n, self.now_ns() // 1_000_000, np.int64)
        ts = recs.ts_ms
        slots = self.keys.slots_for(recs.keys)
        wm_before = self._watermarks(part, recs, ts)
        late = split_late(ts, wm_before, self.p.event_time.allowed_lateness_ms)
        out = self.out
        if late.any():
            idx = np.flatnonzero(late)
            out.counts.late_events += len(idx)
            out.emit(self.late_sink, late_rows("watermark", recs.keys, ts, recs.cols, idx, wm_before, recs.extra))
        expired = mid = None
        if self.keys.ttl_ms is not None:  # keys expire by event time alone, at the row (vigil.state.ttl)
            expired, mid = expired_rows(slots, ts, ~late, wm_before, self.keys.last_seen_ms, self.keys.ttl_ms)
            first = expired & ~mid & ~late
            if first.any():
                self._reset(np.unique(slots[first]))
        batch = Batch(slots, ts, recs.cols, recs.extra)
        if not late.any() and (mid is None or not mid.any()):
            self._on_time(batch, recs.keys, wm_before)  # the common case: one piece
        else:
            # cut the batch where order matters: at late rows (scored against the state the on-time rows before
            # them left) and before a row whose key expired since its earlier rows in this batch
            starts = np.flatnonzero(np.r_[True, late[1:] != late[:-1]] | (mid if mid is not None else False))
            for a, b in zip(starts.tolist(), [*starts[1:].tolist(), len(ts)], strict=True):
                piece = batch.take(slice(a, b))  # type: ignore[arg-type]
                if late[a]:
                    if self.p.event_time.score_late:
                        gone = expired[a:b] if expired is not None else np.zeros(b - a, bool)
                        for step in self.p.steps:
                            with _blame(step, "late events"):
                                step.on_late(piece, recs.keys[a:b], wm_before[a:b] - ts[a:b], out, gone)
                    continue
                if mid is not None and mid[a]:
                    self._reset(slots[a : a + 1])
                self._on_time(piece, recs.keys[a:b], wm_before[a:b])
        self._advance(self.watermarks.watermark)
        self._check_health()
        self._mark_watermark()

    def _on_time(self, batch: Batch, keys: np.ndarray, wm_rows: np.ndarray) -> None:
        """Every step on on-time rows; then the taps, with each detector step's verdicts."""
        self.stats.events += len(batch)
        verdicts: dict[str, Any] = {}
        for step in self.p.steps:
            t0 = time.perf_counter()
            with _blame(step, "a batch"):
                v = step.on_batch(batch, keys, wm_rows, self.out)
            if v is not None:
                verdicts[step.name] = v
            if self.metrics is not None:
                self.metrics.observe_step(step.name, len(batch), time.perf_counter() - t0)
        for tap in self.taps:
            tap(batch, keys, verdicts)

    def _reset(self, slots: np.ndarray) -> None:
        """Every step forgets these keys (their state expired by event time)."""
        self.stats.keys_expired += len(slots)
        for step in self.p.steps:
            with _blame(step, "expired keys"):
                step.reset_slots(slots)

    def _watermarks(self, part: str, recs: Any, ts: np.ndarray) -> np.ndarray:
        """The watermark before each row.

        A source that interleaves several partitions (Kafka) marks each row's partition in
        ``_partition``: every partition then has its own watermark, and the stream's is the minimum
        over the active ones (an idle partition stops holding it back).
        """
        now_ms = self.now_ns() // 1_000_000
        kp = recs.extra.get("_partition")
        if kp is None:
            return self.watermarks.update(part, ts, now_ms)
        kp = np.asarray(kp)
        wm = np.empty(len(ts), np.int64)
        for p in np.unique(kp).tolist():
            idx = np.flatnonzero(kp == p)
            wm[idx] = self.watermarks.update(f"{part}:{p}", ts[idx], now_ms)
        if self.p.event_time.idle_timeout_ms is not None:
            self.watermarks.on_idle(now_ms, self._backlog)
        return wm

    def _advance(self, watermark_ms: int) -> None:
        """Close windows, fire timers and expire idle keys up to the watermark."""
        for step in self.p.steps:
            with _blame(step, "the watermark"):
                step.on_watermark(watermark_ms, self.out)
        ttl = self.p.key_ttl_ms
        if ttl is not None and watermark_ms != MAX_WATERMARK and watermark_ms - self._last_expire_ms >= ttl // 4:
            self._last_expire_ms = watermark_ms
            freed = self.keys.expire(watermark_ms)
            if len(freed):
                self.stats.keys_expired += len(freed)
                for step in self.p.steps:
                    with _blame(step, "expired keys"):
                        step.reset_slots(freed)

    def _mark_watermark(self) -> None:
        wm = self.watermarks.watermark
        if self._wm_listeners and wm > self._marked_wm and wm != MAX_WATERMARK:
            self._marked_wm = wm
            for listener in self._wm_listeners:
                self._put(self._out, _Watermark(listener, wm), force=True)

    def _mark_end(self) -> None:
        """The end of a finite input: watermark listeners get the end of time, behind everything before it."""
        for listener in self._wm_listeners:
            self._put(self._out, _Watermark(listener, MAX_WATERMARK), force=True)

    def _check_health(self) -> None:
        """Raise a "model unhealthy" alert when a step's served model falls back, and a notice when it recovers."""
        for step in self._reporters:
            h = step.health()
            if h is None:
                continue
            name = step.name  # type: ignore[attr-defined]
            healthy = bool(h["healthy"])
            was = self._healthy.get(name, True)
            self._healthy[name] = healthy
            if healthy == was:
                continue
            self.stats.model_fallbacks += int(not healthy)
            alert = model_health_alert(self.p.name, name, h, self.watermarks.watermark, self.now_ns() // 1_000_000)
            self.out.alerts(name, [alert], fired=False)


@contextmanager
def _blame(step: Any, doing: str) -> Iterator[None]:
    """An unexpected exception of ``step`` says which step and what it was doing (see :func:`vigil.errors.blame`)."""
    try:
        yield
    except VigilError:
        raise
    except Exception as exc:
        blame(exc, f"step `{step.name}` failed on {doing}")
        raise


def _blamed(exc: BaseException, what: str) -> BaseException:
    """An unexpected exception of a sink or the source, saying which (Vigil's own errors say it already)."""
    return exc if isinstance(exc, VigilError) or not isinstance(exc, Exception) else blame(exc, f"{what} failed")


def _sink_name(sink: Any) -> str:
    """``output JsonlSink (path)``: a sink, for an error message."""
    where = getattr(sink, "path", None) or getattr(sink, "name", None)
    return "an output" if sink is None else f"output {type(sink).__name__}" + (f" ({where})" if where else "")


def _behind(part: str, reader: BacklogReader | None) -> frozenset[str]:
    """The watermark partitions of ``reader`` that have records waiting (it is never idle while it has some)."""
    return frozenset(f"{part}:{p}" for p in reader.behind()) if reader is not None else frozenset()


@dataclass(frozen=True, slots=True)
class _Watermark:
    """The watermark for a listening sink, travelling through the output queue behind what it follows."""

    listener: Any
    watermark_ms: int


__all__ = ["EmbeddedRunner", "RunStats"]
