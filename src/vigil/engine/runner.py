"""The embedded runtime: one process, no services, a micro-batch loop with bounded queues.

Three threads, two bounded queues::

    source thread ──[records, ≤ queue_batches]──► engine loop ──[outputs, ≤ queue_batches]──► sink thread
    (read + decode)                               (keys → slots, watermark, late split,        (alerts, late,
                                                   detectors, windows, operators → alerts)      dead letters)

A slow sink fills the output queue, which blocks the engine loop, which stops taking from the
input queue, which blocks the source thread: the source slows down instead of memory growing
(backpressure). A micro-batch is flushed by the source reader at ``max_rows`` rows or after
``max_delay_ms``, whichever comes first, so latency stays bounded at low rates.

Nothing is dropped without a trace: unreadable records go to the dead-letter sink with the reason,
events behind the watermark by more than the allowed lateness go to the late sink, and both are
counted in :class:`RunStats`. At the end of a finite input the watermark advances to the end of
time, so every open window is emitted and every timer fires.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vigil.alerting.alert import Alert, alert_id
from vigil.engine.checkpointing import Barrier, choose, restore, take_snapshot
from vigil.engine.operators import KeyedOperatorHost
from vigil.engine.pipeline import ApplyStep, DetectStep, Pipeline, ProcessStep, WindowStep
from vigil.errors import CheckpointError, ConfigError
from vigil.eventtime.late import split_late
from vigil.eventtime.watermarks import MAX_WATERMARK, NO_WATERMARK, BoundedOutOfOrderness, MultiPartitionWatermark
from vigil.eventtime.windows import WindowAggregator
from vigil.state.checkpoint import CheckpointStore
from vigil.state.keyindex import KeyIndex
from vigil.types import Batch

_END = object()
log = logging.getLogger("vigil.engine")


@dataclass
class RunStats:
    """Counters of a run (what the progress display and the summary show)."""

    events_in: int = 0
    events: int = 0
    dead_letters: int = 0
    late_events: int = 0
    alerts: int = 0
    batches: int = 0
    flagged: dict[str, int] = field(default_factory=dict)
    fired: dict[str, int] = field(default_factory=dict)
    windows_emitted: int = 0
    watermark_ms: int = NO_WATERMARK
    keys: int = 0
    keys_expired: int = 0
    state_bytes: int = 0
    started_s: float = field(default_factory=time.perf_counter)
    elapsed_s: float = 0.0
    finished: bool = False
    positions: dict[str, Any] = field(default_factory=dict)
    checkpoints: int = 0
    last_checkpoint_s: float = 0.0
    source_pauses: int = 0
    model_fallbacks: int = 0
    checkpoint_failures: int = 0

    @property
    def events_per_s(self) -> float:
        """Events read per second of wall time."""
        return self.events_in / self.elapsed_s if self.elapsed_s > 0 else 0.0


class EmbeddedRunner:
    """Run a :class:`~vigil.engine.pipeline.Pipeline` in this process.

    Args:
        pipeline: what to run.
        progress: called with the :class:`RunStats` about every ``progress_interval_s`` (from the engine thread).
        taps: called as ``tap(batch, keys, verdicts)`` after each batch with the on-time rows, their keys and
            every detector step's verdicts — for evaluation and live displays.
        out_dir: where default late and dead-letter files go (``<out_dir>/<pipeline>/``).
        wall_clock_ns: the wall clock (injectable for tests); used for latency and idleness only.
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
        self._windows: dict[str, WindowAggregator] = {}
        self._hosts: dict[str, KeyedOperatorHost] = {}
        for step in pipeline.steps:
            if isinstance(step, WindowStep):
                self._windows[step.name] = WindowAggregator(step.assigner, step.allowed_lateness_ms, step.emit)
            elif isinstance(step, ProcessStep):
                self._hosts[step.name] = KeyedOperatorHost(step.operator)
            elif isinstance(step, ApplyStep):
                if callable(getattr(step.op, "bind", None)):
                    step.op.bind(lambda slots: self.keys.keys_of(slots))
                if pipeline.checkpoint_dir and not callable(getattr(step.op, "snapshot", None)):
                    raise ConfigError("can't be checkpointed: its operator has no snapshot()/restore()",
                                      step=step.name, field="op", value=type(step.op).__name__)  # fmt: skip
        self._healthy: dict[str, bool] = {}  # step -> was its model healthy at the last look
        # alert sinks that resolve alerts in event time get the watermark behind the alerts it follows
        self._wm_sinks = [s for s in pipeline.alert_sinks if getattr(s, "wants_watermarks", False)]
        self._marked_wm = NO_WATERMARK
        base = os.path.join(out_dir, pipeline.name)
        self.late_sink = pipeline.late_sink or _FileOnFirstWrite(os.path.join(base, "late.jsonl"))
        self.dead_sink = pipeline.dead_letter_sink or _FileOnFirstWrite(os.path.join(base, "dead_letters.jsonl"))
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
        self._readers: dict[str, Any] = {}
        self.restored_from: str | None = None
        self.metrics: Any = None  # a vigil.ops.metrics.PipelineMetrics sets itself here (per-batch hooks)
        self.control: Any = None  # a vigil.control.LiveControl applies new config versions between batches

    def stop(self) -> None:
        """Ask the run to stop after the current batch (e.g. on Ctrl-C); outputs are flushed."""
        self._stop.set()

    # -- threads ---------------------------------------------------------------------------------

    def _read(self) -> None:
        """Source thread: read every partition round-robin into the input queue."""
        try:
            readers = dict(self._readers)
            b = self.p.batching
            while readers and not self._stop.is_set():
                for part, reader in list(readers.items()):
                    recs = reader.read_batch(b.max_rows, b.max_delay_ms)
                    if recs is not None and (len(recs) or recs.dead):
                        self._put_behind(reader, (part, recs, reader.position(), _backlog(part, reader)))
                    elif reader.at_end:
                        del readers[part]
                    else:  # idle tick: lets the engine check idleness
                        self._put(self._in, (part, None, None, _backlog(part, reader)))
        except BaseException as exc:  # noqa: BLE001 - re-raised by the engine thread
            self._error = exc
        finally:
            self._put(self._in, _END, force=True)

    def _declare_partitions(self) -> None:
        """Name every partition up front, so one that has sent nothing yet holds the watermark back.

        A reader over several Kafka partitions reports them in its position (``{partition: offset}``);
        otherwise the first partition read would set the watermark alone and the others' events,
        however on time, would all be late.
        """
        for part, reader in self._readers.items():
            pos = reader.position()
            if isinstance(pos, dict):
                for p in pos:
                    self.watermarks.tracker(f"{part}:{p}")
            else:
                self.watermarks.tracker(part)

    def _open_sources(self) -> None:
        """Open every partition, resuming from the checkpoint chosen as described in checkpointing."""
        src = self.p.source_
        parts = src.partitions()
        if self.store is None:
            self._readers = {part: src.open(part) for part in parts}
            self._declare_partitions()
            return
        if self.p.delivery == "exactly-once":
            # fence a crashed predecessor first: its open transaction (with offsets) would keep the group's
            # committed offsets unstable, and reading them would time out
            for sink in {id(s): s for s in map(_producer_of, self._all_sinks())}.values():
                if getattr(sink, "transactional", False) and callable(getattr(sink, "fence", None)):
                    sink.fence()
            # the group's committed offsets say which checkpoint's transaction committed
            self._readers = {part: src.open(part) for part in parts}
            committed = {part: _committed(r) for part, r in self._readers.items()}
            loaded = choose(self.store, committed)
            if loaded is None and any(_has_offsets(c) for c in committed.values()):
                raise CheckpointError(
                    f"pipeline `{self.p.name}`: the consumer group has committed offsets {committed} but no "
                    f"checkpoint in {self.store.dir} matches them, so the state that goes with them is lost. "
                    "Operator action: restore the checkpoint directory, or reprocess from scratch with a new "
                    "consumer group (or reset this group's offsets)."
                )
        else:
            loaded = choose(self.store, None)
            resume = loaded.state["positions"] if loaded else {}
            self._readers = {part: src.open(part, resume=resume.get(part)) for part in parts}
        self._declare_partitions()
        if loaded is not None:
            restore(self, loaded.state)
            self._seq = loaded.seq
            self.restored_from = str(loaded.path)
            log.info("pipeline `%s` resumes from checkpoint %s", self.p.name, loaded.path)

    def _put_behind(self, reader: Any, item: Any) -> None:
        """Queue a batch; while the engine is behind (queue full), pause the reader's partitions.

        The engine pulls, so at most ``queue_batches`` batches wait in memory whatever the producer's
        rate. A Kafka reader is also paused while blocked here, so its client stops prefetching too,
        and resumed (from the position after the last returned record) once the batch is taken.
        """
        try:
            self._in.put(item, timeout=0.05)
            return
        except queue.Full:
            pass
        pause = getattr(reader, "pause", None)
        if pause is not None:
            pause()
            self.stats.source_pauses += 1
        try:
            self._put(self._in, item)
        finally:
            if pause is not None:
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
        try:
            while True:
                item = self._out.get()
                if item is _END:
                    break
                if isinstance(item, Barrier):
                    t0, ok = time.perf_counter(), False
                    try:
                        self._commit(item, list(seen.values()))
                        ok = True
                    except _Skipped:
                        pass
                    finally:
                        if self.metrics is not None:
                            self.metrics.observe_checkpoint(time.perf_counter() - t0, ok)
                    continue
                sink, items = item
                seen.setdefault(id(sink), sink)
                sink.write_batch(items)
        except BaseException as exc:  # noqa: BLE001
            self._error = exc
            while self._out.get() is not _END:  # drain so the engine never blocks on a dead sink thread
                pass
        finally:
            for sink in seen.values():
                try:
                    sink.flush()
                except BaseException as exc:  # noqa: BLE001
                    self._error = self._error or exc

    def _all_sinks(self) -> list[Any]:
        sinks = [*self.p.alert_sinks, self.late_sink, self.dead_sink]
        if self.p.score_sink is not None:
            sinks.append(self.p.score_sink)
        sinks += [s.sink for s in self.p.steps
                  if isinstance(s, (WindowStep, ProcessStep, ApplyStep)) and s.sink is not None]  # fmt: skip
        return list({id(s): s for s in sinks}.values())

    def _commit(self, barrier: Barrier, seen: list[Any]) -> None:
        """At a barrier (sink thread): flush outputs, store the checkpoint, commit the offsets."""
        t0 = time.perf_counter()
        for sink in {id(s): s for s in [*seen, *self._all_sinks()]}.values():
            sink.flush()  # the durability point; a failing flush aborts the checkpoint
        assert self.store is not None
        try:
            self.store.write(barrier.seq, barrier.state)
        except OSError as exc:
            if barrier.final:
                raise CheckpointError(f"the final checkpoint could not be written to {self.store.dir}: "
                                      f"{exc.strerror or exc}") from exc  # fmt: skip
            # Skipped, not fatal: the offsets stay uncommitted (and, exactly-once, the outputs stay in the open
            # transaction), so the next checkpoint that is written covers them. Counted and watched (self-watch).
            self.stats.checkpoint_failures += 1
            log.error("pipeline `%s`: checkpoint %d not written to %s (%s); the next one will cover it. Operator "
                      "action: check the disk (space, permissions) of the checkpoint directory", self.p.name,
                      barrier.seq, self.store.dir, exc.strerror or exc)  # fmt: skip
            raise _Skipped from exc
        positions = barrier.state["positions"]
        if self.p.delivery == "exactly-once":
            tx = {id(s): s for s in map(_producer_of, self._all_sinks()) if getattr(s, "transactional", False)}
            if len(tx) > 1:
                raise CheckpointError("exactly-once needs all Kafka outputs on one transactional producer")
            for sink in tx.values():
                # the source offsets commit inside the same transaction as the outputs
                kafka = [(r, positions.get(part)) for part, r in self._readers.items() if hasattr(r, "topic")]
                if kafka:
                    for reader, pos in kafka:
                        sink.commit(pos, reader.topic, reader.consumer_group_metadata())
                else:
                    sink.commit()
        else:
            for part, reader in self._readers.items():
                if hasattr(reader, "flush_dead_letters"):
                    reader.flush_dead_letters()  # dead letters are durable before their offsets commit
                if hasattr(reader, "commit") and positions.get(part) is not None:
                    reader.commit(positions[part])
        self.stats.checkpoints += 1
        self.stats.last_checkpoint_s = time.perf_counter() - t0

    def _checkpoint(self, final: bool = False) -> None:
        """Engine thread: snapshot between batches and send the barrier behind the outputs so far."""
        if self.store is None:
            return
        self._seq += 1
        self._put(self._out, Barrier(self._seq, take_snapshot(self, self._seq), final=final), force=True)

    def _emit(self, sink: Any, items: list[Any]) -> None:
        if items and sink is not None:
            self._put(self._out, (sink, items), force=True)

    # -- the engine loop -------------------------------------------------------------------------

    def run(self) -> RunStats:
        """Run until the source ends (or :meth:`stop`); return the counters. Re-raises a thread's error."""
        reader = threading.Thread(target=self._read, name=f"vigil-{self.p.name}-source", daemon=True)
        writer = threading.Thread(target=self._write, name=f"vigil-{self.p.name}-sinks", daemon=True)
        st = self.stats
        self._warm_up()
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
                    self._refresh_gauges()
                    self.progress(st)
                if self.metrics is not None:  # gauges and self-watch, at most once a second
                    own = self.metrics.tick()
                    for sink in self.p.alert_sinks:
                        self._emit(sink, own)
                if self.control is not None:  # live reconfiguration (vigil apply), between two batches
                    self.control.poll(self)
                if self._error is not None:
                    break
                if self.store is not None and time.perf_counter() >= next_checkpoint:
                    self._checkpoint()
                    next_checkpoint = time.perf_counter() + interval_s
            if self._error is None and not self._stop.is_set():
                self._advance(MAX_WATERMARK)  # end of input: close every window, fire every timer
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
            for sink in self._all_sinks():
                sink.close()
            for r in self._readers.values():
                r.close()
        st.elapsed_s = time.perf_counter() - st.started_s
        st.finished = True
        self._refresh_gauges()
        if self.progress is not None:
            self.progress(st)
        if self._error is not None:
            raise self._error
        return st

    def _warm_up(self) -> None:
        """Run every detector on an empty batch: compiled kernels load now, not on the first real events."""
        empty = (np.empty(0, np.int32), np.empty(0, np.int64))
        for step in self.p.steps:
            if isinstance(step, DetectStep):
                step.detector.process_many(*empty, {f: np.empty(0, np.float64) for f in step.detector.fields})

    def _refresh_gauges(self) -> None:
        st = self.stats
        st.keys = len(self.keys)
        st.watermark_ms = self.watermarks.watermark
        total = 0
        for step in self.p.steps:
            if isinstance(step, DetectStep):
                total += _nbytes(step.detector)
        st.state_bytes = total

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
            self._emit(self.dead_sink, recs.dead)
        n = len(recs)
        if n == 0:
            return
        st.events_in += n
        if self.p.event_time.mode == "processing":
            recs.ts_ms = np.full(n, self.now_ns() // 1_000_000, np.int64)
        ts = recs.ts_ms
        slots = self.keys.slots_for(recs.keys, ts)
        wm_before = self._watermarks(part, recs, ts)
        late = split_late(ts, wm_before, self.p.event_time.allowed_lateness_ms)
        if late.any():
            idx = np.flatnonzero(late)
            st.late_events += len(idx)
            self._emit(self.late_sink, self._late_records(recs, idx, wm_before, "watermark"))
            if self.p.event_time.score_late:
                self._score_late(recs, idx, slots, wm_before)
            keep = ~late
            batch = Batch(slots[keep], ts[keep], {k: v[keep] for k, v in recs.cols.items()},
                          {k: v[keep] for k, v in recs.extra.items()})  # fmt: skip
            keys = recs.keys[keep]
            wm_rows = wm_before[keep]
        else:
            batch = Batch(slots, ts, recs.cols, recs.extra)
            keys = recs.keys
            wm_rows = wm_before
        st.events += len(batch)
        verdicts: dict[str, Any] = {}
        for step in self.p.steps:
            t0 = time.perf_counter()
            if isinstance(step, DetectStep):
                v = step.detector.process_many(batch.slots, batch.ts_ms, batch.cols)
                verdicts[step.name] = v
                self._alerts(step, batch, keys, v)
                if self.p.score_sink is not None:
                    self._emit(self.p.score_sink, self._score_rows(step, batch, keys, v))
            elif isinstance(step, WindowStep):
                agg = self._windows[step.name]
                split = agg.add(batch.slots, batch.ts_ms, batch.cols[step.field], wm_rows)
                if len(split.late):
                    st.late_events += len(split.late)
                    self._emit(self.late_sink, self._late_records_batch(batch, keys, split.late, wm_rows, step.name))
                if split.updated is not None:
                    self._emit_windows(step, split.updated)
            elif isinstance(step, ProcessStep):
                host = self._hosts[step.name]
                out = host.process(keys.tolist(), batch.ts_ms.tolist(),
                                   {k: v.tolist() for k, v in batch.cols.items()}, wm_rows.tolist())  # fmt: skip
                self._route(step, out)
            elif isinstance(step, ApplyStep):
                late_rows = step.op.process_batch(batch.slots, batch.ts_ms, batch.cols, batch.extra, wm_rows)
                if len(late_rows):
                    st.late_events += len(late_rows)
                    self._emit(self.late_sink, self._late_records_batch(batch, keys, late_rows, wm_rows, step.name))
            if self.metrics is not None:
                self.metrics.observe_step(step.name, len(batch), time.perf_counter() - t0)
        for tap in self.taps:
            tap(batch, keys, verdicts)
        self._advance(self.watermarks.watermark)
        self._check_health()
        self._mark_watermark()

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
            if isinstance(step, WindowStep):
                self._emit_windows(step, self._windows[step.name].advance(watermark_ms))
            elif isinstance(step, ProcessStep):
                self._route(step, self._hosts[step.name].advance(watermark_ms))
            elif isinstance(step, ApplyStep):
                self._route(step, step.op.advance(watermark_ms))
        ttl = self.p.key_ttl_ms
        if ttl is not None and watermark_ms != MAX_WATERMARK and watermark_ms - self._last_expire_ms >= ttl // 4:
            self._last_expire_ms = watermark_ms
            freed = self.keys.expire(watermark_ms)
            if len(freed):
                self.stats.keys_expired += len(freed)
                for step in self.p.steps:
                    if isinstance(step, DetectStep):
                        step.detector.reset_slots(freed)
                for agg in self._windows.values():
                    agg.reset_slots(freed)
                for step in self.p.steps:
                    if isinstance(step, ApplyStep) and callable(getattr(step.op, "reset_slots", None)):
                        step.op.reset_slots(freed)

    def _score_late(self, recs: Any, idx: np.ndarray, slots: np.ndarray, wm_before: np.ndarray) -> None:
        """Late events, scored by every detector step against a copy of its state (nothing learned).

        The rows that fire become alerts raised late (``stats["revision"]``).
        """
        late = Batch(slots[idx], recs.ts_ms[idx], {k: v[idx] for k, v in recs.cols.items()},
                     {k: v[idx] for k, v in recs.extra.items()})  # fmt: skip
        keys = recs.keys[idx]
        behind = (wm_before[idx] - recs.ts_ms[idx]).tolist()
        for step in self.p.steps:
            if not isinstance(step, DetectStep) or any(f not in late.cols for f in step.detector.fields):
                continue
            det = step.detector
            twin = type(det).from_snapshot(det.params(), det.snapshot())
            v = twin.process_many(late.slots, late.ts_ms, late.cols)
            self._alerts(step, late, keys, v, late_behind_ms=behind)

    def _mark_watermark(self) -> None:
        wm = self.watermarks.watermark
        if self._wm_sinks and wm > self._marked_wm and wm != MAX_WATERMARK:
            self._marked_wm = wm
            from vigil.alerting.runtime import WatermarkMark

            for sink in self._wm_sinks:
                self._emit(sink, [WatermarkMark(wm)])

    def _check_health(self) -> None:
        """Raise a "model unhealthy" alert when a step's served model falls back, and a notice when it recovers.

        A step reports through ``health()`` (``{healthy, version, reason, since}``, or ``None``): a
        :class:`~vigil.models.serving.RegistryModelDetector`, or an operator serving one.
        """
        for step in self.p.steps:
            obj = step.detector if isinstance(step, DetectStep) else getattr(step, "op", None)
            health = getattr(obj, "health", None)
            if health is None or not callable(health):
                continue
            h = health()
            if h is None:
                continue
            healthy = bool(h["healthy"])
            was = self._healthy.get(step.name, True)
            self._healthy[step.name] = healthy
            if healthy == was:
                continue
            self.stats.model_fallbacks += int(not healthy)
            key = f"{self.p.name}/{step.name}"
            now_ms = self.now_ns() // 1_000_000
            since = h.get("since")
            what = "unhealthy" if not healthy else "healthy again"
            event = f"{what}@{int(since * 1000) if isinstance(since, int | float) else now_ms}"
            msg = (f"model of step `{step.name}` is unhealthy: {h.get('reason')}; falling back to the statistical "
                   "detectors until a servable version is promoted (`vigil models list/promote/rollback`)"
                   if not healthy else f"model of step `{step.name}` is served again ({h.get('version')})")  # fmt: skip
            alert = Alert(id=alert_id(self.p.name, "model_health", key, event), key=key,
                          event_id=event, detector="model_health", score=float(not healthy),
                          threshold=0.5, event_ts_ms=max(self.watermarks.watermark, 0), detect_ts_ms=now_ms,
                          stats={"step": step.name, **{k: h.get(k) for k in ("healthy", "version", "reason")}},
                          severity="critical" if not healthy else "info", message=msg)  # fmt: skip
            self._route(step, [alert], fired=False)

    def _route(self, step: Any, out: list[Any], fired: bool = True) -> None:
        if not out:
            return
        alerts = [o for o in out if isinstance(o, Alert)]
        other = [o for o in out if not isinstance(o, Alert)]
        if alerts:
            self.stats.alerts += len(alerts)
            if fired:
                self.stats.fired[step.name] = self.stats.fired.get(step.name, 0) + len(alerts)
            for sink in self.p.alert_sinks:
                self._emit(sink, alerts)
        self._emit(step.sink, other)

    def _emit_windows(self, step: WindowStep, res: Any) -> None:
        n = len(res)
        if not n:
            return
        self.stats.windows_emitted += n
        keys = self.keys.keys_of(res.slot)
        rows = [
            {"step": step.name, "key": keys[i], "start_ms": s, "end_ms": e, "count": c, "sum": su, "mean": m,
             "std": sd, "min": lo, "max": hi}
            for i, (s, e, c, su, m, sd, lo, hi) in enumerate(zip(
                res.start_ms.tolist(), res.end_ms.tolist(), res.count.tolist(), res.sum.tolist(),
                res.mean.tolist(), res.std.tolist(), res.min.tolist(), res.max.tolist(), strict=True))
        ]  # fmt: skip
        self._emit(step.sink, rows)

    def _alerts(self, step: DetectStep, batch: Batch, keys: np.ndarray, v: Any,
                late_behind_ms: list[int] | None = None) -> None:  # fmt: skip
        fire = np.flatnonzero(v.fire)
        flagged = int(v.flag.sum())
        if flagged and late_behind_ms is None:
            self.stats.flagged[step.name] = self.stats.flagged.get(step.name, 0) + flagged
        if not len(fire):
            return
        now_ns = self.now_ns()
        ids = self._event_ids(batch, fire)
        emit_ns = batch.extra.get("emit_ns")
        latency = ((now_ns - emit_ns[fire].astype(np.int64)) / 1e6).tolist() if emit_ns is not None else None
        stat_cols = {k: a[fire].tolist() for k, a in v.stats.items()}
        scores = v.score[fire].tolist()
        ts = batch.ts_ms[fire].tolist()
        det = step.detector
        out = []
        for j, i in enumerate(fire.tolist()):
            key = str(keys[i])
            stats = {k: c[j] for k, c in stat_cols.items()}
            stats["calibrated"] = float(v.calibrated[i])
            message = det.describe(stats)
            if late_behind_ms is not None:
                why = (f"late event ({late_behind_ms[i]} ms behind the watermark), scored against the key's current "
                       "state, not learned")  # fmt: skip
                stats["revision"] = {"action": "raised_late", "why": why}
                message = f"raised late: {message}"
            out.append(Alert(
                id=alert_id(self.p.name, step.name, key, ids[j]), key=key, event_id=ids[j], detector=step.name,
                score=scores[j], threshold=det.threshold, event_ts_ms=ts[j], detect_ts_ms=now_ns // 1_000_000,
                latency_ms=None if latency is None else latency[j], stats=stats, event_ids=[ids[j]],
                severity=step.severity, message=message,
            ))  # fmt: skip
        self.stats.alerts += len(out)
        self.stats.fired[step.name] = self.stats.fired.get(step.name, 0) + len(out)
        for sink in self.p.alert_sinks:
            self._emit(sink, out)

    def _score_rows(self, step: DetectStep, batch: Batch, keys: np.ndarray, v: Any) -> list[dict[str, Any]]:
        ids = self._event_ids(batch, np.arange(len(batch)))
        return [
            {"step": step.name, "key": str(k), "ts_ms": t, "event_id": i, "score": sc, "calibrated": c, "flag": f,
             "ready": r}
            for k, t, i, sc, c, f, r in zip(keys.tolist(), batch.ts_ms.tolist(), ids, v.score.tolist(),
                                            v.calibrated.tolist(), v.flag.tolist(), v.ready.tolist(), strict=True)
        ]  # fmt: skip

    def _event_ids(self, batch: Batch, rows: np.ndarray) -> list[str]:
        col = batch.extra.get(self.p.id_field) if self.p.id_field else None
        if col is None:
            col = batch.extra.get("id")
        if col is not None:
            return [str(x) for x in col[rows].tolist()]
        return [f"{self.p.name}@{ts}" for ts in batch.ts_ms[rows].tolist()]

    def _late_records(self, recs: Any, idx: np.ndarray, wm_before: np.ndarray, step: str) -> list[dict[str, Any]]:
        out = []
        for i in idx.tolist():
            row: dict[str, Any] = {
                "step": step, "key": str(recs.keys[i]), "ts_ms": int(recs.ts_ms[i]),
                "watermark_ms": int(wm_before[i]), "behind_ms": int(wm_before[i] - recs.ts_ms[i]),
            }  # fmt: skip
            row.update({k: float(v[i]) for k, v in recs.cols.items()})
            row.update({k: _plain(v[i]) for k, v in recs.extra.items()})
            out.append(row)
        return out

    def _late_records_batch(
        self, batch: Batch, keys: np.ndarray, idx: np.ndarray, wm_rows: np.ndarray, step: str
    ) -> list[dict[str, Any]]:
        out = []
        for i in idx.tolist():
            row: dict[str, Any] = {"step": step, "key": str(keys[i]), "ts_ms": int(batch.ts_ms[i]),
                                   "watermark_ms": int(wm_rows[i])}  # fmt: skip
            row.update({k: float(v[i]) for k, v in batch.cols.items()})
            out.append(row)
        return out


class _FileOnFirstWrite:
    """A JSON-lines sink whose file is created only when something is written (no empty files)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._sink: Any = None

    def write_batch(self, items: list[Any]) -> None:
        if self._sink is None:
            from vigil.io.sinks import JsonlSink

            os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
            self._sink = JsonlSink(self.path)
        self._sink.write_batch(items)

    def flush(self) -> None:
        if self._sink is not None:
            self._sink.flush()

    def close(self) -> None:
        if self._sink is not None:
            self._sink.close()


def _backlog(part: str, reader: Any) -> frozenset[str]:
    """The watermark partitions of ``reader`` that have records waiting (a reader says so with ``behind()``)."""
    behind = getattr(reader, "behind", None)
    return frozenset(f"{part}:{p}" for p in behind()) if behind is not None else frozenset()


class _Skipped(Exception):
    """A checkpoint that could not be written (counted and logged); the run goes on."""


def _committed(reader: Any) -> Any:
    """A reader's committed position (Kafka consumer group offsets), or None if it has no such notion."""
    fn = getattr(reader, "committed_offsets", None)
    return fn() if fn is not None else None


def _producer_of(sink: Any) -> Any:
    """The transactional producer behind a sink (a topic view shares its parent's)."""
    return getattr(sink, "parent", sink)


def _has_offsets(pos: Any) -> bool:
    if isinstance(pos, dict):
        return any(v is not None and v >= 0 for v in pos.values())
    return pos is not None


def _plain(x: Any) -> Any:
    return x.item() if isinstance(x, np.generic) else x


def _nbytes(obj: Any) -> int:
    total = 0
    for v in vars(obj).values():
        if isinstance(v, np.ndarray):
            total += v.nbytes
        elif hasattr(v, "nbytes") and isinstance(getattr(type(v), "nbytes", None), property):
            total += int(v.nbytes)
    return total
