"""The server pipeline as a step of a pipeline (``Pipeline.step(ServerStep(...))`` or ``servers:`` in YAML).

The runtime does what it does for every step: reads the source (Influx line protocol or Telegraf JSON
from Kafka or files, see :mod:`vigil.io.metrics`), keys each sample by host (its key slot is the host's
row in the join), computes the watermark per partition, routes late samples to the late output, frees
idle hosts, checkpoints the state and delivers the alerts. This step folds each micro-batch into
the windowed join and, when the watermark passes a window, scores it (per-metric detectors, the global
model, k-of-n) and emits the fired alerts.

The global model is the registry's promoted version (:class:`~vigil.models.serving.RegistryModelDetector`
over the ``z_<metric>`` features, with no fallback of its own): a newly promoted version is picked up
between batches; a missing, corrupt or feature-incompatible one makes the model stop scoring and voting
while the per-metric detectors carry on, and the runtime raises a "model unhealthy" alert from
:meth:`ServerStep.health` (and a recovery notice when it serves again).

Examples:
    >>> import numpy as np
    >>> from vigil.dataflow import Pipeline
    >>> from vigil.engine import EmbeddedRunner
    >>> from vigil.io.memory import MemorySource
    >>> from vigil.io.sinks import MemorySink
    >>> src = MemorySource({"key": ["web-1", "web-2"] * 3, "ts_ms": [1_000, 1_000, 2_000, 2_000, 12_000, 12_000],
    ...                     "value": [0.0, 1.0, 2.0, 3.0, 4.0, 5.0],
    ...                     "metric": ["cpu", "cpu", "mem", "mem", "cpu", "cpu"]})
    >>> windows = MemorySink()
    >>> step = ServerStep(ServerConfig(metrics=("cpu", "mem"), min_count=2, k=1), name="servers", sink=windows)
    >>> p = Pipeline("fleet").source(src).step(step).alerts_to(MemorySink())
    >>> st = EmbeddedRunner(p).run()
    >>> sorted((w["key"], w["start_ms"], w["cpu"]) for w in windows.items)
    [('web-1', 0, 0.0), ('web-1', 10000, 4.0), ('web-2', 0, 1.0), ('web-2', 10000, 5.0)]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

from vigil.apps.servers.pipeline import ServerConfig, ServerPipeline, WindowVerdicts
from vigil.apps.servers.revise import WindowRevisions
from vigil.dataflow.outputs import Outputs, late_rows
from vigil.dataflow.steps import params_hash
from vigil.types import Batch, BoolArray, Int64Array

__all__ = ["ServerStep"]


def _shared(model: Any) -> bool:
    """A served model with no per-key state (nor fallback detectors keeping some): twins may share it."""
    return not getattr(model, "fallbacks", None)


class _HostNames:
    """slot -> host name, through the engine's current key index (it is replaced on restore)."""

    def __init__(self, keys_of: Callable[[np.ndarray], Any]) -> None:
        self._keys_of = keys_of

    def __getitem__(self, slot: int) -> str:
        return str(self._keys_of(np.array([slot], np.int32))[0])


class ServerStep:
    """The join -> detectors (+ model) -> k-of-n pipeline over long-form metric samples, as a pipeline step.

    Args:
        config: :class:`ServerConfig` (its ``max_delay_s`` is unused here: the pipeline's watermark rules).
        name: the step's name (in its state, metrics and alert ids).
        sink: where scored windows go (``emit_windows``), if anywhere.
        model: ``None``; an artifact dict (fixed model); or a served model detector over ``z_<metric>``.
        registry: with ``model_name``: serve the registry's promoted version of that model, followed live
            (checked every ``check_interval_s``), instead of ``model``.
        model_name: the model's name in ``registry``.
        check_interval_s: seconds between two reads of the registry's promotion pointer.
        value_field: the record field holding the sample value.
        metric_field: the extra column holding the metric name (rows of other metrics are ignored).
        metric_aliases: source metric name -> pipeline metric, e.g. ``{"cpu.usage_active": "cpu"}`` for what
            a collector calls it (Influx/Telegraf decoders name metrics ``measurement.field``).
        emit_windows: also send every scored window (host, window, metric means, votes) to the step's sink.
        revise_windows: late samples for the last this many scored windows revise them (the alert is updated,
            raised late or retracted: :mod:`vigil.apps.servers.revise`) instead of going to the late output;
            0 turns revisions off.
    """

    kind: ClassVar[str] = "servers"

    def __init__(self, config: ServerConfig | None = None, *, name: str = "servers", sink: Any = None,
                 model: Any = None, registry: str | None = None,
                 model_name: str | None = None, check_interval_s: float = 5.0, value_field: str = "value",
                 metric_field: str = "metric", metric_aliases: dict[str, str] | None = None,
                 emit_windows: bool = True, revise_windows: int = 6) -> None:  # fmt: skip
        cfg = config or ServerConfig()
        if (registry is None) != (model_name is None):
            raise ValueError("`registry` and `model_name` go together")
        if registry is not None:
            from vigil.models.serving import RegistryModelDetector

            model = RegistryModelDetector(str(model_name), registry, fields=[f"z_{m}" for m in cfg.metrics],
                                          threshold=cfg.model_threshold, check_interval_s=check_interval_s,
                                          fallback=[])  # fmt: skip
        self.name, self.sink = name, sink
        self.pipe = ServerPipeline(cfg, model)
        self.config = cfg
        self.fields = (value_field,)
        self.value_field, self.metric_field = value_field, metric_field
        self.emit_windows = emit_windows
        self._codes = {m: i for i, m in enumerate(cfg.metrics)}
        self.metric_aliases = dict(metric_aliases or {})
        unknown = sorted(set(self.metric_aliases.values()) - set(cfg.metrics))
        if unknown:
            raise ValueError(f"`metric_aliases` map to {unknown}, which are not among the metrics {list(cfg.metrics)}")
        self._codes.update({a: self._codes[m] for a, m in self.metric_aliases.items()})
        self.samples = 0
        self.windows = 0
        if revise_windows < 0:
            raise ValueError(f"`revise_windows` must be >= 0; got {revise_windows!r}")
        self.revisions = WindowRevisions(revise_windows, cfg.window_ms)
        self._bound: Outputs | None = None

    def _bind(self, out: Outputs) -> None:
        """Name hosts through the runtime's key index, and make alert ids of the runtime's pipeline and this step."""
        if self._bound is not out:
            self._bound = out
            self.pipe.host_names = _HostNames(out.keys_of)
            self.pipe.alert_ns = (out.pipeline, self.name)

    # -- the Step protocol -------------------------------------------------------------------------

    def open(self) -> None:
        """Nothing to load ahead (the served model loads on first use)."""

    def on_batch(self, batch: Batch, keys: np.ndarray, wm_rows: Int64Array, out: Outputs) -> None:
        """Fold a micro-batch into the join; samples for closed windows not kept for revision are late."""
        self._bind(out)
        late = self.process_batch(batch.slots, batch.ts_ms, batch.cols, batch.extra, wm_rows)
        if len(late):
            out.counts.late_events += len(late)
            out.emit(out.late_sink, late_rows(self.name, keys, batch.ts_ms, batch.cols, late, wm_rows))

    def on_late(self, late: Batch, keys: np.ndarray, behind_ms: Int64Array, out: Outputs,
                expired: BoolArray) -> None:
        """Samples late at the watermark: revisions are made from samples the join calls late, not here."""

    def on_watermark(self, watermark_ms: int, out: Outputs) -> None:
        """Score the windows the watermark closed: alerts to the alert sinks, window rows to the step's sink."""
        self._bind(out)
        out.route(self.name, self.advance(watermark_ms), self.sink)

    def state_key(self) -> str:
        """What the state's layout depends on (see :meth:`params`)."""
        return f"servers/{params_hash(self.params())}"

    def sinks(self) -> list[Any]:
        """Where scored windows go."""
        return [self.sink] if self.sink is not None else []

    # -- the work ----------------------------------------------------------------------------------

    def _metric_codes(self, names: np.ndarray) -> np.ndarray:
        uniq, inv = np.unique(np.asarray(names).astype(str), return_inverse=True)
        return np.array([self._codes.get(u, -1) for u in uniq.tolist()], np.int64)[inv]

    def process_batch(self, slots: np.ndarray, ts_ms: np.ndarray, cols: dict[str, np.ndarray],
                      extra: dict[str, np.ndarray], watermarks: np.ndarray) -> np.ndarray:  # fmt: skip
        """Fold a micro-batch into the join; return the row indices of late samples (their window had closed)."""
        if self.metric_field not in extra:
            raise ValueError(f"records have no `{self.metric_field}` column: read metrics with an Influx or "
                             "Telegraf decoder, or name the metric column with `metric_field`")  # fmt: skip
        metric = self._metric_codes(extra[self.metric_field])
        keep = np.flatnonzero(metric >= 0)
        self.samples += len(keep)
        vals = cols[self.value_field]
        late = keep[self.pipe.join.add(slots[keep], metric[keep], ts_ms[keep], vals[keep], watermarks[keep])]
        if len(late):  # samples for windows already scored: revise those still kept, the rest are late
            taken = self.revisions.fold(slots[late], metric[late], ts_ms[late], vals[late])
            late = late[~taken]
        return late

    def advance(self, watermark_ms: int) -> list[Any]:
        """Score every window the watermark closed: the fired alerts, then (``emit_windows``) one row per window."""
        out: list[Any] = self.revisions.rescore(self.pipe, self.pipe.host_names)  # what late samples changed
        v, alerts = self.pipe._score(self.pipe.join.advance(watermark_ms))
        self.windows += len(v)
        if len(v) and self.revisions.horizon:
            jw, k = v.joined, self.config.k
            votes = v.flag.sum(axis=1) + (v.model_flag if self.config.model_votes else 0)
            value = np.where(jw.missing, np.nan, jw.value)
            severity = ["critical" if f and n >= k + 1 else "warning" if f else ""
                        for f, n in zip(v.fire.tolist(), votes.tolist(), strict=True)]  # fmt: skip
            self.revisions.keep(jw.start_ms, jw.slot, value, jw.count, votes, v.alerting, v.fire, severity)
        out.extend(alerts)
        if self.emit_windows and len(v):
            out.extend(self._rows(v))
        return out

    def _rows(self, v: WindowVerdicts) -> list[dict[str, Any]]:
        jw, names = v.joined, self.pipe.host_names
        metrics = self.config.metrics
        rows = []
        for i in range(len(v)):
            row: dict[str, Any] = {"key": names[int(jw.slot[i])] if names is not None else int(jw.slot[i]),
                                   "start_ms": int(jw.start_ms[i]), "end_ms": int(jw.end_ms[i])}  # fmt: skip
            for j, m in enumerate(metrics):
                row[m] = float(jw.value[i, j])
                row[f"z_{m}"] = round(float(v.z[i, j]), 4)
            row["missing"] = [m for j, m in enumerate(metrics) if jw.missing[i, j]]
            row["votes"] = int(v.flag[i].sum()) + int(self.config.model_votes and v.model_flag[i])
            row["model_score"] = None if np.isnan(v.model_score[i]) else float(v.model_score[i])
            row["alerting"] = bool(v.alerting[i])
            rows.append(row)
        return rows

    def health(self) -> dict[str, Any] | None:
        """The served model's health (``None`` without a registry model)."""
        return self.pipe.health()

    # -- per-key slices (a keyed runtime's state; see vigil.dataflow.capabilities.SlicedStep) ----------

    def export_slots(self, slots: np.ndarray) -> list[dict[str, Any]]:
        """Per host slot, everything its later windows depend on.

        Its join windows and carry-forward, every metric detector's slice, the model's (if it keeps any), k-of-n
        and the kept windows for revisions.
        """
        pipe = self.pipe
        parts: dict[str, list[Any]] = {"join": pipe.join.export_slots(slots), "kofn": pipe.kofn.export_slots(slots),
                                       "revisions": self.revisions.export_slots(slots)}  # fmt: skip
        per_det = [d.export_slots(slots) for d in pipe.detectors]
        parts["detectors"] = [[x[i] for x in per_det] for i in range(len(slots))]
        if pipe.model is not None and not _shared(pipe.model):
            parts["model"] = pipe.model.export_slots(slots)
        return [{name: v[i] for name, v in parts.items()} for i in range(len(slots))]

    def import_slots(self, slots: np.ndarray, states: list[dict[str, Any] | None]) -> None:
        """Load :meth:`export_slots` output into ``slots`` (``None``: a host never seen)."""
        pipe = self.pipe
        slots = np.asarray(slots, np.int64)
        if len(slots):
            pipe.reset_slots(slots)
        pipe.join.import_slots(slots, [None if st is None else st["join"] for st in states])
        pipe.kofn.import_slots(slots, [None if st is None else st["kofn"] for st in states])
        self.revisions.import_slots(slots, [None if st is None else st["revisions"] for st in states])
        for j, d in enumerate(pipe.detectors):
            d.import_slots(slots, [None if st is None else st["detectors"][j] for st in states])
        if pipe.model is not None and not _shared(pipe.model):
            pipe.model.import_slots(slots, [None if st is None else st["model"] for st in states])

    def twin(self) -> ServerStep:
        """The same step with no host, writing to the same sink and serving the same loaded model.

        A model that keeps no per-key state (the registry's served model, a fixed Isolation Forest) is shared by
        the twins, so it is loaded, and follows the registry, once per process.
        """
        model = self.pipe.model
        if model is not None and not _shared(model):
            model = model.fresh()
        return ServerStep(self.config, name=self.name, sink=self.sink, model=model, value_field=self.value_field,
                          metric_field=self.metric_field, metric_aliases=self.metric_aliases,
                          emit_windows=self.emit_windows, revise_windows=self.revisions.horizon)  # fmt: skip

    def slice_caveat(self) -> str | None:
        """None: a host's slice is all its later windows and alerts depend on."""
        return None

    def due_ms(self, slots: np.ndarray) -> np.ndarray:
        """When each host's oldest open window is scored."""
        return self.pipe.join.next_close_ms(slots)

    def reset_slots(self, slots: np.ndarray) -> None:
        """Forget hosts whose key slots the engine freed."""
        self.pipe.reset_slots(slots)

    def params(self) -> dict[str, Any]:
        """What identifies the step's state layout (a checkpoint of other params is not restored)."""
        return {"metrics": list(self.config.metrics), "window_s": self.config.window_s,
                "detector": self.config.detector, "model": self.pipe.model is not None,
                "aliases": self.metric_aliases, "revise_windows": self.revisions.horizon}  # fmt: skip

    def snapshot(self) -> dict[str, Any]:
        """Plain data (see :meth:`ServerPipeline.snapshot`)."""
        return {"pipe": self.pipe.snapshot(), "samples": self.samples, "windows": self.windows,
                "revisions": self.revisions.snapshot()}

    def restore(self, state: dict[str, Any]) -> None:
        """Load :meth:`snapshot` output."""
        self.pipe.restore(state["pipe"])
        self.samples, self.windows = int(state["samples"]), int(state["windows"])
        self.revisions.restore(state["revisions"])
