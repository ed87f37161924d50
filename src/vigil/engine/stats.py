"""A run's counters (:class:`RunStats`), and the embedded runtime's :class:`~vigil.dataflow.outputs.Outputs`."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from vigil.dataflow.outputs import Outputs
from vigil.eventtime.watermarks import NO_WATERMARK

if TYPE_CHECKING:
    from vigil.engine.runner import EmbeddedRunner


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
    unscored: dict[str, int] = field(default_factory=dict)  # per step: rows it couldn't score (log of a value <= 0)
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


class EngineOutputs(Outputs):
    """Outputs of the embedded runtime: queued for the sink thread, counted in the run's statistics."""

    def __init__(self, runner: EmbeddedRunner) -> None:
        p = runner.p
        self._runner = runner
        super().__init__(p.name, id_field=p.id_field, keys_of=runner.keys_of, now_ns=runner.now_ns,
                         score_sink=p.score_sink, alert_sinks=p.alert_sinks, late_sink=runner.late_sink,
                         counts=runner.stats)  # fmt: skip

    def emit(self, sink: Any, items: list[Any]) -> None:
        """Queue ``items`` for ``sink`` on the sink thread."""
        if items and sink is not None:
            self._runner._put(self._runner._out, (sink, items), force=True)
