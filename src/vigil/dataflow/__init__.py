"""The runtime-neutral core between the detectors and the runtimes.

- :mod:`~vigil.dataflow.pipeline`: the pipeline description (source, event time, steps, sinks); no ``run()``.
- :mod:`~vigil.dataflow.steps`: the :class:`Step` protocol and the detect, window, apply and process steps.
- :mod:`~vigil.dataflow.outputs`: verdicts → alerts, score, late and window rows, model-health alerts.
- :mod:`~vigil.dataflow.operators`: the per-event :class:`KeyedOperator` seam (PyFlink's shape).
- :mod:`~vigil.dataflow.capabilities`: optional roles of sources, sinks and steps, as named protocols.

Both runtimes — the embedded engine (:mod:`vigil.engine`) and Flink (:mod:`vigil.integrations.flink`) —
run the same steps with the same outputs; only threads, queues, state backends and transport differ.
"""

from vigil.dataflow.operators import Context, KeyedOperator, ValueHandle
from vigil.dataflow.outputs import CollectingOutputs, Outputs
from vigil.dataflow.pipeline import Batching, EventTime, Pipeline
from vigil.dataflow.steps import ApplyStep, DetectStep, ProcessStep, Step, WindowStep

__all__ = ["ApplyStep", "Batching", "CollectingOutputs", "Context", "DetectStep", "EventTime", "KeyedOperator",
           "Outputs", "Pipeline", "ProcessStep", "Step", "ValueHandle", "WindowStep"]  # fmt: skip
