"""A simulated server fleet: six metrics per host with daily load, noise and labelled incidents.

Built column-wise with numpy (arrays ``[hosts, samples]`` per metric, then flattened to long form; no
Python loop per sample). The output is **long form**, one row per host x metric x sample, sorted by
arrival time (``arrival_ms`` non-decreasing), as a metrics agent would ship it:

``host`` (str), ``host_id`` (int32 code, index into :func:`host_names`), ``ts_ms`` (int64 event time),
``arrival_ms``, ``metric`` (str, one of :data:`METRICS`), ``metric_id`` (int8, index into :data:`METRICS`),
``value`` (float64), ``label`` (int8: 1 when the row's metric is affected by an incident),
``incident`` (str: the incident type, ``"batch_job"`` for a legitimate job, else ``"normal"``) and
``incident_id`` (int32: the incident of the host at that time, on every metric of the host, -1 outside).

The model, per host ``h`` with load ``L_h(t)`` (a diurnal curve peaking mid-afternoon, per-host phase
and amplitude, plus slow AR(1) drift):

* ``cpu`` %: ``base_h * L`` + AR(1) noise, clipped to [0, 100];
* ``mem`` %: a per-host level + 6 x ``L`` + small noise (memory is steady);
* ``net_in`` / ``net_out`` MB/s: ``scale_h * L`` with log-normal noise (``net_out`` a per-host ratio of it);
* ``disk_io`` IOPS: ``io_h * (0.5 + 0.5 L)`` with log-normal noise;
* ``disk_used`` %: a level growing slowly (logs), tiny noise, and a nightly log rotation that drops it.

Legitimate oddities (``label`` 0): rare one-sample spikes (1.5-3x on one metric) and **batch jobs**
(about one per host-day, 10-40 min) that load *one* metric hard (a CPU-bound job, a backup's disk I/O,
an upload's network out). A single-metric detector flags them; a k-of-n vote should not.

**Scheduled jobs** (off by default: ``scheduled_job_hosts`` is the share of hosts that run one): a cron job
every ``scheduled_job_every_h`` hours at the host's own minute, 4-10 minutes long, that moves *two* metrics
moderately (an incremental backup: disk_io and net_out; a report: cpu and disk_io; a sync: cpu and net_out),
each run within +-20 % of the host's usual footprint and +-1 minute of its slot. Two metrics at once pass a
k-of-n vote, so these are the false alerts that recur per host, which operator feedback is meant to teach away.
They are marked ``incident == "scheduled_job"`` (``label`` 0) where no incident runs. Their randomness comes
from a generator of their own, so turning them on leaves every other array of the spec unchanged.

Incidents (``label`` 1, several metrics at once, after a ``warmup_h`` warm-up):

* ``cpu_saturation`` (10-30 min): cpu pinned at 93-99 %, net_out falls by 60-75 % (responses stall),
  mem +6-10 (queued requests);
* ``memory_leak`` (40-90 min): mem ramps to ~95 %; once memory is tight (from 45 % of the incident, fully
  by 65 %) GC pushes cpu up by 20-30 points and swapping multiplies disk_io by 3-6; ends with a restart;
* ``network_storm`` (5-20 min): net_in x6-12, net_out x4-8, cpu +20-35 (interrupt handling);
* ``disk_filling`` (30-90 min): disk_used ramps by 20-35 points, disk_io x3-5 throughout (the writer);
* ``noisy_neighbour`` (20-60 min): moderate: cpu +12-20 (steal), disk_io x1.8-2.5, net_in x0.8.

Data quality: ``drop_frac`` of samples are lost, ``outage_rate`` per host-day a metric of a host goes
silent for 2-10 min (whole windows miss that metric), ``disorder_frac`` of samples arrive up to
``max_disorder_ms`` late, and ``very_late_frac`` arrive 2-5 minutes late (for the late output).

The same spec gives identical arrays.

Examples:
    >>> cols = simulate_fleet(FleetSpec(hosts=3, days=0.05, step_s=10, seed=1))
    >>> len(cols["value"]) > 0, sorted(set(cols["metric"].tolist())) == sorted(METRICS)
    (True, True)
    >>> bool(np.all(np.diff(cols["arrival_ms"]) >= 0))
    True
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["INCIDENT_TYPES", "METRICS", "FleetSpec", "host_names", "incident_table", "simulate_fleet"]

METRICS: tuple[str, ...] = ("cpu", "mem", "net_in", "net_out", "disk_io", "disk_used")
INCIDENT_TYPES: tuple[str, ...] = ("cpu_saturation", "memory_leak", "network_storm", "disk_filling",
                                   "noisy_neighbour")  # fmt: skip
_CPU, _MEM, _NIN, _NOUT, _DIO, _DUSED = range(6)
_DURATION_MIN = {"cpu_saturation": (10, 30), "memory_leak": (40, 90), "network_storm": (5, 20),
                 "disk_filling": (30, 90), "noisy_neighbour": (20, 60)}  # fmt: skip
_DAY_MS = 86_400_000


@dataclass(frozen=True)
class FleetSpec:
    """What to simulate.

    Args:
        hosts: number of hosts.
        days: length in days (fractions allowed).
        step_s: sampling interval of every metric, seconds.
        seed: random seed (same spec, same arrays).
        start_ms: event time of the first sample (default 2024-01-01 00:00 UTC).
        incidents_per_host_day: mean number of incidents (types in turn, so each type gets a share).
        warmup_h: no incident and no batch job before this many hours (detectors warm up).
        batch_jobs_per_host_day: mean number of legitimate batch jobs.
        spike_prob: per-sample probability of a legitimate one-sample spike on a metric.
        drop_frac: share of samples lost.
        outage_rate: metric outages (2-10 min of silence) per host-day.
        disorder_frac: share of samples arriving up to ``max_disorder_ms`` late.
        very_late_frac: share of samples arriving 2-5 minutes late.
        scheduled_job_hosts: share of hosts running a recurring scheduled job (0: none; see the module doc).
        scheduled_job_every_h: hours between two runs of a scheduled job.
    """

    hosts: int = 200
    days: float = 2.0
    step_s: int = 10
    seed: int = 7
    start_ms: int = 1_704_067_200_000
    incidents_per_host_day: float = 0.25
    warmup_h: float = 3.0
    batch_jobs_per_host_day: float = 1.0
    spike_prob: float = 2e-4
    drop_frac: float = 0.003
    outage_rate: float = 0.5
    disorder_frac: float = 0.05
    max_disorder_ms: int = 4000
    very_late_frac: float = 2e-4
    scheduled_job_hosts: float = 0.0
    scheduled_job_every_h: float = 1.0

    def __post_init__(self) -> None:
        if self.hosts < 1 or self.days <= 0 or self.step_s <= 0:
            raise ValueError(f"`hosts` >= 1, `days` > 0 and `step_s` > 0 are required; got {self}")
        if not 0.0 <= self.scheduled_job_hosts <= 1.0:
            raise ValueError(f"`scheduled_job_hosts` must be a share in [0, 1]; got {self.scheduled_job_hosts!r}")
        if self.scheduled_job_every_h < 0.25:
            raise ValueError(f"`scheduled_job_every_h` must be >= 0.25 (jobs last up to 10 min); "
                             f"got {self.scheduled_job_every_h!r}")  # fmt: skip


def host_names(n: int) -> np.ndarray:
    """``host-0000`` ... as an object array (the ``host_id`` codes index it)."""
    return np.array([f"host-{i:04d}" for i in range(n)], object)


def _ar1(rng: np.random.Generator, shape: tuple[int, int], phi: float) -> np.ndarray:
    """Unit-variance AR(1) noise along the last axis."""
    from scipy.signal import lfilter  # not a core dependency: only the fleet simulator needs it

    e = rng.standard_normal(shape) * np.sqrt(1.0 - phi * phi)
    return lfilter([1.0], [1.0, -phi], e, axis=1)


def _ramp(n: int, ramp_n: int) -> np.ndarray:
    """0 -> 1 over the first ``ramp_n`` points, then 1 (incidents set in over a minute, not instantly)."""
    return np.minimum(1.0, (np.arange(n) + 1.0) / max(ramp_n, 1))


def simulate_fleet(spec: FleetSpec) -> dict[str, Any]:
    """The fleet's samples in long form, sorted by arrival (see the module docstring)."""
    rng = np.random.default_rng(spec.seed)
    H, M = spec.hosts, len(METRICS)
    step_ms = int(spec.step_s * 1000)
    T = max(2, int(spec.days * _DAY_MS // step_ms))
    t_h = np.arange(T) * (step_ms / 3_600_000.0)  # hours since start
    phase = rng.uniform(-1.5, 1.5, H)[:, None]
    amp = rng.uniform(0.25, 0.45, H)[:, None]
    load = 0.55 + amp * np.cos(2 * np.pi * (t_h[None, :] - 15.0 - phase) / 24.0)
    load = np.clip(load * (1.0 + 0.05 * _ar1(rng, (H, T), 0.995)), 0.05, None)

    V = np.empty((M, H, T))
    cpu_base = rng.uniform(25, 60, H)[:, None]
    V[_CPU] = np.clip(cpu_base * load + rng.uniform(1.5, 3.0, H)[:, None] * _ar1(rng, (H, T), 0.6), 0.5, 100)
    V[_MEM] = rng.uniform(35, 60, H)[:, None] + 6.0 * load + 0.4 * _ar1(rng, (H, T), 0.8)
    net = rng.lognormal(3.0, 0.6, H)[:, None]
    V[_NIN] = net * load * np.exp(0.12 * _ar1(rng, (H, T), 0.5))
    V[_NOUT] = rng.uniform(0.4, 1.6, H)[:, None] * V[_NIN] * np.exp(0.08 * rng.standard_normal((H, T)))
    V[_DIO] = rng.lognormal(5.5, 0.5, H)[:, None] * (0.5 + 0.5 * load) * np.exp(0.15 * _ar1(rng, (H, T), 0.5))
    growth = rng.uniform(0.5, 3.0, H)[:, None] / 24.0  # points per hour
    day_hour = (t_h[None, :] + rng.uniform(0, 24, H)[:, None]) % 24.0  # hours since the host's rotation
    V[_DUSED] = rng.uniform(30, 55, H)[:, None] + growth * day_hour + 0.03 * rng.standard_normal((H, T))

    # legitimate one-sample spikes on cpu, net and disk io
    for m in (_CPU, _NIN, _NOUT, _DIO):
        hit = rng.random((H, T)) < spec.spike_prob
        V[m][hit] *= rng.uniform(1.5, 3.0, int(hit.sum()))
    V[_CPU] = np.minimum(V[_CPU], 100.0)

    label = np.zeros((M, H, T), np.int8)
    kind = np.zeros((H, T), np.int8)  # 0 normal, 1 batch job, 2.. incident types
    inc_id = np.full((H, T), -1, np.int32)
    warm = int(spec.warmup_h * 3_600_000 // step_ms)
    per_min = 60_000 / step_ms

    # legitimate batch jobs: one metric loaded hard for 10-40 minutes
    n_jobs = rng.poisson(spec.batch_jobs_per_host_day * spec.days * H)
    for _ in range(n_jobs):
        h = int(rng.integers(H))
        n = int(rng.uniform(10, 40) * per_min)
        if T - warm - n <= 0:
            continue
        a = int(rng.integers(warm, T - n))
        sl = slice(a, a + n)
        r = _ramp(n, int(per_min))
        m = int(rng.choice([_CPU, _DIO, _NOUT]))
        if m == _CPU:
            V[_CPU, h, sl] = np.minimum(V[_CPU, h, sl] + r * rng.uniform(25, 40), 98.0)
        else:
            V[m, h, sl] *= 1.0 + r * rng.uniform(2.0, 4.0)
        kind[h, sl] = np.where(kind[h, sl] == 0, 1, kind[h, sl])

    # incidents: types in turn, hosts drawn at random, a host's incidents in separate parts of its timeline
    n_inc = int(round(spec.incidents_per_host_day * spec.days * H))
    hosts_of = rng.integers(0, H, n_inc)
    usable = T - warm
    next_id = 0
    for h in range(H):
        mine = np.flatnonzero(hosts_of == h)
        if not len(mine) or usable <= 0:
            continue
        seg = usable // len(mine)
        for j, i in enumerate(mine.tolist()):
            typ = INCIDENT_TYPES[i % len(INCIDENT_TYPES)]
            lo_min, hi_min = _DURATION_MIN[typ]
            n = min(int(rng.uniform(lo_min, hi_min) * per_min), seg - int(20 * per_min))
            if n < max(3, int(3 * per_min)):
                continue
            a = warm + j * seg + int(rng.integers(0, seg - n - int(10 * per_min) + 1))
            _inject(V, label, h, slice(a, a + n), typ, rng, per_min)
            kind[h, a : a + n] = 2 + INCIDENT_TYPES.index(typ)
            inc_id[h, a : a + n] = next_id
            next_id += 1
    if spec.scheduled_job_hosts > 0:
        _scheduled_jobs(spec, V, kind, step_ms)
    V[_CPU] = np.clip(V[_CPU], 0.0, 100.0)
    V[_MEM] = np.clip(V[_MEM], 0.0, 100.0)
    V[_DUSED] = np.clip(V[_DUSED], 0.0, 100.0)
    return _long_form(spec, V, label, kind, inc_id, rng, step_ms)


_SCHEDULED = len(INCIDENT_TYPES) + 2  # kind code of a scheduled job
_JOB_METRICS = ((_DIO, _NOUT), (_CPU, _DIO), (_CPU, _NOUT))  # backup, report, sync
_JOB_JITTER = 0.2  # a run's footprint within +-20 % of the host's usual one
_JOB_SIZE = {_CPU: (10.0, 16.0), _DIO: (0.5, 0.9), _NOUT: (0.7, 1.2)}


def _scheduled_jobs(spec: FleetSpec, V: np.ndarray, kind: np.ndarray, step_ms: int) -> None:
    """Recurring two-metric cron jobs on a share of the hosts (module docstring); their own random generator."""
    rng = np.random.default_rng([spec.seed, 0x5C4ED])
    H, T = kind.shape
    per_min = 60_000 / step_ms
    period = int(spec.scheduled_job_every_h * 60 * per_min)
    hosts = np.flatnonzero(rng.random(H) < spec.scheduled_job_hosts)
    for h in hosts.tolist():
        pair = _JOB_METRICS[int(rng.integers(len(_JOB_METRICS)))]
        offset = int(rng.integers(period))
        n = int(rng.uniform(4, 10) * per_min)
        # the usual footprint (cpu + points, disk_io / net_out x (1 + size)): moderate, z about 5-15 on 1-min windows
        size = {m: rng.uniform(*_JOB_SIZE[m]) for m in pair}
        for slot in range(offset, T, period):
            a = min(max(slot + int(rng.integers(-int(per_min), int(per_min) + 1)), 0), T - 1)
            sl = slice(a, min(a + n, T))
            r = _ramp(sl.stop - a, int(per_min))
            for m in pair:
                bump = r * size[m] * rng.uniform(1.0 - _JOB_JITTER, 1.0 + _JOB_JITTER)
                if m == _CPU:
                    V[_CPU, h, sl] = np.minimum(V[_CPU, h, sl] + bump, 98.0)
                else:
                    V[m, h, sl] *= 1.0 + bump
            kind[h, sl] = np.where(kind[h, sl] == 0, _SCHEDULED, kind[h, sl])


def _inject(V: np.ndarray, label: np.ndarray, h: int, sl: slice, typ: str, rng: np.random.Generator,
            per_min: float) -> None:  # fmt: skip
    n = sl.stop - sl.start
    r = _ramp(n, int(per_min))
    p = np.arange(n) / max(n - 1, 1)  # progress 0 -> 1
    hit: tuple[int, ...]
    if typ == "cpu_saturation":
        V[_CPU, h, sl] = V[_CPU, h, sl] + r * (rng.uniform(93, 99) - V[_CPU, h, sl])
        V[_NOUT, h, sl] *= 1.0 - r * rng.uniform(0.6, 0.75)
        V[_MEM, h, sl] += r * rng.uniform(6, 10)
        hit = (_CPU, _NOUT, _MEM)
    elif typ == "memory_leak":
        V[_MEM, h, sl] += p * (rng.uniform(93, 97) - V[_MEM, h, sl])
        pressure = np.clip((p - 0.45) / 0.2, 0.0, 1.0)  # memory gets tight: GC and swapping set in
        V[_CPU, h, sl] += pressure * rng.uniform(20, 30)
        V[_DIO, h, sl] *= 1.0 + pressure * rng.uniform(2, 5)
        hit = (_MEM, _CPU, _DIO)
    elif typ == "network_storm":
        V[_NIN, h, sl] *= 1.0 + r * rng.uniform(5, 11)
        V[_NOUT, h, sl] *= 1.0 + r * rng.uniform(3, 7)
        V[_CPU, h, sl] += r * rng.uniform(20, 35)
        hit = (_NIN, _NOUT, _CPU)
    elif typ == "disk_filling":
        V[_DUSED, h, sl] += p * rng.uniform(20, 35)
        V[_DIO, h, sl] *= 1.0 + r * rng.uniform(2, 4)
        hit = (_DUSED, _DIO)
    else:  # noisy_neighbour
        V[_CPU, h, sl] += r * rng.uniform(12, 20)
        V[_DIO, h, sl] *= 1.0 + r * rng.uniform(0.8, 1.5)
        V[_NIN, h, sl] *= 1.0 - 0.2 * r
        hit = (_CPU, _DIO, _NIN)
    for m in hit:
        label[m, h, sl] = 1


def _long_form(spec: FleetSpec, V: np.ndarray, label: np.ndarray, kind: np.ndarray, inc_id: np.ndarray,
               rng: np.random.Generator, step_ms: int) -> dict[str, Any]:  # fmt: skip
    M, H, T = V.shape
    offset = np.asarray(rng.integers(0, step_ms, H))  # each host's agent samples at its own phase
    ts = spec.start_ms + offset[None, :, None] + (np.arange(T, dtype=np.int64) * step_ms)[None, None, :]
    ts = np.broadcast_to(ts, (M, H, T))
    keep = rng.random((M, H, T)) >= spec.drop_frac
    n_out = int(rng.poisson(spec.outage_rate * spec.days * H))
    per_min = 60_000 / step_ms
    for _ in range(n_out):
        m, h = int(rng.integers(M)), int(rng.integers(H))
        n = int(rng.uniform(2, 10) * per_min)
        a = int(rng.integers(0, max(T - n, 1)))
        keep[m, h, a : a + n] = False
    # long form, sample-major (all metrics of a sample together, as an agent ships them)
    keep_t = keep.transpose(1, 2, 0)  # [H, T, M]
    h_idx, t_idx, m_idx = np.nonzero(keep_t)
    ts_flat = ts[m_idx, h_idx, t_idx]
    delay = np.zeros(ts_flat.shape[0], np.int64)
    n = ts_flat.shape[0]
    late = np.asarray(rng.random(n) < spec.disorder_frac)
    delay[late] = rng.integers(1, max(spec.max_disorder_ms, 1) + 1, int(late.sum()))
    very = np.asarray(rng.random(n) < spec.very_late_frac)
    delay[very] = rng.integers(120_000, 300_000, int(very.sum()))
    arrival = ts_flat + delay
    o = np.argsort(arrival, kind="stable")
    h_idx, t_idx, m_idx = h_idx[o], t_idx[o], m_idx[o]
    k = kind[h_idx, t_idx]
    kinds = np.array(("normal", "batch_job") + INCIDENT_TYPES + ("scheduled_job",), object)
    return {
        "host": host_names(H)[h_idx],
        "host_id": h_idx.astype(np.int32),
        "ts_ms": ts_flat[o],
        "arrival_ms": arrival[o],
        "metric": np.array(METRICS, object)[m_idx],
        "metric_id": m_idx.astype(np.int8),
        "value": V[m_idx, h_idx, t_idx],
        "label": label[m_idx, h_idx, t_idx],
        "incident": kinds[k],
        "incident_id": inc_id[h_idx, t_idx],
    }


def incident_table(cols: dict[str, Any]) -> dict[str, np.ndarray]:
    """One row per incident: ``incident_id``, ``host_id``, ``type``, ``start_ms``, ``end_ms`` (last sample).

    Examples:
        >>> t = incident_table(simulate_fleet(FleetSpec(hosts=4, days=0.5, seed=3)))
        >>> bool(np.all(t["end_ms"] > t["start_ms"]))
        True
    """
    ids = cols["incident_id"]
    m = ids >= 0
    uid, first = np.unique(ids[m], return_index=True)
    ts = cols["ts_ms"][m]
    inv = np.searchsorted(uid, ids[m])
    start = np.full(uid.shape[0], np.iinfo(np.int64).max)
    end = np.full(uid.shape[0], np.iinfo(np.int64).min)
    np.minimum.at(start, inv, ts)
    np.maximum.at(end, inv, ts)
    return {
        "incident_id": uid.astype(np.int32),
        "host_id": cols["host_id"][m][first],
        "type": cols["incident"][m][first],
        "start_ms": start,
        "end_ms": end,
    }


def to_influx_lines(cols: dict[str, Any]) -> list[str]:
    """The samples as Influx line protocol in arrival order: ``<metric>,host=<host> value=<v> <ts ns>``.

    The metric name a decoder gives these lines is ``<metric>.value`` (measurement.field); the server
    pipeline maps it back with ``metric_aliases`` (see ``pipelines/servers.yaml``).

    Examples:
        >>> to_influx_lines({"host": ["h1"], "metric": ["cpu"], "value": [12.5], "ts_ms": [1_700_000_000_000]})
        ['cpu,host=h1 value=12.5 1700000000000000000']
    """
    hosts, metrics = np.asarray(cols["host"]).tolist(), np.asarray(cols["metric"]).tolist()
    values, ts = np.asarray(cols["value"], np.float64).tolist(), np.asarray(cols["ts_ms"], np.int64).tolist()
    return [f"{m},host={h} value={v!r} {t * 1_000_000}" for h, m, v, t in zip(hosts, metrics, values, ts, strict=True)
            if math.isfinite(v)]  # fmt: skip
