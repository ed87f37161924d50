"""The embedded runtime: one process, bounded queues, micro-batches, checkpoints.

It runs a :class:`~vigil.dataflow.pipeline.Pipeline` (the runtime-neutral description in
:mod:`vigil.dataflow`) with three threads — source, engine loop, sinks — and checkpoint orchestration.
What happens to a batch is the steps' logic, shared with the Flink runtime.
"""

from vigil.engine.runner import EmbeddedRunner, RunStats

__all__ = ["EmbeddedRunner", "RunStats"]
