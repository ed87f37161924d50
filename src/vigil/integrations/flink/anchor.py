"""The benchmark's anchor: a plain per-event PyFlink job doing an exponentially weighted z-score of ``amount``.

What one writes first with PyFlink's DataStream API: KafkaSource (the record timestamp as event time, a bounded
out-of-orderness watermark), a ``map`` that parses each JSON record, ``key_by(user)``, and a
``KeyedProcessFunction`` that reads and writes the key's ``ValueState`` for every event and emits an alert when
``|z| > 3``; alerts to a transactional KafkaSink. One Python call and one state access per event: the cost the
Vigil job's micro-batches avoid (``vigil bench flink`` compares the two per core).

    flink run -pym vigil.integrations.flink.anchor --bootstrap HOST:PORT --topic T --alerts A [--bounded]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any


def build(env: Any, args: argparse.Namespace) -> None:
    """Add the anchor job to ``env``."""
    from pyflink.common import Duration, Types, WatermarkStrategy
    from pyflink.common.serialization import SimpleStringSchema
    from pyflink.datastream import CheckpointingMode, KeyedProcessFunction, RuntimeContext
    from pyflink.datastream.connectors.base import DeliveryGuarantee
    from pyflink.datastream.connectors.kafka import (
        KafkaOffsetsInitializer,
        KafkaRecordSerializationSchema,
        KafkaSink,
        KafkaSource,
    )
    from pyflink.datastream.state import ValueStateDescriptor

    env.enable_checkpointing(args.checkpoint_ms, CheckpointingMode.EXACTLY_ONCE)
    src = (
        KafkaSource.builder()
        .set_bootstrap_servers(args.bootstrap)
        .set_topics(args.topic)
        .set_group_id(args.group)
        .set_starting_offsets(KafkaOffsetsInitializer.earliest())
        .set_value_only_deserializer(SimpleStringSchema())
    )
    if args.bounded:
        src = src.set_bounded(KafkaOffsetsInitializer.latest())
    wm = WatermarkStrategy.for_bounded_out_of_orderness(Duration.of_millis(2000))
    raw = env.from_source(src.build(), wm, "kafka-source").uid("kafka-source")

    class PerEventZ(KeyedProcessFunction):  # type: ignore[misc]
        def open(self, ctx: RuntimeContext) -> None:
            self.state = ctx.get_state(ValueStateDescriptor("ew", Types.PICKLED_BYTE_ARRAY()))

        def process_element(self, value: Any, ctx: Any) -> Any:
            user, ts, x = value
            st = self.state.value()
            n, mean, var = st if st is not None else (0, 0.0, 0.0)
            if n >= 10 and var > 0:
                z = (x - mean) / math.sqrt(var)
                if abs(z) > 3:
                    yield json.dumps({"key": user, "ts": ts, "value": x, "z": z})
            alpha = 0.02
            d = x - mean
            mean += alpha * d
            var = (1 - alpha) * (var + alpha * d * d)
            self.state.update((n + 1, mean, var))

    parsed = raw.map(
        lambda s: (lambda r: (str(r["user"]), int(r["ts"]), float(r["amount"])))(json.loads(s)),
        output_type=Types.TUPLE([Types.STRING(), Types.LONG(), Types.DOUBLE()]),
    ).uid("parse")
    alerts = (
        parsed.key_by(lambda e: e[0], key_type=Types.STRING())
        .process(PerEventZ(), output_type=Types.STRING())
        .uid("zscore")
        .name("zscore-per-event")
    )
    sink = (
        KafkaSink.builder()
        .set_bootstrap_servers(args.bootstrap)
        .set_record_serializer(
            KafkaRecordSerializationSchema.builder()
            .set_topic(args.alerts)
            .set_value_serialization_schema(SimpleStringSchema())
            .build()
        )
        .set_delivery_guarantee(DeliveryGuarantee.EXACTLY_ONCE)
        .set_transactional_id_prefix(f"vigil-anchor-{args.alerts}")
        .set_property("transaction.timeout.ms", "600000")
        .build()
    )
    alerts.sink_to(sink).uid("alerts-sink").name("alerts-sink")


def main(argv: list[str] | None = None) -> int:
    """Build and execute the anchor job."""
    from pyflink.datastream import StreamExecutionEnvironment

    p = argparse.ArgumentParser(prog="vigil.integrations.flink.anchor", description=__doc__.split("\n\n")[0])
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--alerts", required=True)
    p.add_argument("--group", default="vigil-anchor")
    p.add_argument("--bounded", action="store_true")
    p.add_argument("--checkpoint-ms", type=int, default=5000)
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    env = StreamExecutionEnvironment.get_execution_environment()
    build(env, args)
    env.execute("vigil-anchor-per-event")
    return 0


if __name__ == "__main__":
    sys.exit(main())
