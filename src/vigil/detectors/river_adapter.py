"""Run any River anomaly detector (``learn_one`` / ``score_one`` on dicts) as a Vigil detector.

River is an optional dependency (``pip install vigil[river]``): it is imported when a
:class:`RiverDetector` is built, never when this module is imported, so the detector is always
registered and a missing River is reported when a pipeline uses it.

The model is named by a spec, ``{"kind": "river.anomaly.HalfSpaceTrees", "params": {...}}``, or a
list of such specs chained into a River pipeline (``[{"kind": "river.preprocessing.MinMaxScaler"},
{"kind": "river.anomaly.HalfSpaceTrees", "params": {"seed": 42}}]``). Only names under ``river.`` are
resolved. With ``per_key=True`` every key slot gets its own clone of the model (a dict slot → model),
created at the key's first event; otherwise one model sees every event. Rows are processed one by
one in arrival order, prequentially (``score_one``, then ``learn_one``), so batch == per-event holds
by construction; this is the per-event speed of River (see ``vigil bench detectors``), kept for
comparisons and for models Vigil has no vectorized kernel of.

Semantics:

* **Ready** after a key's model has learned ``grace_period`` events (default: the model's
  ``window_size`` parameter if it has one, as River's HalfSpaceTrees scores 0 during its first
  window; else 0).
* **Score** is River's ``score_one``; **calibrated** is the score clipped into [0, 1] (River's
  HalfSpaceTrees and GaussianScorer already score in [0, 1]); the threshold applies to the score.
* **Missing**: a row with a NaN field is neither scored nor learned.

**Limitation: state is not checkpointed.** River persists models by pickle, which Vigil does not
allow at rest (a checkpoint must be plain data). :meth:`RiverDetector.snapshot` keeps what is plain
data (per slot, the events learned); a detector rebuilt from a snapshot starts every key's model
afresh (its count of learned events too, so no key scores before it is warm again). The conformance
check of the snapshot round trip is therefore skipped for this detector.
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from vigil.detectors.base import BaseDetector, Verdicts, register
from vigil.stats.slots import as_slots, split_none
from vigil.types import Float64Array, Int32Array, Int64Array

INSTALL_HINT = "River is not installed: `pip install vigil[river]` (or `pip install river`) to use the river detector"


def river_available() -> bool:
    """True when the optional ``river`` package can be imported."""
    return importlib.util.find_spec("river") is not None


def build_river_model(spec: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> Any:
    """A River model (or pipeline, for a list of specs) from ``{"kind": "river.<module>.<Class>", "params": {}}``.

    Examples:
        >>> model = build_river_model([{"kind": "river.preprocessing.MinMaxScaler"},
        ...                            {"kind": "river.anomaly.HalfSpaceTrees", "params": {"seed": 1}}])
        >>> [type(step).__name__ for step in model.steps.values()]
        ['MinMaxScaler', 'HalfSpaceTrees']
    """
    if not river_available():
        raise ImportError(INSTALL_HINT)
    if isinstance(spec, Mapping):
        return _one_model(spec)
    steps = [_one_model(s) for s in spec]
    if not steps:
        raise ValueError("`model` is an empty list; give at least one River model spec")
    model = steps[0]
    for step in steps[1:]:
        model = model | step
    return model


def _one_model(spec: Mapping[str, Any]) -> Any:
    kind = spec.get("kind") if isinstance(spec, Mapping) else None
    if not isinstance(kind, str) or not kind.startswith("river.") or kind.count(".") < 2:
        raise ValueError(f"`model.kind` must name a River class, e.g. 'river.anomaly.HalfSpaceTrees'; got {kind!r}")
    module_name, _, cls_name = kind.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), cls_name)
    except (ImportError, AttributeError):
        raise ValueError(f"`model.kind`: River has no {kind!r}") from None
    params = dict(spec.get("params") or {})
    if "limits" in params and params["limits"] is not None:  # plain data holds lists; River wants tuples
        params["limits"] = {k: tuple(v) for k, v in params["limits"].items()}
    return cls(**params)


@register
class RiverDetector(BaseDetector):
    """A River anomaly detector per key (or global), run event by event (see the module docstring).

    Args:
        model: a River model spec ``{"kind": "river.anomaly.HalfSpaceTrees", "params": {...}}`` or a
            list of specs chained into a pipeline.
        fields: the fields given to the model (a name or a list of names).
        per_key: one model per key slot, or one for all events.
        threshold: flag when River's score exceeds it.
        grace_period: events a model learns before its scores count (``None``: the model's
            ``window_size`` parameter, else 0).

    Examples:
        >>> det = RiverDetector(model={"kind": "river.anomaly.HalfSpaceTrees",
        ...     "params": {"n_trees": 5, "height": 3, "window_size": 10, "seed": 42,
        ...                "limits": {"value": [0, 100]}}}, fields="value", threshold=0.9)
        >>> v = det.process_many(np.zeros(30, np.int32), np.arange(30), {"value": np.full(30, 20.0)})
        >>> bool(v.ready[9]), bool(v.ready[10]), int(v.flag.sum())
        (False, True, 0)
    """

    kind: ClassVar[str] = "river"
    state_version: ClassVar[int] = 1

    def __init__(
        self,
        *,
        model: Mapping[str, Any] | Sequence[Mapping[str, Any]],
        fields: str | Sequence[str] = ("value",),
        per_key: bool = True,
        threshold: float = 0.9,
        grace_period: int | None = None,
    ) -> None:
        names = (fields,) if isinstance(fields, str) else tuple(fields)
        if not names:
            raise ValueError(f"`fields` must name at least one field; got {fields!r}")
        if math.isnan(threshold):
            raise ValueError("`threshold` must be a number; got nan")
        self.model = copy.deepcopy(model if isinstance(model, Mapping) else list(model))
        self.fields = names
        self.per_key = bool(per_key)
        self.threshold = float(threshold)
        self.grace_period = grace_period
        self._proto = build_river_model(self.model)  # raises with the install hint without River
        if grace_period is None:
            last = self.model if isinstance(self.model, Mapping) else self.model[-1]
            grace_period = int((last.get("params") or {}).get("window_size", 0))
        if grace_period < 0:
            raise ValueError(f"`grace_period` must be >= 0; got {grace_period!r}")
        self._grace = grace_period
        self._models: dict[int, Any] = {}
        self._learned: dict[int, int] = {}

    def params(self) -> dict[str, Any]:
        return {
            "model": copy.deepcopy(self.model), "fields": list(self.fields), "per_key": self.per_key,
            "threshold": self.threshold, "grace_period": self.grace_period,
        }  # fmt: skip

    @classmethod
    def _test_params(cls) -> list[dict[str, Any]]:
        if not river_available():  # optional dependency: `pip install vigil[river]` (the dev extra has it)
            return []
        hst = {"n_trees": 5, "height": 5, "window_size": 20, "seed": 42, "limits": {"value": [0.0, 200.0]}}
        return [
            {"model": {"kind": "river.anomaly.HalfSpaceTrees", "params": hst}, "fields": ["value"], "threshold": 0.99},
        ]

    def _skip_checks(self) -> dict[str, str]:
        skips = {**super()._skip_checks(),
                 "check_snapshot_roundtrip": "River models persist only by pickle, not allowed at rest; "
                 "a restored RiverDetector restarts its models (module docstring)"}  # fmt: skip
        if not self.per_key:
            why = "per_key=False keeps one model for all keys: no per-slot state to reset"
            skips["check_reset_slots"] = skips["check_import_none_resets"] = why
        return skips

    def slice_caveat(self) -> str | None:
        return ("River models persist only by pickle, not allowed at rest: a key's slice can't carry its model "
                "(importing a slice restarts the key's model)")  # fmt: skip

    def fresh(self) -> RiverDetector:
        """An empty twin sharing the prototype model (cloned per key), so River is not imported again."""
        twin = copy.copy(self)
        twin._models, twin._learned = {}, {}
        return twin

    def export_slots(self, slots: Int32Array) -> list[dict[str, Any]]:
        return [{} for _ in as_slots(slots).tolist()]  # the models are not plain data (see slice_caveat)

    def import_slots(self, slots: Int32Array, states: Any) -> None:
        split_none(as_slots(slots), states)
        self.reset_slots(as_slots(slots).astype(np.int32))  # every imported key restarts its model

    def _slot(self, slot: int) -> int:
        return slot if self.per_key else 0

    def _run(self, models: dict[int, Any], learned: dict[int, int], slots: Int32Array, X: dict[str, Float64Array],
             learn: bool) -> Verdicts:  # fmt: skip
        m = len(slots)
        cols = [np.asarray(X[f], np.float64).tolist() for f in self.fields]
        score = np.zeros(m, np.float64)
        ready = np.zeros(m, np.bool_)
        for i, slot in enumerate(slots.tolist()):
            values = [c[i] for c in cols]
            if not all(math.isfinite(v) for v in values):
                continue
            k = self._slot(slot)
            model = models.get(k)
            if model is None:
                model = models[k] = self._proto.clone()
            x = dict(zip(self.fields, values, strict=True))
            if learned.get(k, 0) >= self._grace:
                score[i] = float(model.score_one(x))
                ready[i] = True
            if learn:
                model.learn_one(x)
                learned[k] = learned.get(k, 0) + 1
        flag = ready & (score > self.threshold)
        calibrated = np.clip(np.nan_to_num(score), 0.0, 1.0)
        stats = {f: np.asarray(X[f], np.float64) for f in self.fields}
        return Verdicts(score, calibrated, flag, flag.copy(), ready, stats)

    def process_many(self, slots: Int32Array, ts_ms: Int64Array, X: dict[str, Float64Array]) -> Verdicts:
        return self._run(self._models, self._learned, slots, X, learn=True)

    def score_many(self, slots: Int32Array, ts_ms: Int64Array, X: dict[str, Float64Array]) -> Float64Array:
        """Prequential scores on copies of the models involved (the live models are left as they are)."""
        keys = {self._slot(s) for s in slots.tolist()}
        models = {k: copy.deepcopy(self._models[k]) for k in keys if k in self._models}
        learned = {k: self._learned[k] for k in keys if k in self._learned}
        return self._run(models, learned, slots, X, learn=True).score

    def reset_slots(self, slots: Int32Array) -> None:
        if not self.per_key:
            return
        for s in slots.tolist():
            self._models.pop(s, None)
            self._learned.pop(s, None)

    def snapshot(self) -> dict[str, Any]:
        keys = sorted(self._learned)
        return {"slots": np.array(keys, np.int64), "learned": np.array([self._learned[k] for k in keys], np.int64)}

    def _restore(self, state: dict[str, Any]) -> None:
        # models can't be restored from plain data: every key starts afresh (and warms up again)
        self._models = {}
        self._learned = {}
