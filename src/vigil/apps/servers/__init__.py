"""Multi-metric server anomaly detection: the brief's intermediate project.

Long-form samples (one row per host x metric x sample, sorted by arrival) go through three stages:

1. :class:`MultiMetricJoin` — per host and tumbling event-time window (``window_ms``, 10 s by default), one
   feature vector: the mean of each metric (and its max). Windows close on the watermark (Flink's rule, as
   in :class:`~vigil.eventtime.windows.WindowAggregator`: a sample is late when its window's
   ``end_ms + allowed_lateness_ms <= watermark`` in force before it; late samples are returned, not
   aggregated). State is one dense ``[host slot, metric]`` accumulator (sum, count, max) per open window;
   a micro-batch is folded in with one ``bincount`` over ``(window, slot, metric)``, so the join is
   vectorized (there are only ``max_delay / window + 1`` open windows at a time).

   **Missing metrics.** A vector is emitted for every host with at least one sample in the window (a
   silent host emits nothing: absence is a heartbeat rule's job). A metric without samples is marked in
   ``missing`` and imputed: the host's last value of that metric if it is at most ``carry_windows``
   windows old (last value carried forward), else the host's running mean of that metric (mean of its
   observed window means), else NaN (never seen). Imputed cells feed the global model (which needs a
   complete row) but **not** the per-metric detectors: a carried value is not evidence, so they get NaN
   (not scored, not learned) and cannot vote.

2. **Per-metric detectors** — one keyed detector per metric (slot = host), by default
   :class:`~vigil.detectors.EWZScore` on the window mean (half-life 30 windows, ``protect`` so an incident
   does not become the baseline). Optionally one **global model**: an
   :class:`~vigil.detectors.IsolationForestDetector` over the per-metric signed z-scores (clipped to
   +-``z_clip``), trained offline on normal windows (:func:`train_global_model`). z-scores, not raw
   values, because hosts differ in scale: the model learns the fleet's *joint* shape of deviations.

3. :class:`KOfN` — per host and window, ``alerting`` when at least ``k`` of the ``n`` voters flag (the
   per-metric detectors, plus the model when ``model_votes``). An alert **fires** when a host starts
   alerting after ``rearm_windows`` windows without alerting (one alert per episode, as
   :class:`~vigil.detectors.VelocityRule` fires once per burst). The alert lists every metric's value,
   z and calibrated score and the model's score.

Everything runs on numpy arrays; Python loops only over closed windows (a few per micro-batch) and over
fired alerts. :func:`run_server_pipeline` runs the stages over columnar batches; :class:`ServerPipeline`
is the streaming object (``process`` a micro-batch, ``flush`` at the end); :class:`ServerStep` puts it in
the embedded engine (``Pipeline.apply``, or ``kind: servers`` in a YAML pipeline), where the engine's
watermarks, key index, checkpoints and sinks drive it, and the global model is the registry's promoted
version, followed live.

Modules: ``join`` (the windowed join), ``kofn`` (the aggregator), ``pipeline`` (config and the streaming
object), ``run`` (batch runs and offline training), ``step`` (the engine operator).

Examples:
    >>> from vigil.io.generators.fleet import FleetSpec, simulate_fleet
    >>> cols = simulate_fleet(FleetSpec(hosts=4, days=0.2, seed=2))
    >>> run = run_server_pipeline(cols, ServerConfig(window_s=60))
    >>> run.windows.joined.value.shape[1], int(run.windows.joined.slot.max()) <= 3, run.samples == len(cols["value"])
    (6, True, True)
"""

from vigil.apps.servers.join import JoinedWindows, MultiMetricJoin
from vigil.apps.servers.kofn import KOfN
from vigil.apps.servers.pipeline import DEFAULT_PER_METRIC, ServerConfig, ServerPipeline, WindowVerdicts
from vigil.apps.servers.run import ServerRun, run_server_pipeline, train_global_model
from vigil.apps.servers.step import ServerStep

__all__ = ["DEFAULT_PER_METRIC", "KOfN", "JoinedWindows", "MultiMetricJoin", "ServerConfig", "ServerPipeline",
           "ServerRun", "ServerStep", "WindowVerdicts", "run_server_pipeline", "train_global_model"]  # fmt: skip
