"""Vigil's self-monitoring: Prometheus metrics of a run, self-watch rules and input drift.

- :mod:`vigil.ops.metrics`: :class:`PipelineMetrics` (a registry per pipeline, read at scrape time) and
  :func:`serve` (the ``/metrics`` endpoint that ``vigil run --metrics-port`` starts).
- :mod:`vigil.ops.selfwatch`: rules over the pipeline's own health (stalled watermark, growing lag, failing
  checkpoints, dead-letter rate, model fallback, stale model, input drift) that raise ordinary alerts.
- :mod:`vigil.ops.drift`: PSI per feature between a model's training data and recent inputs.

The Grafana dashboard over these metrics is ``deploy/grafana/vigil-dashboard.json``.
"""

from vigil.ops.drift import DEFAULT_PSI_THRESHOLD, DriftMonitor, psi, quantile_bins
from vigil.ops.metrics import PipelineMetrics, serve
from vigil.ops.selfwatch import Sample, SelfWatch, SelfWatchConfig

__all__ = [
    "DEFAULT_PSI_THRESHOLD",
    "DriftMonitor",
    "PipelineMetrics",
    "Sample",
    "SelfWatch",
    "SelfWatchConfig",
    "psi",
    "quantile_bins",
    "serve",
]
