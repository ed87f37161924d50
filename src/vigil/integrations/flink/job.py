"""A pipeline file as a PyFlink job: ``flink run -pym vigil.integrations.flink.job --pipeline FILE [options]``.

``vigil flink run FILE`` submits this module; it also runs as is under the Flink Kubernetes Operator's
``PythonDriver`` or ``flink run -py``. The job, one plan:

1. **Flink SQL up to the micro-batch** (:mod:`.sql`): the KafkaSource reads raw records with their partition,
   offset and timestamp; the event time and a bounded-out-of-orderness watermark come from the file's
   ``event_time`` (inside the source, per partition; ``idle_timeout`` as the source idle timeout); each record gets
   a key bucket; on-time records are grouped per (bucket, event-time batch window), records behind the
   watermark pass one by one.
2. **One KeyedProcessFunction** (:class:`VigilBatchFunction`) keyed by bucket runs the pipeline's shared steps
   over each batch (:class:`~vigil.integrations.flink.runner.TaskRunner`): each key's state lives in Flink keyed
   state (``MapState[key, bytes]``, the steps' ``export_slots`` in the snapshot codec), window closing and
   key expiry run on event-time timers, late events go to the late output, undecodable records to the
   dead-letter output with their reason.
3. **Kafka sinks** per output (alerts, late, dead letters, step outputs): Flink's transactional KafkaSink
   (exactly-once, committed with each checkpoint) when the file says ``delivery: exactly-once``.

Checkpoints: the file's ``checkpoints.interval`` (else 5 s), exactly-once mode, on the cluster's state backend
unless ``--state-backend`` / ``--checkpoint-dir`` say otherwise; ``max_parallelism`` fixes the key groups so a
savepoint restores at another parallelism. Every operator the job adds has a fixed uid.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from vigil.integrations.flink.options import FlinkOptions
from vigil.integrations.flink.spec import JobSpec, load_job, with_bootstrap

ROLES_ORDER = ("alerts", "late", "dead_letters")


def roles_of(job: JobSpec) -> list[str]:
    """The job's output tables in order: the index of a role is the ``t`` column of the function's rows."""
    return [o.role for o in job.outputs]


class _MapStore:
    """A bucket's ``MapState[str, bytes]`` as :class:`~vigil.integrations.flink.runner.KeyedStore`."""

    def __init__(self, state: Any) -> None:
        self.state = state

    def get(self, key: str) -> bytes | None:
        try:
            v = self.state.get(key)
        except TypeError:  # thread mode's byte-array converter fails on a missing value (PyFlink 2.2)
            return None
        return None if v is None else bytes(v)

    def put(self, key: str, blob: bytes) -> None:
        self.state.put(key, blob)

    def remove(self, key: str) -> None:
        self.state.remove(key)

    def items(self) -> list[tuple[str, bytes]]:
        return [(k, bytes(v)) for k, v in self.state.items()]


def _function_class() -> Any:
    """The KeyedProcessFunction (defined here so that importing this module needs no pyflink)."""
    from pyflink.common import Row, Types
    from pyflink.datastream import KeyedProcessFunction, RuntimeContext
    from pyflink.datastream.state import MapStateDescriptor

    class VigilBatchFunction(KeyedProcessFunction):  # type: ignore[misc]
        """One bucket's micro-batches through the pipeline's steps (see the module docstring)."""

        def __init__(self, yaml_text: str, base_dir: str, origin: str, late_topic: str | None,
                     roles: list[str]) -> None:  # fmt: skip
            self.yaml_text, self.base_dir, self.origin = yaml_text, base_dir, origin
            self.late_topic, self.roles = late_topic, roles
            self.runner: Any = None

        def open(self, ctx: RuntimeContext) -> None:
            from vigil.integrations.flink.runner import TaskRunner
            from vigil.integrations.flink.spec import job_from_text

            job = job_from_text(self.yaml_text, base_dir=self.base_dir, origin=self.origin, late_topic=self.late_topic)
            self.runner = TaskRunner(job, self.roles)
            self.state = ctx.get_map_state(MapStateDescriptor("vigil-keys", Types.STRING(), Types.PICKLED_BYTE_ARRAY()))

        def close(self) -> None:
            if self.runner is not None:
                self.runner.close()

        def _emit(self, result: tuple[list[Any], int], ctx: Any) -> Any:
            from vigil.integrations.flink.runner import NEVER

            recs, wake = result
            if wake != NEVER:
                ctx.timer_service().register_event_time_timer(wake)
            for t, r in recs:
                yield Row(t, *r)

        def process_element(self, row: Any, ctx: Any) -> Any:
            wm = ctx.timer_service().current_watermark()
            result = self.runner.on_batch(int(row[0]), bool(row[1]), int(row[2]), row[4], _MapStore(self.state), wm)
            yield from self._emit(result, ctx)

        def on_timer(self, timestamp: int, ctx: Any) -> Any:
            wm = ctx.timer_service().current_watermark()
            result = self.runner.on_timer(int(ctx.get_current_key()), int(timestamp), _MapStore(self.state), wm)
            yield from self._emit(result, ctx)

    return VigilBatchFunction


def out_type() -> Any:
    """The Row type of the function's output: the table index, then key, value and five header values."""
    from pyflink.common import Types

    from vigil.integrations.flink.sql import OUT_FIELDS

    return Types.ROW_NAMED(["t", *OUT_FIELDS], [Types.INT()] + [Types.STRING()] * len(OUT_FIELDS))


def build(env: Any, job: JobSpec, opt: FlinkOptions) -> Any:
    """Add the pipeline's job to ``env`` (a ``StreamExecutionEnvironment``); returns the statement set attached."""
    from pyflink.common import Types
    from pyflink.datastream import CheckpointingMode
    from pyflink.table import StreamTableEnvironment

    from vigil.integrations.flink import sql

    env.set_max_parallelism(opt.max_parallelism)
    interval = opt.checkpoint_interval_ms or job.checkpoint_interval_ms or 5000
    env.enable_checkpointing(interval, CheckpointingMode.EXACTLY_ONCE)
    t_env = StreamTableEnvironment.create(env)
    conf = t_env.get_config()
    conf.set("python.execution-mode", opt.mode)
    if opt.mode == "process":
        conf.set("python.fn-execution.bundle.size", str(opt.bundle_size))
    if opt.state_backend is not None:
        conf.set("state.backend.type", opt.state_backend)
    if opt.checkpoint_dir is not None:
        conf.set("execution.checkpointing.dir", opt.checkpoint_dir)
    # Idleness is processing time: a partition that is merely slow (a subtask starting late, backpressure) looks
    # idle, the watermark moves on without it, and its records reach the batching window after it fired, where
    # Flink drops them silently. A bounded run (a replay) has no silent partitions: no idleness unless asked.
    file_idle = None if opt.bounded or job.source.stop_at_end else job.event_time.idle_timeout_ms
    idle = opt.idle_timeout_ms if opt.idle_timeout_ms is not None else file_idle
    if idle:
        conf.set("table.exec.source.idle-timeout", f"{idle} ms")
    t_env.execute_sql(sql.source_ddl(job, opt))
    t_env.execute_sql(sql.rows_view(job, opt))
    batches = t_env.sql_query(sql.batches_query(opt))
    roles = roles_of(job)
    fn = _function_class()(job.yaml_text, job.base_dir, job.origin, opt.late_topic, roles)
    rows = t_env.to_data_stream(batches)
    out = (rows.key_by(lambda r: r[0], key_type=Types.INT())
           .process(fn, output_type=out_type()).uid("vigil-steps").name(f"vigil-{job.name}"))  # fmt: skip
    t_env.create_temporary_view("vigil_out", t_env.from_data_stream(out))
    stmts = t_env.create_statement_set()
    for i, o in enumerate(job.outputs):
        t_env.execute_sql(sql.sink_ddl(f"vigil_sink_{i}", o, job, opt))
        t_env.create_temporary_view(f"vigil_out_{i}", t_env.sql_query(f"SELECT * FROM vigil_out WHERE t = {i}"))
        stmts.add_insert_sql(sql.insert_sql(f"vigil_sink_{i}", o, f"vigil_out_{i}"))
    stmts.attach_as_datastream()
    return stmts


def parser() -> argparse.ArgumentParser:
    """The job module's arguments: ``--pipeline FILE`` and every :class:`FlinkOptions` flag."""
    p = argparse.ArgumentParser(prog="vigil.integrations.flink.job", description=__doc__.split("\n\n")[0])
    p.add_argument("--pipeline", required=True, help="the pipeline file (the same YAML `vigil run` runs)")
    FlinkOptions.add_arguments(p)
    return p


def main(argv: list[str] | None = None) -> int:
    """Build the job from the arguments and execute it.

    Blocks while the cluster runs it when submitted with ``flink run`` (``-d`` detaches).
    """
    from pyflink.datastream import StreamExecutionEnvironment

    args = parser().parse_args(sys.argv[1:] if argv is None else argv)
    opt = FlinkOptions.from_namespace(args)
    job = load_job(args.pipeline, late_topic=opt.late_topic)
    if opt.bootstrap:
        job = with_bootstrap(job, opt.bootstrap)
    env = StreamExecutionEnvironment.get_execution_environment()
    jar = os.environ.get("VIGIL_FLINK_CONNECTOR_JAR")  # a local run: `flink run -j` passes it otherwise
    if jar:
        env.add_jars(Path(jar).resolve().as_uri())
    if os.environ.get("VIGIL_FLINK_PARALLELISM"):
        env.set_parallelism(int(os.environ["VIGIL_FLINK_PARALLELISM"]))
    build(env, job, opt)
    env.execute(opt.job_name or f"vigil-{job.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
