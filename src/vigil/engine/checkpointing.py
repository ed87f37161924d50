"""Consistent checkpoints of the embedded engine, and their commit (at-least-once or exactly-once).

The engine loop takes a snapshot *between* two batches — every key's detector and window state, the
key index, the watermarks, the per-event operators' state and timers, and the source positions that
the processed batches end at — so state and positions always agree. It hands the snapshot to the sink
thread as a *barrier* behind the outputs that came before it, and carries on. The sink thread, on
reaching the barrier:

1. flushes every sink (the outputs before the barrier are durable, or inside the open transaction),
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

from vigil.errors import CheckpointError
from vigil.eventtime.windows import WindowAggregator
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
    from vigil.engine.pipeline import ApplyStep, DetectStep

    steps = {}
    for step in r.p.steps:
        if isinstance(step, DetectStep):
            det = step.detector
            steps[step.name] = {"kind": det.kind, "v": det.state_version, "params": det.params(),
                                "state": det.snapshot()}  # fmt: skip
    st = r.stats
    return {
        "pipeline": r.p.name,
        "seq": seq,
        "created_ms": time.time_ns() // 1_000_000,
        "positions": dict(st.positions),
        "watermarks": r.watermarks.snapshot(),
        "keys": r.keys.snapshot(),
        "last_expire_ms": r._last_expire_ms,
        "steps": steps,
        "windows": {name: agg.snapshot() for name, agg in r._windows.items()},
        "operators": {name: host.snapshot() for name, host in r._hosts.items()},
        "applied": {s.name: {"params": s.op.params() if hasattr(s.op, "params") else None, "state": s.op.snapshot()}
                    for s in r.p.steps if isinstance(s, ApplyStep)},  # fmt: skip
        "counters": {
            "events_in": st.events_in, "events": st.events, "dead_letters": st.dead_letters,
            "late_events": st.late_events, "alerts": st.alerts, "windows_emitted": st.windows_emitted,
        },  # fmt: skip
    }


def restore(r: EmbeddedRunner, state: dict[str, Any]) -> None:
    """Load a checkpoint's state into a freshly built runner."""
    from vigil.engine.pipeline import ApplyStep, DetectStep

    if state.get("pipeline") != r.p.name:
        raise CheckpointError(
            f"checkpoint belongs to pipeline {state.get('pipeline')!r}, not {r.p.name!r}. "
            "Operator action: point the pipeline at its own checkpoint directory."
        )
    r.keys = KeyIndex.from_snapshot(state["keys"])
    r.keys.ttl_ms = r.p.key_ttl_ms
    r.watermarks.restore(state["watermarks"])
    r._last_expire_ms = int(state["last_expire_ms"])
    for step in r.p.steps:
        if not isinstance(step, DetectStep):
            continue
        saved = state["steps"].get(step.name)
        det = step.detector
        if saved is None:
            log.warning("step `%s` is new since the checkpoint: it starts with empty state", step.name)
            continue
        if saved["kind"] != det.kind or saved["v"] != det.state_version or saved["params"] != det.params():
            log.warning("step `%s` changed since the checkpoint (%s v%s %s -> %s v%s %s): it starts fresh",
                        step.name, saved["kind"], saved["v"], saved["params"], det.kind, det.state_version,
                        det.params())  # fmt: skip
            continue
        step.detector = type(det).from_snapshot(saved["params"], saved["state"])
    for name, snap in state.get("windows", {}).items():
        if name in r._windows:
            r._windows[name] = WindowAggregator.from_snapshot(snap)
    for name, snap in state.get("operators", {}).items():
        if name in r._hosts:
            r._hosts[name].restore(snap)
    applied = state.get("applied", {})
    for step in r.p.steps:
        if isinstance(step, ApplyStep) and step.name in applied:
            params = step.op.params() if hasattr(step.op, "params") else None
            if applied[step.name]["params"] != params:
                log.warning("step `%s` changed since the checkpoint (%s -> %s): it starts fresh", step.name,
                            applied[step.name]["params"], params)  # fmt: skip
            else:
                step.op.restore(applied[step.name]["state"])
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
