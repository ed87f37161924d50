"""``vigil collect host``: sample this machine's metrics, Telegraf style, to stdout, a file or Kafka.

Every ``interval_s`` the collector takes one sample with psutil and writes one line per measurement,
tagged ``host=<name>``, in Influx line protocol (nanosecond timestamps) or Telegraf's JSON format
(``{"fields":{...},"name":"cpu","tags":{"host":"h1"},"timestamp":1700000000}``, timestamps in
``json_timestamp_units``, seconds by default as Telegraf):

========== =======================================================================================
``cpu``     ``usage_<mode>``: percent of CPU time per mode over the interval (user, system, idle,
            iowait, ... as the OS reports them), all CPUs together
``mem``     ``used_percent``, ``available_percent``
``diskio``  ``read_bytes_per_s``, ``write_bytes_per_s``, ``reads_per_s``, ``writes_per_s`` (all disks;
            omitted where the OS exposes no disk counters)
``net``     ``bytes_sent_per_s``, ``bytes_recv_per_s``, ``packets_sent_per_s``, ``packets_recv_per_s``
            (every interface but loopback: traffic a machine sends itself is not network traffic)
``system``  ``load1``, ``load5``, ``load15``
========== =======================================================================================

Rates are over the interval since the previous sample (the first sample comes one interval after
the start). Output to a file is appended (a restarted collector never truncates what it wrote);
to ``kafka://host:port/topic`` one message per line goes through
:func:`~vigil.io.kafka_sink.produce_records`. Ctrl-C (or SIGTERM) stops at the next tick and flushes.
Decode the output with :mod:`vigil.io.metrics` (``InfluxLineFileSource``, ``parse_telegraf_json``).
"""

from __future__ import annotations

import math
import os
import re
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import IO, Any, Literal

import orjson

from vigil.errors import ConfigError

Measurement = tuple[str, dict[str, float]]
_JSON_UNITS_S = {"1s": 1, "1ms": 1_000, "1us": 1_000_000, "1ns": 1_000_000_000}


def _escape(text: str, chars: str) -> str:
    for c in chars:
        text = text.replace(c, "\\" + c)
    return text


def to_influx_line(measurement: str, tags: dict[str, str], fields: dict[str, float], ts_ns: int) -> str:
    r"""One Influx line protocol line (no newline), escaping names and tags as the protocol requires.

    Examples:
        >>> to_influx_line("cpu", {"host": "web 1"}, {"usage_user": 12.5}, 1700000000000000000)
        'cpu,host=web\\ 1 usage_user=12.5 1700000000000000000'
    """
    head = _escape(measurement, ", ")
    for k, v in sorted(tags.items()):
        head += f",{_escape(k, ',= ')}={_escape(v, ',= ')}"
    body = ",".join(f"{_escape(k, ',= ')}={float(v)!r}" for k, v in fields.items() if math.isfinite(v))
    return f"{head} {body} {ts_ns}"


def to_telegraf_json(measurement: str, tags: dict[str, str], fields: dict[str, float], timestamp: int) -> bytes:
    """One Telegraf JSON metric (no newline)."""
    clean = {k: float(v) for k, v in fields.items() if math.isfinite(v)}
    return orjson.dumps({"fields": clean, "name": measurement, "tags": tags, "timestamp": timestamp})


_NET_FIELDS = ("bytes_sent", "bytes_recv", "packets_sent", "packets_recv")
_MAC = re.compile(r"^[0-9a-fA-F]{2}([:-][0-9a-fA-F]{2}){5}$")


def is_loopback(name: str, flags: str = "", addresses: tuple[str, ...] = ()) -> bool:
    """Whether a network interface is the loopback one (by its flags, else its addresses, else its name).

    Examples:
        >>> is_loopback("lo", "up,loopback,running"), is_loopback("eth0", "up,broadcast"), is_loopback("lo0")
        (True, False, True)
    """
    if flags:
        return "loopback" in flags.split(",")
    ips = [a for a in addresses if not _MAC.match(a)]
    if ips:
        return all(a.startswith("127.") or a == "::1" for a in ips)
    return name == "lo" or name.startswith("lo0") or name.lower().startswith("loopback")


def net_totals(ps: Any) -> dict[str, int] | None:
    """Counters summed over every interface but loopback (``None`` where the OS exposes none)."""
    try:
        per_nic = ps.net_io_counters(pernic=True)
    except (OSError, RuntimeError):
        return None
    if not per_nic:
        return None
    try:
        stats = {k: getattr(v, "flags", "") for k, v in ps.net_if_stats().items()}
    except (OSError, RuntimeError):
        stats = {}
    try:
        addrs = {k: tuple(str(a.address) for a in v) for k, v in ps.net_if_addrs().items()}
    except (OSError, RuntimeError):
        addrs = {}
    out = dict.fromkeys(_NET_FIELDS, 0)
    for name, c in per_nic.items():
        if not is_loopback(name, stats.get(name, ""), addrs.get(name, ())):
            for f in _NET_FIELDS:
                out[f] += int(getattr(c, f))
    return out


class HostSampler:
    """Takes samples of this machine with psutil; each :meth:`sample` covers the time since the previous one.

    Args:
        clock: monotonic seconds, to turn counters into per-second rates (injectable).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        import psutil

        self._psutil = psutil
        self._clock = clock
        psutil.cpu_times_percent(interval=None)  # primes the "since the last call" baseline
        self._t = clock()
        self._disk = psutil.disk_io_counters()
        self._net = net_totals(psutil)

    def sample(self) -> list[Measurement]:
        """Measurements since the previous call (or the construction)."""
        ps = self._psutil
        now = self._clock()
        dt = max(now - self._t, 1e-6)
        cpu = ps.cpu_times_percent(interval=None)._asdict()
        mem = ps.virtual_memory()
        disk, net = ps.disk_io_counters(), net_totals(ps)
        out: list[Measurement] = [
            ("cpu", {f"usage_{mode}": float(v) for mode, v in cpu.items()}),
            ("mem", {"used_percent": float(mem.percent), "available_percent": 100.0 * mem.available / mem.total}),
        ]
        if disk is not None and self._disk is not None:
            d0 = self._disk
            out.append(("diskio", {
                "read_bytes_per_s": max(0, disk.read_bytes - d0.read_bytes) / dt,
                "write_bytes_per_s": max(0, disk.write_bytes - d0.write_bytes) / dt,
                "reads_per_s": max(0, disk.read_count - d0.read_count) / dt,
                "writes_per_s": max(0, disk.write_count - d0.write_count) / dt,
            }))  # fmt: skip
        if net is not None and self._net is not None:
            n0 = self._net
            out.append(("net", {f"{f}_per_s": max(0, net[f] - n0[f]) / dt for f in _NET_FIELDS}))
        if hasattr(os, "getloadavg"):
            l1, l5, l15 = os.getloadavg()
            out.append(("system", {"load1": l1, "load5": l5, "load15": l15}))
        self._t, self._disk, self._net = now, disk, net
        return out


@contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGINT / SIGTERM set ``stop`` (main thread only) so the loop ends cleanly and flushes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def handler(signum: int, frame: Any) -> None:
        stop.set()

    for s in previous:
        signal.signal(s, handler)
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def collect_host(
    interval_s: float = 1.0,
    format: Literal["influx", "json"] = "influx",
    out: str = "-",
    count: int | None = None,
    host: str | None = None,
    *,
    json_timestamp_units: str = "1s",
    stream: IO[bytes] | None = None,
    wall_clock: Callable[[], float] = time.time,
    stop: threading.Event | None = None,
) -> int:
    """Sample this machine every ``interval_s`` and write the metrics; returns the samples taken.

    Args:
        interval_s: time between samples (> 0).
        format: ``"influx"`` (line protocol, ns timestamps) or ``"json"`` (Telegraf JSON).
        out: ``"-"`` (stdout), a file path (appended to) or ``kafka://host:port/topic``.
        count: stop after this many samples (``None``: until Ctrl-C / SIGTERM).
        host: the ``host`` tag (default: this machine's host name).
        json_timestamp_units: ``"1s"`` (Telegraf's default), ``"1ms"``, ``"1us"`` or ``"1ns"``.
        stream: write to this binary stream instead of ``out`` (tests, embedding).
        wall_clock: epoch seconds for the timestamps (injectable).
        stop: an event that ends the collection when set (signals set it too).

    Raises:
        ConfigError: a bad argument, named with its value.
        SinkError: Kafka did not acknowledge everything.
    """
    if not interval_s > 0:
        raise ConfigError("must be > 0", field="interval", value=interval_s, hint="e.g. 1 (second)")
    if format not in ("influx", "json"):
        raise ConfigError("must be 'influx' or 'json'", field="format", value=format)
    if count is not None and count < 1:
        raise ConfigError("must be >= 1 (or omitted: until Ctrl-C)", field="count", value=count)
    units = json_timestamp_units if json_timestamp_units[:1].isdigit() else "1" + json_timestamp_units
    if units not in _JSON_UNITS_S:
        raise ConfigError(f"must be one of {list(_JSON_UNITS_S)}", field="json_timestamp_units",
                          value=json_timestamp_units)
    host = host or socket.gethostname()
    tags = {"host": host}
    stop = stop or threading.Event()
    per_s = _JSON_UNITS_S[units]
    taken = 0

    def samples() -> Iterator[list[bytes]]:
        nonlocal taken
        sampler = HostSampler()
        next_t = time.monotonic() + interval_s
        while count is None or taken < count:
            if stop.wait(max(0.0, next_t - time.monotonic())):
                return
            next_t += interval_s
            now = wall_clock()
            measurements = sampler.sample()
            taken += 1
            if format == "influx":
                yield [to_influx_line(name, tags, fields, round(now * 1e9)).encode() for name, fields in measurements]
            else:
                stamp = math.floor(now * per_s)
                yield [to_telegraf_json(name, tags, fields, stamp) for name, fields in measurements]

    with _stop_on_signals(stop):
        if stream is not None:
            _write_stream(stream, samples())
        elif out.startswith("kafka://"):
            from vigil.io.kafka import parse_kafka_url
            from vigil.io.kafka_sink import produce_records

            bootstrap, topic = parse_kafka_url(out)
            # one message per line; unkeyed (produce_records reads keys from top-level JSON fields only)
            produce_records(bootstrap, topic, (line for sample in samples() for line in sample))
        elif out == "-":
            _write_stream(sys.stdout.buffer, samples())
        else:
            with open(out, "ab") as f:
                _write_stream(f, samples())
    return taken


def _write_stream(stream: IO[bytes], samples: Iterator[list[bytes]]) -> None:
    """Write each sample's lines and flush, so a reader of a pipe or file sees them at once."""
    for lines in samples:
        stream.write(b"\n".join(lines) + b"\n")
        stream.flush()
