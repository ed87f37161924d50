"""Consistent checkpoints of the embedded engine, and their commit (at-least-once or exactly-once).

The engine loop takes a snapshot *between* two batches — every step's state (detectors, windows, operators
and their timers), the key index, the watermarks, and the source positions that the processed batches end
at — so state and positions always agree. It hands the snapshot to the sink
thread as a *barrier* behind the outputs that came before it, and carries on. The sink thread, on
reaching the barrier:

1. flushes every sink (the outputs before the barrier are durable, or inside the open transaction); a sink
   with state of its own (:class:`~vigil.dataflow.capabilities.CheckpointedSink`: the alert manager) saves
   it keyed by the checkpoint's sequence, and on restart goes back to the checkpoint the engine restores,
2. writes the checkpoint file atomically (:mod:`vigil.state.checkpoint`),
3. commits: in **exactly-once** mode, sends the source offsets to the open Kafka transaction and
   commits it, so the outputs and the offsets become visible together; in **at-least-once** mode,
   commits the offsets to the consumer group (outputs were sent at once).

A crash between 2 and 3 leaves a checkpoint whose offsets were never committed. On restart in
exactly-once mode the engine therefore restores the newest checkpoint whose positions equal the
group's committed offsets (older ones are kept for exactly this), and in at-least-once mode the
newest readable one. A corrupt or truncated checkpoint is reported and passed over, never loaded.

A step whose parameters changed since the checkpoint starts fresh (its old state would be misread);
the change is logged.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from vigil.dataflow.capabilities import CheckpointedSink, CommittingReader
from vigil.errors import CheckpointError
from vigil.state.checkpoint import CheckpointStore, Loaded
from vigil.state.keyindex import KeyIndex

if TYPE_CHECKING:
    from vigil.engine.runner import EmbeddedRunner

log = logging.getLogger("vigil.checkpoint")


@dataclass
class Barrier:
    """A checkpoint travelling through the output queue behind the outputs it covers."""

    seq: int
    state: dict[str, Any]
    final: bool = False  # the end-of-run checkpoint: failing to write it fails the run


def take_snapshot(r: EmbeddedRunner, seq: int) -> dict[str, Any]:
    """The engine's whole state, consistent with the positions of the batches processed so far."""
    st = r.stats
    return {
        "pipeline": r.p.name,
        "seq": seq,
        "created_ms": time.time_ns() // 1_000_000,
        "positions": dict(st.positions),
        "watermarks": r.watermarks.snapshot(),
        "keys": r.keys.snapshot(),
        "last_expire_ms": r._last_expire_ms,
        "steps": {step.name: {"key": step.state_key(), "state": step.snapshot()} for step in r.p.steps},
        "counters": {
            "events_in": st.events_in, "events": st.events, "dead_letters": st.dead_letters,
            "late_events": st.late_events, "alerts": st.alerts, "windows_emitted": st.windows_emitted,
        },  # fmt: skip
    }


def restore(r: EmbeddedRunner, state: dict[str, Any]) -> None:
    """Load a checkpoint's state into a freshly built runner.

    A step whose :meth:`~vigil.dataflow.steps.Step.state_key` differs from the checkpoint's (another kind,
    state version or shaping parameter) starts fresh, with a warning: its old state would be misread.
    """
    if state.get("pipeline") != r.p.name:
        raise CheckpointError(
            f"checkpoint belongs to pipeline {state.get('pipeline')!r}, not {r.p.name!r}. "
            "Operator action: point the pipeline at its own checkpoint directory."
        )
    r.keys = KeyIndex.from_snapshot(state["keys"])
    r.keys.ttl_ms = r.p.key_ttl_ms
    r.watermarks.restore(state["watermarks"])
    r._last_expire_ms = int(state["last_expire_ms"])
    saved_steps = state.get("steps", {})
    for step in r.p.steps:
        saved = saved_steps.get(step.name)
        if saved is None:
            log.warning("step `%s` is new since the checkpoint: it starts with empty state", step.name)
        elif not isinstance(saved, dict) or saved.get("key") != step.state_key():
            got = saved.get("key") if isinstance(saved, dict) else None
            log.warning("step `%s` changed since the checkpoint (%s -> %s): it starts fresh", step.name, got,
                        step.state_key())  # fmt: skip
        else:
            step.restore(saved["state"])
    c = state["counters"]
    st = r.stats
    st.events_in, st.events, st.dead_letters = c["events_in"], c["events"], c["dead_letters"]
    st.late_events, st.alerts, st.windows_emitted = c["late_events"], c["alerts"], c["windows_emitted"]
    st.positions = dict(state["positions"])


def choose(store: CheckpointStore, committed: dict[str, Any] | None) -> Loaded | None:
    """The checkpoint to resume from (see the module docstring), logging every file passed over.

    Args:
        store: the pipeline's checkpoints.
        committed: in exactly-once mode, the source positions the consumer group has committed
            (``None`` entries for partitions without a committed offset); ``None`` otherwise.
    """

    def accept(state: dict[str, Any]) -> str | None:
        if committed is None:
            return None
        for part, pos in committed.items():
            if _norm(state["positions"].get(part)) != _norm(pos):
                return f"its positions {state['positions'].get(part)} were never committed (committed: {pos})"
        return None

    loaded = store.load_latest(accept)
    if loaded is None:
        return None
    for path, reason in loaded.skipped:
        log.warning("passing over checkpoint %s: %s", path, reason)
    return loaded if loaded.seq >= 0 else None


def _norm(pos: Any) -> Any:
    """Positions compare as plain data (Kafka partitions may come back as str or int keys)."""
    if isinstance(pos, dict):
        return {int(k) if str(k).isdigit() else k: v for k, v in pos.items()}
    return pos


# -- the two ends of a checkpoint's life: opening the sources to resume, and committing -----------------------


def open_sources(r: EmbeddedRunner) -> Loaded | None:
    """Open every partition of the pipeline's source, positioned to resume; return the checkpoint to restore.

    Without checkpoints, from the start (or the group's committed offsets). At-least-once: from the newest
    readable checkpoint's positions. Exactly-once: a crashed predecessor's transaction is fenced first (it would
    keep the group's committed offsets unstable), then the checkpoint whose positions equal the group's committed
    offsets is the one to restore.

    Raises:
        CheckpointError: exactly-once, and the group has committed offsets no checkpoint matches.
    """
    src = r.p.source_
    parts = src.partitions()
    loaded: Loaded | None = None
    if r.store is None:
        r.readers = {part: src.open(part) for part in parts}
    elif r.p.delivery == "exactly-once":
        for sink in r.transactional_sinks:
            sink.fence()
        r.readers = {part: src.open(part) for part in parts}
        committed = {part: rd.committed_offsets() if isinstance(rd, CommittingReader) else None
                     for part, rd in r.readers.items()}  # fmt: skip
        loaded = choose(r.store, committed)
        if loaded is None and any(_has_offsets(c) for c in committed.values()):
            raise CheckpointError(
                f"pipeline `{r.p.name}`: the consumer group has committed offsets {committed} but no "
                f"checkpoint in {r.store.dir} matches them, so the state that goes with them is lost. "
                "Operator action: restore the checkpoint directory, or reprocess from scratch with a new "
                "consumer group (or reset this group's offsets)."
            )
    else:
        loaded = choose(r.store, None)
        resume = loaded.state["positions"] if loaded else {}
        r.readers = {part: src.open(part, resume=resume.get(part)) for part in parts}
    r.committing_readers = {part: rd for part, rd in r.readers.items() if isinstance(rd, CommittingReader)}
    if r.store is not None:  # sinks with state of their own go back to the same checkpoint
        for sink in r.sinks():
            if isinstance(sink, CheckpointedSink):
                sink.restore_checkpoint(loaded.seq if loaded is not None else None)
    # name every partition up front, so one that has sent nothing yet holds the watermark back (a Kafka
    # reader reports its partitions in its position); otherwise the first partition read would set the
    # watermark alone and the others' events, however on time, would all be late
    for part, reader in r.readers.items():
        pos = reader.position()
        for name in ([f"{part}:{p}" for p in pos] if isinstance(pos, dict) else [part]):
            r.watermarks.tracker(name)
    return loaded


class Skipped(Exception):
    """A checkpoint that could not be written (counted and logged); the run goes on."""


def commit(r: EmbeddedRunner, barrier: Barrier, seen: list[Any]) -> None:
    """At a barrier (sink thread): flush outputs, store the checkpoint, commit the positions.

    Raises:
        Skipped: the checkpoint file could not be written (not the final one): counted; the next one covers it.
        CheckpointError: the final checkpoint could not be written, or exactly-once has outputs on two producers.
    """
    t0 = time.perf_counter()
    assert r.store is not None
    retained = sorted({s for s, _ in r.store.list()} | {barrier.seq})[-r.store.keep:]
    for sink in {id(s): s for s in [*seen, *r.sinks()]}.values():
        # the durability point; a failing flush aborts the checkpoint. A sink with state of its own keys it by
        # the checkpoint, and may drop what no checkpoint still kept needs
        if isinstance(sink, CheckpointedSink):
            sink.checkpoint(barrier.seq, retained[0])
        else:
            sink.flush()
    try:
        r.store.write(barrier.seq, barrier.state)
    except OSError as exc:
        if barrier.final:
            raise CheckpointError(f"the final checkpoint could not be written to {r.store.dir}: "
                                  f"{exc.strerror or exc}") from exc  # fmt: skip
        # the offsets stay uncommitted (and, exactly-once, the outputs stay in the open transaction), so the next
        # checkpoint that is written covers them. Counted and watched (self-watch).
        r.stats.checkpoint_failures += 1
        log.error("pipeline `%s`: checkpoint %d not written to %s (%s); the next one will cover it. Operator "
                  "action: check the disk (space, permissions) of the checkpoint directory", r.p.name,
                  barrier.seq, r.store.dir, exc.strerror or exc)  # fmt: skip
        raise Skipped from exc
    positions = barrier.state["positions"]
    if r.p.delivery == "exactly-once":
        if len(r.transactional_sinks) > 1:
            raise CheckpointError("exactly-once needs all Kafka outputs on one transactional producer")
        for sink in r.transactional_sinks:  # the positions commit inside the same transaction as the outputs
            sink.commit_checkpoint(positions, r.readers)
    else:
        for part, reader in r.committing_readers.items():
            reader.flush_dead_letters()  # dead letters are durable before their offsets commit
            if positions.get(part) is not None:
                reader.commit(positions[part])
    r.stats.checkpoints += 1
    r.stats.last_checkpoint_s = time.perf_counter() - t0


def _has_offsets(pos: Any) -> bool:
    if isinstance(pos, dict):
        return any(v is not None and v >= 0 for v in pos.values())
    return pos is not None
