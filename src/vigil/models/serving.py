"""Serve the promoted model of a registry live, with hot swaps and a statistical fallback.

:class:`RegistryModelDetector` (kind ``registry_model``) scores rows with the version that the registry's
``PROMOTED`` pointer names. How it behaves over time:

* **Hot swap between micro-batches.** At the start of a ``process_many`` call, at most once every
  ``check_interval_s`` of the injected ``clock``, it re-reads ``PROMOTED`` (a few bytes). A new version is
  loaded and used from that batch on: a batch is always scored by one model entirely, so no row is lost or
  scored twice across a swap, and every row's ``stats["model_version"]`` says which version scored it
  (``3.0`` for ``v3``; ``0.0`` in fallback). The swap point depends on wall-clock time, so a promotion
  mid-stream is the one thing that makes results depend on batch boundaries (the conformance suite, which
  promotes nothing, holds).
* **Never stops the pipeline.** When the promoted model is missing, corrupt, has features other than the
  detector's ``fields``, or fails while scoring, the batch is scored by per-metric **fallback** detectors
  (``fallback`` specs, default an ``ew_zscore`` per field) and :meth:`health` turns unhealthy with the reason
  and the time it changed; ``stats["model_fallback"]`` is 1.0 on those rows. The engine (or a health endpoint)
  polls :meth:`health` to raise a "model unhealthy" alert. The registry is retried at every check, so fixing
  the registry (``vigil models promote``/``rollback``) heals the detector without a restart.
* **Warm fallback.** The fallback detectors learn every batch, also while the model serves, so they are
  ready the moment they are needed (their cost is a few numba passes per batch).

Scores are the model's *calibrated* score (the empirical CDF of its training scores), so that versions trained
on different data are comparable and a swap doesn't move the threshold; ``stats["raw_score"]`` keeps the
Isolation Forest score. In fallback, ``score``/``calibrated`` are the largest calibrated score of the fallback
detectors and ``flag`` is any fallback detector's own flag (each keeps its own threshold).

Snapshot: the version in use and the fallback detectors' states. Restoring loads that same version (so the
run continues exactly), and the next pointer check follows ``PROMOTED`` again.

The ``clock`` is not a parameter (not plain data): a detector rebuilt from ``params()`` uses the wall clock.
"""

from __future__ import annotations

import copy
import functools
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

from vigil.detectors.base import BaseDetector, Verdicts, register, registry
from vigil.detectors.explain import opt, ranked
from vigil.detectors.iforest import IsolationForestDetector
from vigil.models.registry import ModelRegistry, RegistryError, version_number
from vigil.stats.slots import as_slots, split_none
from vigil.types import Contribution, Float64Array, Int32Array, Int64Array

_VERSION_OF_FALLBACK = 0.0


@register
class RegistryModelDetector(BaseDetector):
    """The promoted version of a registry model, hot-swapped between batches, with a fallback (module docstring).

    Args:
        name: the model's name in the registry.
        registry_root: the registry folder.
        fields: the stream fields fed to the model; default the promoted model's features at construction.
            A promoted model whose features differ is not served (fallback, with the reason).
        threshold: flag when the model's calibrated score exceeds it, in (0, 1).
        check_interval_s: seconds of ``clock`` between two reads of the ``PROMOTED`` pointer (>= 0; 0 = every
            batch).
        fallback: detector specs ``[{kind, params}, ...]`` scoring the batches the model can't; default one
            ``ew_zscore`` per field; ``[]`` for none (the caller has its own fallback, e.g. the server
            pipeline's per-metric detectors: rows are then not ready while the model can't serve).
        clock: seconds, for ``check_interval_s`` and :meth:`health`'s ``since`` (default ``time.time``).

    Score:
        the served model's calibrated score in [0, 1] (calibrated: the same number); in fallback, the largest
        calibrated score of the fallback detectors.

    State:
        the version in use; the fallback detectors' states.

    Warm-up:
        with a model, none (rows with every feature missing are not ready); in fallback, the fallback
        detectors' warm-up. ``stats``: ``model_version``, ``model_fallback``, ``raw_score``, ``imputed`` and
        ``z_<field>`` (against the training mean, or the fallback's running mean).

    Examples:
        >>> import tempfile
        >>> from vigil.detectors.iforest import fit_isolation_forest
        >>> rng = np.random.default_rng(0)
        >>> root = tempfile.mkdtemp()
        >>> reg = ModelRegistry(root)
        >>> v = reg.register("cpu", fit_isolation_forest(rng.normal(50, 5, (500, 1)), ["cpu"], n_estimators=20), {})
        >>> reg.promote("cpu", v, reason="first model")
        >>> det = RegistryModelDetector("cpu", root, check_interval_s=0)
        >>> out = det.process_many(np.zeros(3, np.int32), np.arange(3), {"cpu": np.array([50.0, 51.0, 95.0])})
        >>> out.flag.tolist(), out.stats["model_version"].tolist(), det.health()["healthy"]
        ([False, False, True], [1.0, 1.0, 1.0], True)
        >>> import os; os.remove(os.path.join(root, "cpu", "PROMOTED"))   # the registry loses its pointer
        >>> out = det.process_many(np.zeros(1, np.int32), np.arange(1), {"cpu": np.array([50.0])})
        >>> out.stats["model_fallback"].tolist(), det.health()["healthy"]
        ([1.0], False)
    """

    kind: ClassVar[str] = "registry_model"
    state_version: ClassVar[int] = 1

    def __init__(
        self,
        name: str,
        registry_root: str,
        *,
        fields: list[str] | None = None,
        threshold: float = 0.99,
        check_interval_s: float = 5.0,
        fallback: list[dict[str, Any]] | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"`threshold` is on the calibrated score, in (0, 1), e.g. 0.99; got {threshold!r}")
        if not (isinstance(check_interval_s, int | float) and check_interval_s >= 0):
            raise ValueError(f"`check_interval_s` must be a number of seconds >= 0; got {check_interval_s!r}")
        self.name = str(name)
        self.registry_root = os.fspath(registry_root)
        self.registry = ModelRegistry(self.registry_root)
        self.calibrated_threshold = float(threshold)
        self.threshold = float(threshold)  # scores are calibrated: the bar is the same number
        self.check_interval_s = float(check_interval_s)
        self._clock = clock or time.time
        self._fields_param = None if fields is None else ([fields] if isinstance(fields, str) else list(fields))
        self._fallback_param = None if fallback is None else [dict(s) for s in fallback]
        self._model: IsolationForestDetector | None = None
        self._version: str | None = None
        self._health: dict[str, Any] = {"healthy": False, "version": None, "reason": "not checked yet",
                                        "since": self._clock()}  # fmt: skip
        self._last_check = -math.inf
        self._cache: dict[str, IsolationForestDetector] = {}
        if self._fields_param is not None:
            self.fields = tuple(str(f) for f in self._fields_param)
            if not self.fields:
                raise ValueError("`fields` can't be empty")
            self._check()
        else:
            self._check()
            if self._model is not None:
                self.fields = tuple(self._model.fields)
            elif self._fallback_param:
                self.fields = ()
            else:
                raise ValueError(
                    f"`fields` must be given: model {self.name!r} can't be served now ({self._health['reason']}) "
                    "and there are no `fallback` specs to take the fields from"
                )
        if self._fallback_param is not None:  # [] = no fallback: rows are not ready while the model can't serve
            self.fallback_specs = self._fallback_param
        else:
            self.fallback_specs = [{"kind": "ew_zscore", "params": {"field": f}} for f in self.fields]
        self.fallbacks = [_build(s, i) for i, s in enumerate(self.fallback_specs)]
        if not self.fields:
            self.fields = tuple(dict.fromkeys(f for d in self.fallbacks for f in d.fields))

    # ---- model lifecycle ---------------------------------------------------------------------------------

    def _load(self, version: str) -> IsolationForestDetector:
        det = self._cache.get(version)
        if det is None:
            artifact = self.registry.load(self.name, version)
            det = IsolationForestDetector(artifact, fields=self._fields_param or None,
                                          threshold=self.calibrated_threshold)  # fmt: skip
            if self._fields_param is None and hasattr(self, "fields") and self.fields:
                if tuple(det.fields) != tuple(self.fields):
                    raise ValueError(f"its features {list(det.fields)} differ from the served fields "
                                     f"{list(self.fields)} (restart the pipeline to change fields)")  # fmt: skip
            if len(self._cache) >= 4:
                self._cache.pop(next(iter(self._cache)))
            self._cache[version] = det
        return det

    def _set_health(self, healthy: bool, version: str | None, reason: str) -> None:
        h = self._health
        if (h["healthy"], h["version"], h["reason"]) != (healthy, version, reason):
            self._health = {"healthy": healthy, "version": version, "reason": reason, "since": self._clock()}

    def _serve(self, version: str | None, why: str | None = None) -> None:
        """Serve ``version`` (or fall back, with the reason)."""
        if version is None:
            self._model, self._version = None, None
            self._set_health(False, None, why or "no model")
            return
        try:
            model = self._load(version)
        except (RegistryError, ValueError, OSError) as exc:
            self._model, self._version = None, None
            self._set_health(False, None, f"{self.name} {version} can't be served: {exc}")
            return
        self._model, self._version = model, version
        self._set_health(True, version, "serving the promoted version")

    def _check(self) -> None:
        """Follow ``PROMOTED``: swap to a newly promoted version, or fall back when it can't be served."""
        self._last_check = self._clock()
        try:
            target, _ = self.registry.promoted(self.name)
        except RegistryError as exc:
            self._serve(None, f"no servable promoted version: {exc}")
            return
        if target != self._version or self._model is None:
            self._serve(target)

    def health(self) -> dict[str, Any]:
        """``{healthy, version, reason, since}``: whether the promoted model is served, which, why not, since when.

        ``since`` is the ``clock`` time of the last change. Unhealthy means the fallback detectors are scoring.
        """
        return dict(self._health)

    @property
    def model_version(self) -> str | None:
        """The version serving now (``None`` in fallback)."""
        return self._version

    # ---- Detector ----------------------------------------------------------------------------------------

    def params(self) -> dict[str, Any]:
        """Constructor arguments (plain data; the clock is not one)."""
        return {"name": self.name, "registry_root": self.registry_root, "fields": self._fields_param,
                "threshold": self.calibrated_threshold, "check_interval_s": self.check_interval_s,
                "fallback": self._fallback_param}  # fmt: skip

    def __repr__(self) -> str:
        return (f"RegistryModelDetector(name={self.name!r}, registry_root={self.registry_root!r}, "
                f"fields={list(self.fields)}, version={self._version!r}, threshold={self.calibrated_threshold!r})")

    @classmethod
    def _test_params(cls) -> list[dict[str, Any]]:
        root = _test_registry()
        ewz = {"kind": "ew_zscore", "params": {"field": "value", "halflife": 20, "threshold": 3, "min_count": 5}}
        return [
            {"name": "conformance", "registry_root": root, "threshold": 0.99},
            {"name": "absent", "registry_root": root, "fields": ["value"], "fallback": [ewz]},
        ]

    def process_many(self, slots: Int32Array, ts_ms: Int64Array, X: dict[str, Float64Array]) -> Verdicts:
        """Check ``PROMOTED`` if due, then score the whole batch with one model (or the fallback)."""
        if self._clock() - self._last_check >= self.check_interval_s:
            self._check()  # between batches: this whole batch is scored by one model
        m = len(slots)
        fb = [d.process_many(slots, ts_ms, X) for d in self.fallbacks]  # warm: always learn
        out: Verdicts | None = None
        if self._model is not None:
            try:
                out = self._model_verdicts(self._model, slots, ts_ms, X)
            except Exception as exc:  # a model must never stop the pipeline
                failed = self._version
                self._model, self._version = None, None
                self._cache.pop(str(failed), None)
                self._set_health(False, None, f"{self.name} {failed} failed while scoring: {exc!r}")
        if out is None:
            out = self._fallback_verdicts(m, fb)
        return out

    def _model_verdicts(self, model: IsolationForestDetector, slots: Int32Array, ts_ms: Int64Array,
                        X: dict[str, Float64Array]) -> Verdicts:  # fmt: skip
        v = model.process_many(slots, ts_ms, X)
        m = len(slots)
        flag = v.ready & (v.calibrated > self.calibrated_threshold)
        stats = {
            "model_version": np.full(m, float(version_number(str(self._version)))),
            "model_fallback": np.zeros(m), "raw_score": v.score, "imputed": v.stats["imputed"],
        }  # fmt: skip
        for f in self.fields:
            stats[f"z_{f}"] = v.stats.get(f"z_{f}", np.full(m, np.nan))
        return Verdicts(v.calibrated.copy(), v.calibrated, flag, flag.copy(), v.ready, stats)

    def _fallback_verdicts(self, m: int, fb: list[Verdicts]) -> Verdicts:
        ready = np.zeros(m, bool)
        cal = np.zeros(m, np.float64)
        flag = np.zeros(m, bool)
        fire = np.zeros(m, bool)
        for v in fb:
            ready |= v.ready
            cal = np.maximum(cal, np.where(v.ready, v.calibrated, 0.0))
            flag |= v.flag & v.ready
            fire |= v.fire & v.flag & v.ready
        stats = {"model_version": np.full(m, _VERSION_OF_FALLBACK), "model_fallback": np.ones(m),
                 "raw_score": cal.copy(), "imputed": np.zeros(m)}  # fmt: skip
        for f in self.fields:
            z = np.full(m, np.nan)
            for d, v in zip(self.fallbacks, fb, strict=True):
                if tuple(d.fields) == (f,) and "z" in v.stats:
                    z = np.asarray(v.stats["z"], np.float64)
                    break
            stats[f"z_{f}"] = z
        return Verdicts(cal, cal.copy(), flag, fire, ready, stats)

    def describe(self, stats: dict[str, Any]) -> str:
        """E.g. "model fraud v3: rarer than 99.7% of training rows; most unusual: amount z=+8.2"."""
        zs = sorted(((f, float(stats.get(f"z_{f}", np.nan))) for f in self.fields),
                    key=lambda t: -abs(t[1]) if math.isfinite(t[1]) else 0.0)  # fmt: skip
        top = ", ".join(f"{f} z={z:+.1f}" for f, z in zs[:3] if math.isfinite(z)) or "n/a"
        cal = float(stats.get("calibrated", stats.get("raw_score", np.nan)))
        if float(stats.get("model_fallback", 0.0)) >= 0.5:
            return f"model {self.name} unavailable, fallback statistics: calibrated {cal:.4g}; most unusual: {top}"
        v = int(float(stats.get("model_version", 0.0)))
        return f"model {self.name} v{v}: rarer than {100 * cal:.3g}% of training rows; most unusual: {top}"

    def reset_slots(self, slots: Int32Array) -> None:
        """Forget expired key slots (the model holds no per-key state; the fallbacks do)."""
        for d in self.fallbacks:
            d.reset_slots(slots)

    def explain_many(self, X: dict[str, Float64Array], v: Verdicts, rows: np.ndarray) -> list[list[Contribution]]:
        """Rows the served model scored: its per-feature attribution; other rows: each field's z (``z_<field>``)."""
        rows = np.asarray(rows, np.int64)
        by_model = (v.stats["model_fallback"][rows] < 0.5) & (self._model is not None)
        out: list[list[Contribution]] = []
        for i in rows.tolist():
            out.append(ranked([Contribution(f, float(z), opt(X[f][i]) if f in X else None)
                               for f in self.fields if np.isfinite(z := v.stats[f"z_{f}"][i])]))  # fmt: skip
        if by_model.any() and self._model is not None:
            sel = np.flatnonzero(by_model)
            for j, contribs in zip(sel.tolist(), self._model.explain_many(X, v, rows[sel]), strict=True):
                out[j] = contribs
        return out

    def slice_caveat(self) -> str | None:
        """The first fallback detector's caveat (the served model holds no per-key state)."""
        for d in self.fallbacks:
            caveat = d.slice_caveat()
            if caveat is not None:
                return f"fallback {d.kind}: {caveat}"
        return None

    def fresh(self) -> RegistryModelDetector:
        """An empty twin serving the same loaded model (no registry read, no reload); fresh fallbacks."""
        twin = copy.copy(self)
        twin._cache = dict(self._cache)
        twin.fallbacks = [d.fresh() for d in self.fallbacks]
        return twin

    def export_slots(self, slots: Int32Array) -> list[dict[str, Any]]:
        """Per slot ``{"fallback": [fallback slices]}``: the served model is global and holds no per-key state."""
        per = [d.export_slots(slots) for d in self.fallbacks]
        return [{"fallback": [f[i] for f in per]} for i in range(len(as_slots(slots)))]

    def import_slots(self, slots: Int32Array, states: Any) -> None:
        """Load :meth:`export_slots` output into ``slots`` (``None`` resets a slot's fallbacks)."""
        slots = as_slots(slots)
        split_none(slots, states)
        for j, d in enumerate(self.fallbacks):
            d.import_slots(slots, [None if s is None else s["fallback"][j] for s in states])

    def snapshot(self) -> dict[str, Any]:
        """The version in use and the fallback detectors' states."""
        return {"version": self._version, "fallback": [d.snapshot() for d in self.fallbacks]}

    def _restore(self, state: dict[str, Any]) -> None:
        snaps = state.get("fallback") or []
        if len(snaps) != len(self.fallbacks):
            raise ValueError(f"snapshot has {len(snaps)} fallback states; this config has {len(self.fallbacks)}")
        self.fallbacks = [type(d).from_snapshot(d.params(), s) for d, s in zip(self.fallbacks, snaps, strict=True)]
        version = state.get("version")
        if version != self._version:
            self._serve(version, "the snapshot was taken in fallback" if version is None else None)
        self._last_check = self._clock()


def _build(spec: Any, i: int) -> Any:
    kinds = registry()
    if not isinstance(spec, dict) or spec.get("kind") not in kinds:
        got = spec.get("kind") if isinstance(spec, dict) else spec
        raise ValueError(f"`fallback[{i}]` must be {{kind, params}} with a registered kind; got {got!r}")
    if spec["kind"] == RegistryModelDetector.kind:
        raise ValueError(f"`fallback[{i}]` can't itself be a registry_model")
    try:
        return kinds[spec["kind"]](**(spec.get("params") or {}))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"`fallback[{i}]` ({spec['kind']}): {exc}") from exc


@functools.lru_cache(maxsize=1)
def _test_registry() -> str:
    """A registry with the iforest conformance model promoted as ``conformance`` (reused between runs).

    The folder name is fixed, so the conformance suite's test ids are the same in every process.
    """
    from vigil.detectors.iforest import _test_artifact

    uid = os.getuid() if hasattr(os, "getuid") else 0
    root = os.path.join(tempfile.gettempdir(), f"vigil-conformance-registry-{uid}")
    art = _test_artifact()
    reg = ModelRegistry(root)
    try:
        if reg.load("conformance")["onnx_sha256"] == art["onnx_sha256"]:
            return root
    except RegistryError:
        pass
    shutil.rmtree(os.path.join(root, "conformance"), ignore_errors=True)
    reg.promote("conformance", reg.register("conformance", art, {"source": "conformance"}), "conformance suite")
    return root
