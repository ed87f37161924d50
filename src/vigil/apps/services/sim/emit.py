"""Where the simulator's windows go: files, an OTLP/HTTP endpoint, Kafka, or memory (numpy columns).

Every sink takes :class:`~.simulator.Window` objects (``write``) and is closed once (``close``):

* :class:`FileSink` writes to a directory in one ``format``:

  - ``otlp-proto``: ``traces.otlp`` and ``metrics.otlp``, each a sequence of ``ExportTraceServiceRequest`` /
    ``ExportMetricsServiceRequest`` messages, each preceded by its length as a 4-byte big-endian unsigned
    integer: the framing of the OpenTelemetry Collector's file exporter with ``format: proto``
    (``otelcol`` can replay them with the ``otlpjsonfile``/file receivers; :func:`read_frames` reads them);
  - ``jsonl``: ``traces.jsonl`` and ``metrics.jsonl``, one OTLP/JSON request per line (the file exporter's
    ``format: json``);
  - ``columns``: ``spans.npz`` and ``metrics.npz`` (the columns, concatenated) and ``names.json`` (the code
    tables of the integer columns); the fast path for notebooks, tests and benchmarks.

  Each format also writes ``changes.jsonl``: the deploys and restarts as they happened (observable change
  events, like Kubernetes events: no ground truth in them).
* :class:`OtlpHttpSink` POSTs protobuf requests to ``<url>/v1/traces`` and ``<url>/v1/metrics`` (OTLP/HTTP,
  ``Content-Type: application/x-protobuf``), retrying 429/502/503/504 a few times.
* :class:`KafkaSink` produces one ``ExportTraceServiceRequest`` per message to ``otlp_spans`` and one
  ``ExportMetricsServiceRequest`` per message to ``otlp_metrics``: the OpenTelemetry Collector Kafka
  exporter's defaults with ``encoding: otlp_proto``, which its Kafka receiver reads back.
* :class:`MemorySink` keeps the windows' columns (``spans()`` / ``metrics()`` concatenate them).

Requests hold at most ``max_spans`` spans (8192, the Collector batch processor's default batch; 4096 for
Kafka, which keeps a message under the broker's default 1 MB limit even before compression).
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Callable, Iterator
from typing import IO, Any

import numpy as np

from vigil.apps.services.sim.otlp import metrics_json, metrics_request, trace_requests, traces_json
from vigil.apps.services.sim.simulator import ServiceSimulator, Window

__all__ = ["FORMATS", "FileSink", "KafkaSink", "MemorySink", "OtlpHttpSink", "concat", "read_frames"]

FORMATS = ("otlp-proto", "jsonl", "columns")


def concat(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Column dicts joined end to end."""
    if not parts:
        return {}
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def read_frames(path: str) -> Iterator[bytes]:
    """The messages of a 4-byte big-endian length-delimited file (``traces.otlp``, ``metrics.otlp``)."""
    with open(path, "rb") as f:
        while True:
            head = f.read(4)
            if not head:
                return
            if len(head) < 4:
                raise ValueError(f"{path}: truncated length prefix at byte {f.tell() - len(head)}")
            (n,) = struct.unpack(">I", head)
            body = f.read(n)
            if len(body) < n:
                raise ValueError(f"{path}: truncated message ({len(body)} of {n} bytes)")
            yield body


class _Encoder:
    """Window -> OTLP requests, with the template cache kept across windows."""

    def __init__(self, sim: ServiceSimulator, max_spans: int) -> None:
        self.sim, self.max_spans = sim, max_spans
        self.kinds = [d.kind for d in sim.topology.defs]
        self.cache: dict[Any, Any] = {}

    def traces(self, w: Window) -> Iterator[bytes]:
        yield from trace_requests(w.spans, self.sim.names, self.kinds, self.max_spans, self.cache)

    def traces_json(self, w: Window) -> Iterator[bytes]:
        n = len(w.spans["span_id"])
        for a in range(0, n, self.max_spans):
            yield traces_json(w.spans, np.arange(a, min(n, a + self.max_spans)), self.sim.names, self.kinds,
                              self.cache)  # fmt: skip

    def metrics(self, w: Window) -> bytes:
        """Every metric row so far, as one set of columns."""
        versions = [self.sim.world.stack[s][-1] for s in range(len(self.sim.topology.services))]
        return metrics_request(w.metrics, self.sim.names, versions, self.sim.spec.metric_step_s * 1000)


class MemorySink:
    """Keeps every window (``spans()`` / ``metrics()`` join their columns)."""

    def __init__(self) -> None:
        self.windows: list[Window] = []

    def write(self, w: Window) -> None:
        """Take one window."""
        self.windows.append(w)

    def spans(self) -> dict[str, np.ndarray]:
        """Every span so far, as one set of columns."""
        return concat([w.spans for w in self.windows])

    def metrics(self) -> dict[str, np.ndarray]:
        """Every metric row so far, as one set of columns."""
        return concat([w.metrics for w in self.windows])

    def close(self) -> None:
        """Finish: flush and close what is open."""
        pass


class FileSink:
    """Windows to files in ``directory`` (module docstring); ``close`` finishes them."""

    def __init__(self, sim: ServiceSimulator, directory: str, fmt: str = "otlp-proto", max_spans: int = 8192) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"`format` must be one of {', '.join(FORMATS)}; got {fmt!r}")
        os.makedirs(directory, exist_ok=True)
        self.sim, self.dir, self.fmt = sim, directory, fmt
        self.enc = _Encoder(sim, max_spans)
        self.mem = MemorySink() if fmt == "columns" else None
        self.files: dict[str, IO[bytes]] = {}
        if fmt != "columns":
            ext = "otlp" if fmt == "otlp-proto" else "jsonl"
            self.files = {k: open(os.path.join(directory, f"{k}.{ext}"), "wb") for k in ("traces", "metrics")}
        self.changes = open(os.path.join(directory, "changes.jsonl"), "w", encoding="utf-8")

    def _frame(self, f: IO[bytes], msg: bytes) -> None:
        if self.fmt == "otlp-proto":
            f.write(struct.pack(">I", len(msg)))
            f.write(msg)
        else:
            f.write(msg + b"\n")

    def write(self, w: Window) -> None:
        """Take one window."""
        for c in w.changes:
            self.changes.write(json.dumps(c) + "\n")
        if self.mem is not None:
            self.mem.write(w)
            return
        for req in self.enc.traces(w) if self.fmt == "otlp-proto" else self.enc.traces_json(w):
            self._frame(self.files["traces"], req)
        m = self.enc.metrics(w)
        self._frame(self.files["metrics"], m if self.fmt == "otlp-proto" else metrics_json(m))

    def close(self) -> None:
        """Finish: flush and close what is open."""
        self.changes.close()
        for f in self.files.values():
            f.close()
        if self.mem is not None:
            np.savez(os.path.join(self.dir, "spans.npz"), **self.mem.spans())  # type: ignore[arg-type]
            np.savez(os.path.join(self.dir, "metrics.npz"), **self.mem.metrics())  # type: ignore[arg-type]
            with open(os.path.join(self.dir, "names.json"), "w", encoding="utf-8") as out:
                json.dump({k: list(v) for k, v in self.sim.names.items()}, out, indent=1)


class OtlpHttpSink:
    """Windows POSTed to an OTLP/HTTP receiver (``url`` without the ``/v1/...`` path)."""

    def __init__(self, sim: ServiceSimulator, url: str, max_spans: int = 8192, timeout_s: float = 10.0,
                 client: Any = None, sleep: Callable[[float], None] | None = None) -> None:  # fmt: skip
        import time

        import httpx

        self.sleep = sleep or time.sleep  # back-off between retries: I/O at the edge, not simulation logic
        self.url = url.rstrip("/")
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"`otlp` must be an http(s):// URL; got {url!r}")
        self.enc = _Encoder(sim, max_spans)
        self.client = client or httpx.Client(timeout=timeout_s)
        self.requests = 0

    def _post(self, path: str, body: bytes) -> None:
        for attempt in range(4):
            r = self.client.post(self.url + path, content=body, headers={"Content-Type": "application/x-protobuf"})
            if r.status_code < 300:
                self.requests += 1
                return
            if r.status_code not in (429, 502, 503, 504) or attempt == 3:
                raise RuntimeError(f"POST {self.url + path}: HTTP {r.status_code} {r.text[:200]}")
            self.sleep(0.2 * 2**attempt)

    def write(self, w: Window) -> None:
        """Take one window."""
        for req in self.enc.traces(w):
            self._post("/v1/traces", req)
        self._post("/v1/metrics", self.enc.metrics(w))

    def close(self) -> None:
        """Finish: flush and close what is open."""
        self.client.close()


class KafkaSink:
    """Windows to Kafka, one OTLP request per message (module docstring)."""

    def __init__(self, sim: ServiceSimulator, bootstrap: str, traces_topic: str = "otlp_spans",
                 metrics_topic: str = "otlp_metrics", max_spans: int = 4096,
                 producer_config: dict[str, Any] | None = None) -> None:  # fmt: skip
        from confluent_kafka import Producer

        from vigil.io.kafka import ErrorLog, client_config

        self.enc = _Encoder(sim, max_spans)
        self.topics = (traces_topic, metrics_topic)
        self.errors = ErrorLog("producer `otlp`")
        base = {"linger.ms": 20, "compression.type": "lz4", "message.max.bytes": 1_000_000,
                "client.id": "vigil-services-sim"}  # fmt: skip
        self.producer = Producer(client_config(bootstrap, base, producer_config, self.errors))
        self.failed: list[str] = []
        self.messages = 0

    def _on_delivery(self, err: Any, _msg: Any) -> None:
        if err is not None:
            self.failed.append(str(err))

    def _produce(self, topic: str, value: bytes) -> None:
        while True:
            try:
                self.producer.produce(topic, value=value, on_delivery=self._on_delivery)
                break
            except BufferError:  # the local queue is full: let librdkafka send some
                self.producer.poll(0.1)
        self.producer.poll(0)
        self.messages += 1

    def write(self, w: Window) -> None:
        """Take one window."""
        for req in self.enc.traces(w):
            self._produce(self.topics[0], req)
        self._produce(self.topics[1], self.enc.metrics(w))

    def close(self) -> None:
        """Finish: flush and close what is open."""
        left = self.producer.flush(60)
        if left or self.failed:
            raise RuntimeError(f"Kafka: {left} messages not delivered; errors: {self.failed[:3]}")
