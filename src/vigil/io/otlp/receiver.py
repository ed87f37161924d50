"""The OTLP/HTTP receiver (``/v1/traces``, ``/v1/metrics``) and the ``otlp`` source over it.

:class:`OtlpHttpReceiver` is a small threaded HTTP server (the standard library's, no framework) that answers
as the OTLP/HTTP specification asks: protobuf (``application/x-protobuf``) or OTLP/JSON (``application/json``),
optionally gzip-compressed (``Content-Encoding: gzip``); ``200`` with an ``Export*ServiceResponse`` (its
``partial_success`` counts the spans or points that were dead letters); ``400`` when the body is not a request,
with a ``google.rpc.Status`` whose message says why, and the Vigil reason code in the ``X-Vigil-Reason`` header;
``413`` over ``max_body_bytes`` (before or after gunzip — a gzip bomb is cut off), ``411`` without a
``Content-Length``, ``415`` for another content type or encoding, ``404`` for another path, ``503`` with
``Retry-After`` when the engine is behind (the queue of decoded requests is full: the sender retries, nothing is
lost). Any other failure is a ``500`` for that request; the server keeps serving.

Decoding happens in the request's thread, so a sender learns at once if its request was refused. Accepted
requests wait, decoded, in a bounded queue, which :class:`OtlpHttpSource`'s reader drains in micro-batches.

Delivery: a request is acknowledged once queued. A crash loses the queued requests not yet checkpointed
(at most ``queue_requests``): an HTTP push can't be replayed. Put the Collector's Kafka exporter in front
(``OTLP → Collector → Kafka → Vigil``) where that matters: the Kafka path resumes from checkpointed offsets.

The receiver serves both paths whatever the source's ``signal``: requests of the other signal are read,
checked and counted (``ignored``) but not passed on, so one SDK or Collector can send both.
"""

from __future__ import annotations

import queue
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from vigil.io.base import DeadLetter, Records
from vigil.io.otlp.metrics import MetricDecoder, json_to_proto
from vigil.io.otlp.traces import OtlpError, TraceDecoder, concat_records

__all__ = ["OtlpHttpReceiver", "OtlpHttpSource", "slice_records"]

PROTOBUF, JSON = "application/x-protobuf", "application/json"
_STATUS_CODES = {400: 3, 411: 3, 413: 8, 415: 3, 404: 5, 503: 14, 500: 13}  # google.rpc.Code per HTTP status


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _ld(field: int, payload: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def _status(code: int, message: str) -> bytes:
    """``google.rpc.Status`` protobuf: code (1), message (2)."""
    return _varint(1 << 3) + _varint(code) + _ld(2, message.encode())


def _partial(rejected: int, message: str) -> bytes:
    """``Export{Trace,Metrics}ServiceResponse`` with ``partial_success`` (1) {rejected (1), error_message (2)}."""
    if not rejected:
        return b""
    return _ld(1, _varint(1 << 3) + _varint(rejected) + _ld(2, message.encode()))


def slice_records(r: Records, a: int, b: int) -> Records:
    """Rows ``a:b`` of ``r`` (no dead letters)."""
    return Records(r.keys[a:b], r.ts_ms[a:b], {k: v[a:b] for k, v in r.cols.items()},
                   {k: v[a:b] for k, v in r.extra.items()})  # fmt: skip


class OtlpHttpReceiver:
    """OTLP/HTTP on ``host:port`` (port 0: a free one, see :attr:`port`); see the module docstring.

    Args:
        traces / metrics: the decoders of each signal.
        signal: which signal's rows are queued for the pipeline (``traces`` or ``metrics``).
        max_body_bytes: cap of a request body, compressed and uncompressed (413 above it).
        queue_requests / queue_rows: decoded requests, and their rows, waiting for the engine (503 beyond either).
        name: the source name on dead letters.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 4318, *, traces: TraceDecoder | None = None,
                 metrics: MetricDecoder | None = None, signal: str = "traces", max_body_bytes: int = 16 << 20,
                 queue_requests: int = 256, queue_rows: int = 1_000_000, name: str = "otlp") -> None:  # fmt: skip
        if signal not in ("traces", "metrics"):
            raise ValueError(f"`signal` must be traces or metrics; got {signal!r}")
        self.traces, self.metrics = traces or TraceDecoder(), metrics or MetricDecoder()
        self.signal, self.max_body_bytes, self.name = signal, max_body_bytes, name
        self.queue: queue.Queue[Records] = queue.Queue(maxsize=queue_requests)
        self.queue_rows, self.queued_rows = queue_rows, 0
        self.dead: list[DeadLetter] = []  # dead letters of refused requests and bad items, until drained
        self.counts: dict[str, int] = {"requests": 0, "accepted": 0, "rejected": 0, "items": 0, "dead_items": 0,
                                       "ignored": 0, "busy": 0, "errors": 0}  # fmt: skip
        self.rejected_by_reason: dict[str, int] = {}
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer((host, port), self._handler())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The port listened on."""
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """``http://host:port`` (what an OTLP exporter's endpoint is set to)."""
        host = self._server.server_address[0]
        return f"http://{host.decode() if isinstance(host, bytes) else host}:{self.port}"

    def start(self) -> OtlpHttpReceiver:
        """Serve in a background thread."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._server.serve_forever, name=f"vigil-{self.name}", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket; idempotent."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()

    def stats(self) -> dict[str, Any]:
        """Counts (requests, accepted, rejected, items, dead_items, ignored, busy, errors) and rejections by reason."""
        with self._lock:
            return {
                **self.counts,
                "rejected_by_reason": dict(self.rejected_by_reason),
                "queued": self.queue.qsize(),
                "queued_rows": self.queued_rows,
            }

    def take_dead(self) -> list[DeadLetter]:
        """Dead letters since the last call."""
        with self._lock:
            out, self.dead = self.dead, []
        return out

    # -- one request -------------------------------------------------------------------------------------

    def _count(self, **inc: int) -> None:
        with self._lock:
            for k, v in inc.items():
                self.counts[k] += v

    def _refuse(self, reason: str, message: str, raw: bytes) -> None:
        with self._lock:
            self.counts["rejected"] += 1
            self.rejected_by_reason[reason] = self.rejected_by_reason.get(reason, 0) + 1
            self.dead.append(DeadLetter(reason, message, raw[:700].hex() if not raw[:700].isascii()
                                        else raw[:700].decode("ascii", "replace"), self.name,
                                        self.counts["requests"]))  # fmt: skip

    def handle(self, path: str, ctype: str, encoding: str, body: bytes) -> tuple[int, str, bytes, dict[str, str]]:
        """(HTTP status, reason code or "", response body, headers) for a request (the server's logic, testable)."""
        self._count(requests=1)
        signal = {"/v1/traces": "traces", "/v1/metrics": "metrics"}.get(path)
        is_json = ctype.split(";")[0].strip().lower() == JSON
        if signal is None:
            return 404, "", b"", {}
        if ctype.split(";")[0].strip().lower() not in (PROTOBUF, JSON):
            return 415, "", f"Content-Type must be {PROTOBUF} or {JSON}; got {ctype!r}".encode(), {}
        enc = encoding.strip().lower()
        if enc not in ("", "identity", "gzip"):
            return 415, "", f"Content-Encoding must be gzip or none; got {encoding!r}".encode(), {}
        try:
            if enc == "gzip":
                d = zlib.decompressobj(16 + zlib.MAX_WBITS)
                try:
                    plain = d.decompress(body, self.max_body_bytes + 1)
                except zlib.error as e:
                    raise OtlpError("undecodable", f"the body is not valid gzip ({e})") from None
                if len(plain) > self.max_body_bytes:
                    self._refuse("too_large", "gunzipped body over max_body_bytes", body)
                    text = f"the body is over {self.max_body_bytes:,} bytes once gunzipped"
                    return 413, "too_large", text.encode(), {}
                if not d.eof:
                    raise OtlpError("undecodable", "the gzip stream is truncated")
                body = plain
            if is_json:
                body = json_to_proto(body, signal)  # type: ignore[arg-type]
            dec: Any = self.traces if signal == "traces" else self.metrics
            recs = dec.decode(body, self.name, self.counts["requests"])
        except OtlpError as e:
            self._refuse(e.reason, e.message, body)
            return 400, e.reason, e.message.encode(), {}
        dead = recs.dead
        with self._lock:
            self.counts["dead_items"] += len(dead)
            self.dead += dead
        if signal != self.signal:
            self._count(accepted=1, ignored=len(recs))
        elif len(recs):
            recs.dead = []
            with self._lock:
                full = self.queued_rows > 0 and self.queued_rows + len(recs) > self.queue_rows
                if not full:
                    try:
                        self.queue.put_nowait(recs)
                        self.queued_rows += len(recs)
                    except queue.Full:
                        full = True
                if full:
                    self.counts["busy"] += 1
            if full:
                return 503, "", b"the pipeline is behind: retry later", {"Retry-After": "1"}
            self._count(accepted=1, items=len(recs))
        else:
            self._count(accepted=1)
        what = "spans" if signal == "traces" else "data points"
        msg = f"{len(dead)} {what} were dead letters: {dead[0].reason}: {dead[0].message}" if dead else ""
        if is_json:
            import orjson

            key = "rejectedSpans" if signal == "traces" else "rejectedDataPoints"
            doc = {"partialSuccess": {key: str(len(dead)), "errorMessage": msg}} if dead else {}
            return 200, "", orjson.dumps(doc), {}
        return 200, "", _partial(len(dead), msg), {}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        rx = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = 30  # a client that stops sending mid-body is cut off, not waited for
            server_version = "vigil-otlp"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
                pass

            def _reply(self, status: int, reason: str, body: bytes, headers: dict[str, str], json: bool) -> None:
                if status >= 400 and status != 404:
                    text = body.decode("utf-8", "replace")
                    if json:
                        import orjson

                        body = orjson.dumps({"code": _STATUS_CODES.get(status, 2), "message": text})
                    else:
                        body = _status(_STATUS_CODES.get(status, 2), text)
                self.send_response(status)
                self.send_header("Content-Type", JSON if json else PROTOBUF)
                self.send_header("Content-Length", str(len(body)))
                if reason:
                    self.send_header("X-Vigil-Reason", reason)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:  # noqa: N802 - the base class's name
                ctype = self.headers.get("Content-Type", "")
                json = ctype.split(";")[0].strip().lower() == JSON
                try:
                    n = self.headers.get("Content-Length")
                    if n is None or not n.strip().isdigit():
                        self.close_connection = True
                        return self._reply(411, "", b"a Content-Length is required", {}, json)
                    size = int(n)
                    if size > rx.max_body_bytes:
                        rx._count(requests=1)
                        rx._refuse("too_large", f"a body of {size:,} bytes, over max_body_bytes", b"")
                        self.close_connection = True
                        return self._reply(413, "too_large", f"the body ({size:,} bytes) is over max_body_bytes "
                                           f"({rx.max_body_bytes:,})".encode(), {}, json)  # fmt: skip
                    body = self.rfile.read(size)
                    if len(body) < size:
                        rx._count(requests=1)
                        rx._refuse("undecodable", f"truncated body: {len(body)} of {size} bytes", body)
                        self.close_connection = True
                        return self._reply(400, "undecodable", f"truncated body: got {len(body)} of the {size} "
                                           "bytes of Content-Length".encode(), {}, json)  # fmt: skip
                    status, reason, out, headers = rx.handle(
                        self.path.split("?")[0], ctype, self.headers.get("Content-Encoding", ""), body
                    )
                    self._reply(status, reason, out, headers, json)
                except (TimeoutError, ConnectionError):
                    self.close_connection = True
                except Exception as e:  # never let one request take the server down
                    rx._count(errors=1)
                    self.close_connection = True
                    try:
                        self._reply(500, "", f"internal error: {type(e).__name__}: {e}".encode(), {}, json)
                    except OSError:
                        pass

            def do_GET(self) -> None:  # noqa: N802 - the base class's name
                import orjson

                body = orjson.dumps(rx.stats()) if self.path == "/stats" else b""
                self.send_response(200 if body else 404)
                self.send_header("Content-Type", JSON)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler


class OtlpHttpSource:
    """The ``otlp`` source listening for OTLP/HTTP: one partition, positions are request counts (not replayable)."""

    def __init__(self, receiver: OtlpHttpReceiver, stop_after: int | None = None) -> None:
        self.receiver, self.name = receiver, receiver.name
        self.stop_after = stop_after  # finite for tests and demos: at end after this many rows

    def partitions(self) -> list[str]:
        """One partition."""
        return ["otlp"]

    def open(self, partition: str = "otlp", resume: Any = None) -> OtlpHttpReader:
        """Start the receiver (if not yet) and read from it; ``resume`` is ignored (HTTP can't replay)."""
        self.receiver.start()
        return OtlpHttpReader(self)


class OtlpHttpReader:
    """Drains the receiver's queue in micro-batches."""

    def __init__(self, src: OtlpHttpSource) -> None:
        self.src, self.rx = src, src.receiver
        self.rows = 0
        self._rest: Records | None = None
        self._closed = False

    def read_batch(self, max_items: int, timeout_ms: int) -> Records | None:
        """Up to ``max_items`` rows of queued requests, waiting at most ``timeout_ms`` for the first."""
        parts: list[Records] = []
        have = 0
        if self._rest is not None:
            parts, have, self._rest = [self._rest], len(self._rest), None
        wait = timeout_ms / 1000.0
        while have < max_items:
            try:
                r = self.rx.queue.get(timeout=wait) if not parts and wait > 0 else self.rx.queue.get_nowait()
            except queue.Empty:
                break
            parts.append(r)
            have += len(r)
            with self.rx._lock:
                self.rx.queued_rows -= len(r)
        dead = self.rx.take_dead()
        if not parts:
            if not dead:
                return None
            out = self._empty()
        else:
            out = concat_records(parts)
            if len(out) > max_items:
                self._rest = slice_records(out, max_items, len(out))
                out = slice_records(out, 0, max_items)
        out.dead = dead
        self.rows += len(out)
        return out

    def _empty(self) -> Records:
        dec: Any = self.rx.traces if self.rx.signal == "traces" else self.rx.metrics
        return dec.decode(b"", self.src.name)  # type: ignore[no-any-return]

    def position(self) -> Any:
        """Rows read so far (informational: HTTP can't be resumed)."""
        return {"rows": self.rows}

    @property
    def at_end(self) -> bool:
        """Only with ``stop_after``: once that many rows were read."""
        return self.src.stop_after is not None and self.rows >= self.src.stop_after and self._rest is None

    def close(self) -> None:
        """Stop the receiver; idempotent."""
        if not self._closed:
            self._closed = True
            self.rx.stop()
