"""The detector contract.

A detector scores events of many keys at once. The engine hands it a micro-batch as columns
(key slots, event times, one float64 array per field it reads) and gets back :class:`Verdicts`.

Semantics (checked for every registered detector by :mod:`vigil.testing.detectors`):

* **Prequential, in arrival order.** :meth:`Detector.process_many` scores each row against the state
  left by all earlier rows (of earlier batches *and* earlier rows of this batch), then learns it.
  Splitting a stream into batches differently never changes a result.
* **Higher score = more anomalous**; ``calibrated`` maps it into [0, 1] with the same meaning for
  every detector (a tail probability), so thresholds and ensembles compare across detectors.
* **Never alert before ready**: rows whose key has too little history get ``ready = False``,
  ``score = 0`` and no flag.
* **Missing input**: a NaN value is not scored (not ready) and not learned.
* **State** is plain data: :meth:`Detector.snapshot` returns numbers, strings, lists, dicts and numpy
  arrays only (no pickle at rest); :meth:`Detector.from_snapshot` rebuilds a detector whose later
  verdicts equal the uninterrupted run's.
* **Per-key slices**: :meth:`BaseDetector.export_slots` gives one key's state as plain data and
  :meth:`BaseDetector.import_slots` puts it into a slot of another instance with the same params (Flink
  keyed state, late scoring, moving a key); its later verdicts equal the uninterrupted run's, unless
  :meth:`BaseDetector.slice_caveat` says why not (state shared by all keys, or a model that isn't plain data).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from vigil.stats.slots import SlotArrays
from vigil.types import BoolArray, Float64Array, Int32Array, Int64Array, parse_duration_ms

UNSCORABLE = "unscorable"
"""The verdict stat marking rows a detector could not score because of their value (see :class:`Verdicts`)."""


@dataclass(slots=True)
class Verdicts:
    """What a detector says about each row of a batch.

    Attributes:
        score: raw score (higher = more anomalous; 0 where not ready).
        calibrated: score mapped into [0, 1] (a tail probability).
        flag: the row is anomalous (score beyond the detector's threshold, and ready).
        fire: the row raises a new alert (equal to ``flag`` for point detectors; a rule that stays
            true over a burst fires once when it becomes true).
        ready: the key had enough history to score the row.
        stats: per-row evidence behind the score (e.g. window count, mean, std), float64 arrays. A detector
            that can't score some values (``transform: log`` of a value <= 0) marks those rows 1.0 in
            ``stats[UNSCORABLE]``: runs count them per step instead of passing them silently as "not ready".
    """

    score: Float64Array
    calibrated: Float64Array
    flag: BoolArray
    fire: BoolArray
    ready: BoolArray
    stats: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.score.shape[0])

    @staticmethod
    def concat(parts: list[Verdicts]) -> Verdicts:
        """Verdicts of consecutive batches as one."""
        return Verdicts(
            np.concatenate([p.score for p in parts]),
            np.concatenate([p.calibrated for p in parts]),
            np.concatenate([p.flag for p in parts]),
            np.concatenate([p.fire for p in parts]),
            np.concatenate([p.ready for p in parts]),
            {k: np.concatenate([p.stats[k] for p in parts]) for k in parts[0].stats},
        )


@runtime_checkable
class Detector(Protocol):
    """A keyed streaming detector (see the module docstring for the rules every detector follows)."""

    kind: ClassVar[str]
    state_version: ClassVar[int]
    fields: tuple[str, ...]
    threshold: float

    def process_many(self, slots: Int32Array, ts_ms: Int64Array, X: dict[str, Float64Array]) -> Verdicts:
        """Score each row prequentially, then learn it."""
        ...

    def reset_slots(self, slots: Int32Array) -> None:
        """Forget the state of expired key slots."""
        ...

    def params(self) -> dict[str, Any]:
        """Constructor arguments (plain data)."""
        ...

    def snapshot(self) -> dict[str, Any]:
        """State as plain data."""
        ...

    @classmethod
    def from_snapshot(cls, params: dict[str, Any], state: dict[str, Any]) -> Detector:
        """Rebuild a detector from :meth:`params` and :meth:`snapshot`."""
        ...

    def describe(self, stats: dict[str, Any]) -> str:
        """One readable sentence explaining a flagged row from its stats."""
        ...


class BaseDetector(SlotArrays):
    """Defaults shared by Vigil's detectors: the ``*_one`` / ``*_many`` verbs derived from :meth:`process_many`.

    Subclasses implement ``process_many``, ``params``, ``snapshot``, ``_restore`` and ``reset_slots``.

    Per-key slices (:meth:`export_slots` / :meth:`import_slots`) default to struct of arrays: a subclass lists
    its per-slot arrays (first axis = slot) in ``_slot_arrays`` and grows them in ``_grow_slots(top)``; parts
    that slice themselves (a time window, a forecaster, an inner detector) are listed in ``_slot_parts`` and
    exported under their attribute name. A slot's slice is everything that key's later verdicts depend on.
    """

    kind: ClassVar[str] = "detector"
    state_version: ClassVar[int] = 1
    #: params that can change on a running pipeline (``vigil apply``) keeping the state: they only decide what
    #: is flagged or when a key is ready, never how the state is laid out or updated.
    live_params: ClassVar[frozenset[str]] = frozenset({"threshold", "min_count"})
    fields: tuple[str, ...] = ()
    threshold: float = math.inf

    def process_many(self, slots: Int32Array, ts_ms: Int64Array, X: dict[str, Float64Array]) -> Verdicts:
        raise NotImplementedError

    def params(self) -> dict[str, Any]:
        raise NotImplementedError

    def snapshot(self) -> dict[str, Any]:
        raise NotImplementedError

    def _restore(self, state: dict[str, Any]) -> None:
        raise NotImplementedError

    def reset_slots(self, slots: Int32Array) -> None:
        raise NotImplementedError

    @classmethod
    def from_snapshot(cls, params: dict[str, Any], state: dict[str, Any]) -> Any:
        """Rebuild a detector from its params and a snapshot."""
        det = cls(**params)
        det._restore(state)
        return det

    def score_many(self, slots: Int32Array, ts_ms: Int64Array, X: dict[str, Float64Array]) -> Float64Array:
        """Prequential scores of the rows, leaving the detector's state unchanged (works on a copy)."""
        twin = type(self).from_snapshot(self.params(), self.snapshot())
        return twin.process_many(slots, ts_ms, X).score  # type: ignore[no-any-return]

    def learn_many(self, slots: Int32Array, ts_ms: Int64Array, X: dict[str, Float64Array]) -> None:
        """Learn the rows (their verdicts are discarded)."""
        self.process_many(slots, ts_ms, X)

    def score_one(self, slot: int, ts_ms: int, x: dict[str, float]) -> float:
        """Score one event without learning it."""
        return float(self.score_many(*_one(slot, ts_ms, x, self.fields))[0])

    def learn_one(self, slot: int, ts_ms: int, x: dict[str, float]) -> None:
        """Learn one event."""
        self.process_many(*_one(slot, ts_ms, x, self.fields))

    def describe(self, stats: dict[str, Any]) -> str:
        """One readable sentence for a flagged row (subclasses say more)."""
        return f"{self.kind} score beyond {self.threshold:g}"

    def fresh(self) -> Any:
        """An empty detector with the same params (subclasses share immutable heavy parts such as models).

        With :meth:`import_slots`, the cheap way to score a few keys on the side (late events) or to host one
        key's slice (a Flink operator), instead of a copy of every key's state.
        """
        return type(self)(**self.params())

    def slice_caveat(self) -> str | None:
        """Why a key's later verdicts depend on more than its :meth:`export_slots` slice, or ``None``.

        ``None`` (the default) means the slice is everything: imported into a fresh instance it continues
        the key exactly. Otherwise the reason (state shared by all keys, a model that is not plain data);
        such a detector can't run per key (:class:`~vigil.dataflow.keyed.KeyedDetector` refuses it).
        """
        return None

    def _skip_checks(self) -> dict[str, str]:
        """Conformance checks that don't apply, with the reason (subclasses add theirs to these)."""
        caveat = self.slice_caveat()
        if caveat is None:
            return {}
        return {"check_slots_continue_elsewhere": caveat}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"


def _one(slot: int, ts_ms: int, x: dict[str, float], fields: tuple[str, ...]) -> tuple[Any, Any, Any]:
    return (
        np.array([slot], np.int32),
        np.array([ts_ms], np.int64),
        {f: np.array([x.get(f, np.nan)], np.float64) for f in fields},
    )


def gaussian_tail(z: Float64Array) -> Float64Array:
    """Calibrate |z| into [0, 1]: the probability that a Gaussian deviate is closer to the mean than ``z``.

    Examples:
        >>> gaussian_tail(np.array([0.0, 1.0, 3.0])).round(4).tolist()
        [0.0, 0.6827, 0.9973]
    """
    from vigil.stats.special import erf

    return erf(np.abs(z) / math.sqrt(2.0))


def duration_param(name: str, value: str | int) -> int:
    """A duration parameter in ms (``"60s"`` or an int of ms), > 0, with an error naming the parameter.

    Examples:
        >>> duration_param("window", "1m")
        60000
    """
    if isinstance(value, bool):
        raise ValueError(f"`{name}` is not a duration; got {value!r}")
    if isinstance(value, int):
        ms = value
    else:
        try:
            ms = parse_duration_ms(value)
        except ValueError:
            raise ValueError(f"`{name}` is not a duration (use e.g. '500ms', '60s', '1m'); got {value!r}") from None
    if ms <= 0:
        raise ValueError(f"`{name}` must be > 0; got {value!r}")
    return ms


_REGISTRY: dict[str, type[Any]] = {}


def register(cls: type[Any]) -> type[Any]:
    """Class decorator: make a detector available by its ``kind`` to YAML configs and the conformance suite."""
    _REGISTRY[cls.kind] = cls
    return cls


def registry() -> dict[str, type[Any]]:
    """Registered detector classes by ``kind``."""
    return dict(_REGISTRY)
