"""The Python half of the Flink job: one micro-batch of one key bucket through the pipeline's steps.

The Flink keyed function (``job.py``) hands each batch (a bucket's records of one event-time window, or one
record behind the watermark) to :class:`TaskRunner`, with the bucket's keyed state as a :class:`KeyedStore`,
and gets back the output records and when to wake the bucket up (an event-time timer). Nothing here imports
pyflink: the same code runs under a fake store in the tests.

**Steps and state.** Each bucket has a *twin* of every step (:meth:`~vigil.dataflow.capabilities.SlicedStep.twin`:
same settings, no keys, a loaded model shared) over the bucket's keys. A key's state lives in the bucket's
Flink ``MapState`` as one record of bytes: its last on-time event time and next watermark due (a fixed
16-byte header) and, per step, the step's :meth:`~vigil.dataflow.capabilities.SlicedStep.export_slots` slice in
the snapshot codec's versioned envelope, tagged with the step's :meth:`~vigil.dataflow.steps.Step.state_key`
(a changed step starts the key fresh). The twins keep the keys they have seen in memory between batches —
state is read from Flink only the first time a key is met after a (re)start — and every key a batch changed
is written back before the batch returns, so a checkpoint always holds every batch processed before it.

**The same semantics as the embedded runtime.** Per batch, exactly what :mod:`vigil.engine.runner` does per
micro-batch: the late split (a record behind its watermark by more than the allowed lateness goes to the late
output and, with ``score_late``, is scored without being learned), key expiry by event time at the row
(:mod:`vigil.state.ttl`: the batch is cut where a key's state expires), every step's ``on_batch`` /
``on_late``, then ``on_watermark``; alerts and every other output are built by :mod:`vigil.dataflow.outputs`.
The watermark a record met is the one the Kafka source had when it read it (Flink's, per source subtask).
What differs: a key's events are scored in event-time order (batch windows in order, records sorted by
event time within one), where the embedded runtime scores them in arrival order — the same whenever a key's
events arrive in order, as they do from a producer that keys records by entity.

**Waking up.** A step that closes windows says when each key is next due
(:class:`~vigil.dataflow.capabilities.WatermarkDue`); the bucket asks for a timer at the earliest due, loads
those keys if needed, advances the watermark over them and writes them back. Keys idle for ``keys.ttl`` of
event time are removed from the state by a sweep every ``ttl / 4`` of event time (as the embedded runtime
frees their slots; the row rule has already made them start fresh).
"""

from __future__ import annotations

import logging
import struct
import time
from collections.abc import Iterable
from typing import Any, Protocol

import numpy as np
import orjson

from vigil.dataflow.capabilities import HealthReporter, SlicedStep, WatermarkDue
from vigil.dataflow.outputs import Outputs, late_rows, model_health_alert
from vigil.dataflow.steps import DetectStep, params_hash
from vigil.eventtime.late import split_late
from vigil.eventtime.watermarks import MAX_WATERMARK, NO_WATERMARK
from vigil.integrations.flink.batches import BatchDecoder
from vigil.integrations.flink.spec import JobSpec, SinkRef, build_steps
from vigil.io.sinks import _JSON_OPTS, _as_dict, _json_default
from vigil.state import codec
from vigil.state.ttl import expired_rows
from vigil.types import Alert, Batch

log = logging.getLogger("vigil.flink")

NEVER = int(np.iinfo(np.int64).max)
_HEAD = struct.Struct("<4sqq")
_MAGIC = b"VGK1"
_KIND = "flink/key"


class KeyedStore(Protocol):
    """The current bucket's keyed state, one record of bytes per key (a Flink ``MapState[str, bytes]``)."""

    def get(self, key: str) -> bytes | None:
        """The key's record, or ``None``."""
        ...

    def put(self, key: str, blob: bytes) -> None:
        """Store the key's record."""
        ...

    def remove(self, key: str) -> None:
        """Forget the key."""
        ...

    def items(self) -> Iterable[tuple[str, bytes]]:
        """Every key of the bucket with its record."""
        ...


def encode_record(last_seen_ms: int, due_ms: int, steps: dict[str, list[Any]]) -> bytes:
    """A key's record: the 16-byte header, then ``{step: [state key hash, slice]}`` in the codec's envelope.

    Examples:
        >>> blob = encode_record(1_000, NEVER, {"z": ["ab12", {"n": 3}]})
        >>> record_header(blob), decode_record(blob)[2]
        ((1000, 9223372036854775807), {'z': ['ab12', {'n': 3}]})
    """
    return _HEAD.pack(_MAGIC, int(last_seen_ms), int(due_ms)) + codec.encode(_KIND, 1, {}, steps)


def record_header(blob: bytes) -> tuple[int, int]:
    """``(last on-time event ms, next due watermark)`` of a record, without decoding its slices."""
    magic, last, due = _HEAD.unpack_from(blob)
    if magic != _MAGIC:
        raise ValueError(f"not a Vigil key record (magic {magic!r})")
    return int(last), int(due)


def decode_record(blob: bytes) -> tuple[int, int, dict[str, list[Any]]]:
    """``(last seen, due, slices by step)`` of a record."""
    last, due = record_header(blob)
    return last, due, codec.decode(blob[_HEAD.size:], kind=_KIND, version=1)["state"]


def _vigil(flink_wm: int) -> int:
    """Flink's watermark ("no more events with ts <= W") as Vigil's ("no more with ts < W"): one more."""
    w = int(flink_wm)
    return w if w in (NO_WATERMARK, MAX_WATERMARK) else w + 1


def _vigil_array(flink_wm: np.ndarray) -> np.ndarray:
    w = np.asarray(flink_wm, np.int64)
    return np.where((w == NO_WATERMARK) | (w == MAX_WATERMARK), w, w + 1)


def _flink_time(vigil_wm: int) -> int:
    """The Flink timer that fires when Vigil's watermark reaches ``vigil_wm`` (NEVER stays NEVER)."""
    return vigil_wm if vigil_wm in (NEVER, NO_WATERMARK) else vigil_wm - 1


class _Marker:
    """An output of the job that is not a step's sink (the alert stream, the late output)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<{self.name}>"


ALERTS, LATE = _Marker("alerts"), _Marker("late")


class FlinkOutputs(Outputs):
    """Outputs of one bucket: alerts, late rows and step outputs become records for the job's Kafka tables."""

    def __init__(self, runner: TaskRunner, bucket: Bucket) -> None:
        super().__init__(runner.job.name, id_field=runner.job.id_field, keys_of=bucket.keys_of, now_ns=time.time_ns,
                         alert_sinks=[ALERTS], late_sink=LATE)  # fmt: skip
        self.runner = runner

    def emit(self, sink: Any, items: list[Any]) -> None:
        """Serialize ``items`` for the Kafka table(s) of ``sink`` (dropped when it has none)."""
        targets = self.runner.targets.get(id(sink), ())
        if not targets or not items:
            if items and sink is not None:
                self.runner.dropped += len(items)
            return
        dumps = orjson.dumps
        recs = []
        for item in items:
            d = item if type(item) is dict else _as_dict(item)
            value = dumps(d, default=_json_default, option=_JSON_OPTS).decode()
            key = d.get("key")
            alert_id = d.get("id") if isinstance(item, Alert) else None
            recs.append((None if key is None else str(key), value, alert_id, None, None, None, None))
        for t in targets:
            self.runner.records.extend((t, r) for r in recs)


class Bucket:
    """One bucket's twins of the steps, its keys (key → slot) and their expiry and due times."""

    def __init__(self, runner: TaskRunner, bucket: int) -> None:
        self.id = bucket
        self.steps = [s.twin() for s in runner.template]
        self.out = FlinkOutputs(runner, self)
        self.slot_of: dict[str, int] = {}
        self.key_list: list[str | None] = []
        self.free: list[int] = []
        self.last_seen = np.zeros(64, np.int64)
        self.due = np.full(64, NEVER, np.int64)
        self.started = False
        self.last_sweep = NO_WATERMARK
        self.wake_at = NEVER

    def keys_of(self, slots: np.ndarray) -> np.ndarray:
        """The keys in these slots."""
        keys = self.key_list
        return np.array([keys[s] for s in np.asarray(slots).tolist()], object)

    def _new_slot(self, key: str) -> int:
        if self.free:
            s = self.free.pop()
            self.key_list[s] = key
        else:
            s = len(self.key_list)
            self.key_list.append(key)
            if s >= len(self.last_seen):
                cap = 2 * len(self.last_seen)
                self.last_seen = np.concatenate([self.last_seen, np.zeros(cap - len(self.last_seen), np.int64)])
                self.due = np.concatenate([self.due, np.full(cap - len(self.due), NEVER, np.int64)])
        self.slot_of[key] = s
        return s

    def release(self, slots: np.ndarray) -> None:
        """Forget these keys entirely (their state is gone from Flink too)."""
        for s in slots.tolist():
            key = self.key_list[s]
            if key is not None:
                del self.slot_of[key]
                self.key_list[s] = None
                self.free.append(s)
        self.last_seen[slots] = 0
        self.due[slots] = NEVER


class TaskRunner:
    """The steps of one pipeline over the buckets one Flink subtask owns (module docstring).

    Args:
        job: the pipeline as a Flink job (:func:`~vigil.integrations.flink.spec.load_job`).
        roles: the job's output tables, in order (``alerts``, ``late``, ``dead_letters``, ``step:<name>``):
            the index of a role is the table an output record goes to.
    """

    def __init__(self, job: JobSpec, roles: list[str]) -> None:
        self.job = job
        self.template = build_steps(job)
        for step in self.template:
            caveat = step.slice_caveat() if isinstance(step, SlicedStep) else "it keeps no per-key slices"
            if caveat is not None:
                raise ValueError(f"step `{step.name}` can't run on Flink (state per key): {caveat}")
        for step in self.template:
            step.open()
        self.state_keys = {s.name: params_hash(s.state_key()) for s in self.template}
        self.eager = [s.name for s in self.template if not isinstance(s, WatermarkDue)]
        self.watermark_work = [s.name for s in self.template if not isinstance(s, DetectStep)]
        self.decoder = BatchDecoder.for_job(job)
        self.et = job.event_time
        self.ttl = job.key_ttl_ms
        self.targets: dict[int, list[int]] = {}
        for i, role in enumerate(roles):
            if role == "alerts":
                self.targets.setdefault(id(ALERTS), []).append(i)
            elif role == "late":
                self.targets.setdefault(id(LATE), []).append(i)
        for step in self.template:
            for sink in step.sinks():
                if isinstance(sink, SinkRef) and f"step:{step.name}" in roles:
                    self.targets.setdefault(id(sink), []).append(roles.index(f"step:{step.name}"))
        self.dead_target = roles.index("dead_letters") if "dead_letters" in roles else None
        self.buckets: dict[int, Bucket] = {}
        self.records: list[tuple[int, tuple[Any, ...]]] = []
        self.dropped = 0
        self.healthy: dict[str, bool] = {}
        self.stats = {"events": 0, "late": 0, "dead_letters": 0, "keys_expired": 0, "batches": 0, "alerts": 0}

    def close(self) -> None:
        """Close the steps (the task is going away)."""
        for step in self.template:
            close = getattr(step, "close", None)
            if close is not None:
                close()

    # -- entry points (the Flink function calls these) ----------------------------------------------------

    def on_batch(self, bucket: int, behind: bool, t: int, body: str, store: KeyedStore,
                 watermark: int) -> tuple[list[tuple[int, tuple[Any, ...]]], int]:  # fmt: skip
        """One micro-batch of a bucket.

        ``t`` is the batch window's last ms, or for a record behind the watermark the watermark it met
        (watermarks in Flink's convention, one less than Vigil's). Returns the output records ``(table, row)``
        and the Flink event time at which to wake the bucket (``NEVER``: no need).
        """
        b = self._bucket(bucket, store)
        self.stats["batches"] += 1
        dec = self.decoder.decode(body)
        if dec.dead:
            self._dead_letters(dec.dead)
        touched = np.empty(0, np.int64)
        if len(dec.recs):
            dec.wm = _vigil_array(dec.wm)
            touched = self._rows(b, dec, store)
        return self._finish(b, store, max(_vigil(watermark), _vigil(t)), touched)

    def on_timer(self, bucket: int, t: int, store: KeyedStore,
                 watermark: int) -> tuple[list[tuple[int, tuple[Any, ...]]], int]:  # fmt: skip
        """An event-time timer of the bucket fired at ``t``: close what is due, sweep expired keys."""
        b = self._bucket(bucket, store)
        wm_now = max(_vigil(watermark), _vigil(t))
        if wm_now < b.wake_at and not self._sweep_due(b, wm_now):
            return self._take(), self._wake(b, wm_now)
        return self._finish(b, store, wm_now, np.empty(0, np.int64))

    # -- the batch ---------------------------------------------------------------------------------------

    def _bucket(self, bucket: int, store: KeyedStore) -> Bucket:
        b = self.buckets.get(bucket)
        if b is None:
            b = self.buckets[bucket] = Bucket(self, bucket)
        if not b.started:
            b.started = True
            self._load_due(b, store)
        return b

    def _load_due(self, b: Bucket, store: KeyedStore) -> None:
        """After a (re)start: load the keys that have watermark work pending (open windows) into the twins."""
        if not self.watermark_work:
            return
        due_keys = []
        for key, blob in store.items():
            _, due = record_header(blob)
            if due != NEVER or self.eager:
                due_keys.append(key)
        if due_keys:
            self._slots(b, np.array(due_keys, object), store)
            b.wake_at = int(b.due[: len(b.key_list)].min(initial=NEVER))

    def _slots(self, b: Bucket, keys: np.ndarray, store: KeyedStore) -> np.ndarray:
        """Slots of ``keys`` in the bucket's twins, loading keys met for the first time from the store."""
        slot_of = b.slot_of
        slots = np.fromiter((slot_of.get(k, -1) for k in keys.tolist()), np.int64, len(keys))
        if (slots >= 0).all():
            return slots.astype(np.int32)
        miss = list(dict.fromkeys(keys[slots < 0].tolist()))
        new = np.array([b._new_slot(k) for k in miss], np.int64)
        per_step: dict[str, list[Any]] = {s.name: [] for s in b.steps}
        for k, s in zip(miss, new.tolist(), strict=True):
            blob = store.get(k)
            if blob is None:
                b.last_seen[s], b.due[s] = 0, NEVER
                for name in per_step:
                    per_step[name].append(None)
                continue
            last, due, slices = decode_record(blob)
            b.last_seen[s], b.due[s] = last, due
            for name in per_step:
                tagged = slices.get(name)
                per_step[name].append(tagged[1] if tagged is not None and tagged[0] == self.state_keys[name] else None)
        for step in b.steps:
            step.import_slots(new.astype(np.int32), per_step[step.name])
        slots = np.fromiter((slot_of[k] for k in keys.tolist()), np.int64, len(keys))
        return slots.astype(np.int32)

    def _rows(self, b: Bucket, dec: Any, store: KeyedStore) -> np.ndarray:
        """The engine's per-batch logic over one decoded batch (see :meth:`EmbeddedRunner._process`)."""
        recs, wm_before = dec.recs, dec.wm
        keys, ts = recs.keys, recs.ts_ms
        slots = self._slots(b, keys, store)
        out, et = b.out, self.et
        self.stats["events"] += len(ts)
        late = split_late(ts, wm_before, et.allowed_lateness_ms)
        if late.any():
            idx = np.flatnonzero(late)
            out.counts.late_events += len(idx)
            self.stats["late"] += len(idx)
            out.emit(out.late_sink, late_rows("watermark", keys, ts, recs.cols, idx, wm_before, recs.extra))
        expired = mid = None
        if self.ttl is not None:  # keys expire by event time alone, at the row (vigil.state.ttl)
            expired, mid = expired_rows(slots, ts, ~late, wm_before, b.last_seen, self.ttl)
            first = expired & ~mid & ~late
            if first.any():
                self._reset(b, np.unique(slots[first]))
        batch = Batch(slots, ts, recs.cols, recs.extra)
        if not late.any() and (mid is None or not mid.any()):
            self._on_time(b, batch, keys, wm_before)
        else:  # cut where order matters, as the embedded runtime does
            starts = np.flatnonzero(np.r_[True, late[1:] != late[:-1]] | (mid if mid is not None else False))
            for a, z in zip(starts.tolist(), [*starts[1:].tolist(), len(ts)], strict=True):
                piece = batch.take(slice(a, z))  # type: ignore[arg-type]
                if late[a]:
                    if et.score_late:
                        gone = expired[a:z] if expired is not None else np.zeros(z - a, bool)
                        for step in b.steps:
                            step.on_late(piece, keys[a:z], wm_before[a:z] - ts[a:z], out, gone)
                    continue
                if mid is not None and mid[a]:
                    self._reset(b, slots[a : a + 1])
                self._on_time(b, piece, keys[a:z], wm_before[a:z])
        return np.unique(slots).astype(np.int64)

    def _on_time(self, b: Bucket, batch: Batch, keys: np.ndarray, wm_rows: np.ndarray) -> None:
        for step in b.steps:
            step.on_batch(batch, keys, wm_rows, b.out)

    def _reset(self, b: Bucket, slots: np.ndarray) -> None:
        self.stats["keys_expired"] += len(slots)
        for step in b.steps:
            step.reset_slots(slots)

    # -- after every batch or timer: advance, sweep, write back ---------------------------------------------

    def _finish(self, b: Bucket, store: KeyedStore, wm_now: int, touched: np.ndarray) -> tuple[list[Any], int]:
        n = len(b.key_list)
        live = np.array([k is not None for k in b.key_list], bool)
        if self.eager:
            due_now = np.flatnonzero(live)
        else:
            due_now = np.flatnonzero(live & (b.due[:n] <= wm_now))
        for step in b.steps:
            step.on_watermark(wm_now, b.out)
        self._check_health(b, wm_now)
        changed = np.union1d(touched, due_now).astype(np.int64)
        if self.ttl is not None and self._sweep_due(b, wm_now):
            changed = self._sweep(b, store, wm_now, changed)
        if len(changed):
            self._save(b, store, changed)
        live = np.array([k is not None for k in b.key_list], bool)
        n = len(b.key_list)
        b.wake_at = int(b.due[:n][live].min(initial=NEVER)) if n else NEVER
        if self.eager and live.any():
            b.wake_at = wm_now + 1
        return self._take(), self._wake(b, wm_now)

    def _wake(self, b: Bucket, wm_now: int) -> int:
        """The Flink timer to ask for: ``NEVER`` when nothing is due after ``wm_now``.

        A timer at or before the current watermark would fire at once, again and again (at the end of input a
        sweep never comes due).
        """
        due = min(b.wake_at, self._next_sweep(b))
        return NEVER if due <= wm_now or wm_now == MAX_WATERMARK else _flink_time(due)

    def _save(self, b: Bucket, store: KeyedStore, slots: np.ndarray) -> None:
        s32 = slots.astype(np.int32)
        per = {step.name: step.export_slots(s32) for step in b.steps}
        due = np.full(len(slots), NEVER, np.int64)
        for step in b.steps:
            if isinstance(step, WatermarkDue):
                due = np.minimum(due, np.asarray(step.due_ms(s32), np.int64))
        b.due[slots] = due
        tags = self.state_keys
        for i, s in enumerate(slots.tolist()):
            key = b.key_list[s]
            if key is None:
                continue
            slices = {name: [tags[name], per[name][i]] for name in per}
            store.put(key, encode_record(int(b.last_seen[s]), int(due[i]), slices))

    def _sweep_due(self, b: Bucket, wm: int) -> bool:
        return self.ttl is not None and wm != MAX_WATERMARK and wm - b.last_sweep >= max(self.ttl // 4, 1)

    def _next_sweep(self, b: Bucket) -> int:
        if self.ttl is None or b.last_sweep == NO_WATERMARK:
            return NEVER
        return b.last_sweep + max(self.ttl // 4, 1)

    def _sweep(self, b: Bucket, store: KeyedStore, wm: int, changed: np.ndarray) -> np.ndarray:
        """Remove the keys idle for more than the TTL (event time) from the state.

        As the embedded runtime frees their slots; they would start fresh anyway (the row rule).
        """
        assert self.ttl is not None
        b.last_sweep = wm
        gone = []
        for key, blob in list(store.items()):
            last, _ = record_header(blob)
            s = b.slot_of.get(key)
            if s is not None:
                last = int(b.last_seen[s])
            if last > 0 and last < wm - self.ttl:
                gone.append(key)
        for key in gone:
            store.remove(key)
        slots = np.array([b.slot_of[k] for k in gone if k in b.slot_of], np.int64)
        if len(slots):
            self.stats["keys_expired"] += len(slots)
            for step in b.steps:
                step.reset_slots(slots.astype(np.int32))
            b.release(slots)
            changed = np.setdiff1d(changed, slots)
        return changed

    # -- outputs -------------------------------------------------------------------------------------------

    def _take(self) -> list[tuple[int, tuple[Any, ...]]]:
        recs, self.records = self.records, []
        return recs

    def _dead_letters(self, dead: list[Any]) -> None:
        self.stats["dead_letters"] += len(dead)
        if self.dead_target is None:
            return
        topic = self.job.source.topic
        for d, key, value in dead:
            pos = d.position
            self.records.append((self.dead_target, (key, value, d.reason, d.message, topic, str(pos["partition"]),
                                                    str(pos["offset"]))))  # fmt: skip

    def _check_health(self, b: Bucket, wm: int) -> None:
        """A "model unhealthy" alert when a step's served model falls back, and a notice when it serves again."""
        for step in b.steps:
            if not isinstance(step, HealthReporter):
                continue
            h = step.health()
            if h is None:
                continue
            name = str(getattr(step, "name", ""))
            healthy = bool(h["healthy"])
            was = self.healthy.get(name, True)
            self.healthy[name] = healthy
            if healthy != was:
                alert = model_health_alert(self.job.name, name, h, wm, time.time_ns() // 1_000_000)
                b.out.alerts(name, [alert], fired=False)


__all__ = ["ALERTS", "LATE", "Bucket", "FlinkOutputs", "KeyedStore", "NEVER", "TaskRunner", "decode_record",
           "encode_record", "record_header"]
