"""The ``every_nth`` step kind: an alert on every n-th event of a key (a toy, but a complete app).

Everything an app provides lives here: the step (runtime-neutral, vectorized over key slots), its spec model,
builder, live-change rule and the fields it reads. Importing this module registers it — the one registry line.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict

from vigil.config.registry import register_step
from vigil.dataflow.kinds import BuildContext, LiveChange, StepKind
from vigil.dataflow.outputs import Outputs, make_alert
from vigil.types import Batch, BoolArray, Int32Array, Int64Array


class EveryNth:
    """Counts each key's events; the n-th, 2n-th, ... of a key raises an alert."""

    kind: ClassVar[str] = "every_nth"

    def __init__(self, name: str, n: int) -> None:
        self.name, self.n = name, n
        self.count = np.zeros(0, np.int64)

    def open(self) -> None:
        """Nothing to load."""

    def on_batch(self, batch: Batch, keys: np.ndarray, wm_rows: Int64Array, out: Outputs) -> None:
        """Count, in arrival order, and alert on multiples of n."""
        if len(batch) and batch.slots.max() >= len(self.count):
            self.count = np.concatenate([self.count, np.zeros(int(batch.slots.max()) + 1 - len(self.count), np.int64)])
        alerts = []
        for i, slot in enumerate(batch.slots.tolist()):  # a toy: a real app vectorizes this
            self.count[slot] += 1
            if self.count[slot] % self.n == 0:
                event = f"{keys[i]}#{self.count[slot]}"
                alerts.append(make_alert(out.pipeline, self.name, str(keys[i]), event, score=float(self.count[slot]),
                                         threshold=float(self.n), event_ts_ms=int(batch.ts_ms[i]),
                                         detect_ts_ms=int(batch.ts_ms[i])))  # fmt: skip
        out.alerts(self.name, alerts)

    def on_late(self, late: Batch, keys: np.ndarray, behind_ms: Int64Array, out: Outputs,
                expired: BoolArray) -> None:
        """Late events are not counted."""

    def on_watermark(self, watermark_ms: int, out: Outputs) -> None:
        """Nothing waits for the watermark."""

    def reset_slots(self, slots: Int32Array) -> None:
        """Expired keys start from zero."""
        self.count[slots[slots < len(self.count)]] = 0

    def snapshot(self) -> dict[str, Any]:
        """The counts."""
        return {"count": self.count.copy()}

    def restore(self, state: dict[str, Any]) -> None:
        """Reload the counts."""
        self.count = np.asarray(state["count"], np.int64)

    def state_key(self) -> str:
        """Counts don't depend on n."""
        return "every_nth/v1"

    def sinks(self) -> list[Any]:
        """Alerts only."""
        return []


class EveryNthSpec(BaseModel):
    """``every_nth: N``."""

    model_config = ConfigDict(extra="forbid")
    name: str
    every_nth: int


def _live(old: EveryNthSpec, new: EveryNthSpec, ctx: BuildContext, running: Any) -> LiveChange:
    if old.every_nth == new.every_nth:
        return LiveChange()
    return LiveChange(changes=[f"step `{new.name}`: every_nth {old.every_nth} -> {new.every_nth}"],
                      step=EveryNth(new.name, new.every_nth))


register_step(StepKind("every_nth", EveryNthSpec, lambda s, ctx: EveryNth(s.name, s.every_nth), live=_live,
                       reads=lambda s: [], summary="an alert on every n-th event of a key"))
