"""The knobs of a Flink job that the pipeline file doesn't set (the file says *what*, these say *how* on Flink).

They travel to the job as command-line arguments (:meth:`FlinkOptions.to_args` / :meth:`FlinkOptions.from_args`),
so ``vigil flink run`` and ``flink run -pym vigil.integrations.flink.job`` take the same ones.

Examples:
    >>> o = FlinkOptions(batch_window_ms=2000, mode="process")
    >>> FlinkOptions.from_args(o.to_args()) == o
    True
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, fields
from typing import Literal

from vigil.errors import ConfigError


@dataclass(frozen=True)
class FlinkOptions:
    """How the job runs on Flink.

    Attributes:
        batch_window_ms: the event-time window that makes one micro-batch per key bucket (the JVM groups the
            records, Python runs once per batch). Longer: fewer Python calls and state writes per event, later
            alerts (an alert waits for its batch window to close, plus the watermark's delay).
        buckets: key buckets (the Flink keys): each holds many keys' states and gets one batch per window.
            Rescaling is possible up to ``max_parallelism``; buckets should be several times the parallelism.
        max_parallelism: fixes Flink's key groups (a savepoint restores at any parallelism up to it).
        mode: PyFlink's execution mode: ``thread`` (CPython embedded in the TaskManager) or ``process``.
        bundle_size: process mode: records per bundle between the JVM and the Python worker.
        checkpoint_interval_ms: ``None``: the file's ``checkpoints.interval``, else 5 s.
        checkpoint_dir: where checkpoints go (``file:///...``); ``None``: the cluster's default.
        state_backend: ``hashmap`` or ``rocksdb``; ``None``: the cluster's default.
        key_from: ``value`` (parse the key from the record, in the JVM) or ``record`` (the Kafka record key,
            falling back to the value when a record has none: use when producers key records by entity).
        time_from: ``value`` (parse the event time from the record, in the JVM) or ``record`` (the Kafka record
            timestamp: use when producers set it to the event time).
        bounded: stop at the offsets that are the latest when the job starts (tests, benchmarks).
        txn_timeout_ms: the Kafka transaction timeout (at most the broker's ``transaction.max.timeout.ms``).
        idle_timeout_ms: a source partition silent this long stops holding the watermark back (processing
            time); ``None``: the file's ``event_time.idle_timeout``; 0: never idle. Replays of a backlog under
            backpressure want a long one (a partition looks idle while it waits).
        bootstrap: Kafka bootstrap servers for every topic of the job, instead of the file's (one file for
            several environments: ``127.0.0.1:9092`` on a laptop, ``kafka:29092`` inside a compose network).
        late_topic: the late events' topic when the file names none (default ``<source topic>-late``).
        job_name: Flink's name for the job (default ``vigil-<pipeline>``).
    """

    batch_window_ms: int = 1000
    buckets: int = 128
    max_parallelism: int = 128
    mode: Literal["thread", "process"] = "thread"
    bundle_size: int = 10_000
    checkpoint_interval_ms: int | None = None
    checkpoint_dir: str | None = None
    state_backend: Literal["hashmap", "rocksdb"] | None = None
    key_from: Literal["value", "record"] = "value"
    time_from: Literal["value", "record"] = "value"
    bounded: bool = False
    txn_timeout_ms: int = 600_000
    idle_timeout_ms: int | None = None
    bootstrap: str | None = None
    late_topic: str | None = None
    job_name: str | None = None

    def __post_init__(self) -> None:
        if self.batch_window_ms < 1:
            raise ConfigError("must be >= 1 ms", field="batch_window_ms", value=self.batch_window_ms)
        if not 1 <= self.buckets <= 32_768:
            raise ConfigError("must be in 1..32768", field="buckets", value=self.buckets)
        if self.mode not in ("thread", "process"):
            raise ConfigError("must be 'thread' or 'process'", field="mode", value=self.mode)
        if self.key_from not in ("value", "record") or self.time_from not in ("value", "record"):
            raise ConfigError("must be 'value' or 'record'", field="key_from/time_from",
                              value=(self.key_from, self.time_from))  # fmt: skip
        if self.state_backend not in (None, "hashmap", "rocksdb"):
            raise ConfigError("must be 'hashmap' or 'rocksdb'", field="state_backend", value=self.state_backend)

    def to_args(self) -> list[str]:
        """Command-line arguments for the job module (only those that differ from the defaults)."""
        out = []
        default = FlinkOptions()
        for f in fields(self):
            v = getattr(self, f.name)
            if v == getattr(default, f.name):
                continue
            flag = "--" + f.name.replace("_", "-")
            if isinstance(v, bool):
                out.append(flag if v else f"--no-{f.name.replace('_', '-')}")
            else:
                out += [flag, str(v)]
        return out

    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        """Add one ``--flag`` per option to an argument parser."""
        for f in fields(FlinkOptions):
            flag = "--" + f.name.replace("_", "-")
            default = getattr(FlinkOptions(), f.name)
            if isinstance(default, bool):
                p.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=default)
            elif f.name in ("checkpoint_interval_ms", "idle_timeout_ms"):
                p.add_argument(flag, dest=f.name, type=int, default=default)
            else:
                p.add_argument(flag, dest=f.name, type=type(default) if default is not None else str, default=default)

    @classmethod
    def from_args(cls, argv: list[str]) -> FlinkOptions:
        """Parse :meth:`to_args` output (unknown arguments are errors)."""
        p = argparse.ArgumentParser(add_help=False)
        cls.add_arguments(p)
        return cls.from_namespace(p.parse_args(argv))

    @classmethod
    def from_namespace(cls, ns: argparse.Namespace) -> FlinkOptions:
        """The options from a parsed namespace (other attributes ignored)."""
        return cls(**{f.name: getattr(ns, f.name) for f in fields(cls)})

    def as_dict(self) -> dict[str, object]:
        """Plain data (for reports)."""
        return asdict(self)
