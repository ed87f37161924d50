"""The engine: the pipeline builder, the per-event operator seam, and the embedded runner.

A :class:`Pipeline` describes a source, event-time settings and named steps; the
:class:`EmbeddedRunner` executes it in one process with bounded queues (backpressure), micro-batches,
watermarks, late and dead-letter outputs. Logic (detectors, windows) lives in inner layers and is
shared with other runtimes.
"""

from vigil.engine.operators import Context, KeyedOperator, ValueHandle
from vigil.engine.pipeline import Pipeline
from vigil.engine.runner import EmbeddedRunner, RunStats

__all__ = ["Context", "EmbeddedRunner", "KeyedOperator", "Pipeline", "RunStats", "ValueHandle"]
