"""Offline training into the registry: read a table, fit an Isolation Forest, validate it, register it.

:func:`train_isolation_forest` keeps the input's order in event time (sorted by the time column when there
is one), fits on the first ``1 - holdout`` of the complete rows and scores the last ``holdout`` with the fitted
model, as it would be served. The held-back slice is *later* data, so its report is an honest look at how the
model will behave on the next stretch of the stream: the quantiles of its calibrated scores and the share it
would flag at the default threshold (0.99). About 1 % is expected when the recent data look like the training
data; much more is drift or a bad fit (``flag_ratio`` in the report compares the two).

Input files: ``.csv`` (header row), ``.jsonl`` / ``.ndjson`` (one object per line) or ``.parquet``; the feature
columns are numbers (a cell that isn't is missing), the optional time column is epoch ms, epoch s (numbers below
1e11 are read as seconds) or ISO 8601 text. Rows with a missing feature are left out of training and counted.
This reader is deliberately simple (whole file in memory); ``vigil.cli.score_io`` is the streaming-grade reader
for scoring, but it needs a time column and lives in the CLI layer, which this package must not import.

Examples:
    >>> import tempfile, numpy as np
    >>> rng = np.random.default_rng(0)
    >>> cols = {"ts": np.arange(500) * 1000 + 1_700_000_000_000, "a": rng.standard_normal(500),
    ...         "b": rng.standard_normal(500)}
    >>> version, meta = train_isolation_forest(cols, features=["a", "b"], name="demo",
    ...                                        registry_root=tempfile.mkdtemp(), n_estimators=20, time_column="ts")
    >>> version, meta["n_rows"], meta["validation"]["n_rows"], meta["training_window"]["first_ts_ms"]
    ('v1', 400, 100, 1700000000000)
"""

from __future__ import annotations

import json
import math
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from vigil.errors import ConfigError, SourceError
from vigil.models.registry import ModelRegistry

DEFAULT_THRESHOLD = 0.99
_VALIDATION_QUANTILES = (0.5, 0.9, 0.99, 0.999)


def train_isolation_forest(
    input_path: str | os.PathLike[str] | dict[str, Any],
    *,
    features: list[str],
    name: str,
    registry_root: str | os.PathLike[str],
    contamination: float | str = "auto",
    n_estimators: int = 100,
    holdout: float = 0.2,
    seed: int = 42,
    time_column: str | None = "timestamp",
    promote: bool = False,
    reason: str = "trained",
) -> tuple[str, dict[str, Any]]:
    """Fit, validate and register an Isolation Forest; return ``(version, meta)`` (see the module docstring).

    Args:
        input_path: a CSV / JSON-lines / Parquet file, or columns ``{name: array}``.
        features: the feature columns, in the model's order.
        name: the model's name in the registry.
        registry_root: the registry folder.
        contamination: sklearn's ``contamination`` (only moves its ``offset``; Vigil thresholds on the
            calibrated score).
        n_estimators: trees.
        holdout: the share of the (time-ordered) rows held back for validation, in [0, 0.9]; 0 skips it.
        seed: the forest's seed (same rows and seed: same model).
        time_column: the event-time column; used when present (window, ordering), ignored when absent.
        promote: also promote the new version (with ``reason``).
        reason: the history entry's reason when ``promote``.
    """
    from vigil.detectors.iforest import IsolationForestDetector, fit_isolation_forest

    features = [str(f) for f in features]
    if not features:
        raise ConfigError("must name at least one column", field="features", value=features)
    if not 0.0 <= float(holdout) <= 0.9:
        raise ConfigError("must be in [0, 0.9]", field="holdout", value=holdout, hint="e.g. 0.2")
    if int(n_estimators) != n_estimators or n_estimators < 1:
        raise ConfigError("must be an int >= 1", field="n_estimators", value=n_estimators)
    if isinstance(input_path, dict):
        source = "<columns>"
        columns = read_columns_dict(input_path, features, time_column)
    else:
        source = os.fspath(input_path)
        columns = read_table(source, features, time_column)
    X = np.column_stack([columns[f] for f in features])
    ts = columns.get("__ts_ms")
    n_in = X.shape[0]
    complete = np.isfinite(X).all(axis=1)
    if ts is not None:
        complete &= ts != np.iinfo(np.int64).min
    X = X[complete]
    if ts is not None:
        ts = ts[complete]
        order = np.argsort(ts, kind="stable")
        X, ts = X[order], ts[order]
    n = X.shape[0]
    n_hold = int(math.floor(n * float(holdout)))
    n_fit = n - n_hold
    if n_fit < 10:
        raise SourceError(
            f"{source}: only {n_fit} complete training rows (of {n_in} read; {n_in - n} with a missing feature "
            f"or time); need at least 10 to train"
        )
    fit_X, hold_X = X[:n_fit], X[n_fit:]
    artifact = fit_isolation_forest(fit_X, features, n_estimators=n_estimators, contamination=contamination,
                                    seed=seed)  # fmt: skip
    validation = None
    if n_hold:
        det = IsolationForestDetector(artifact, threshold=DEFAULT_THRESHOLD)
        v = det.process_many(np.zeros(n_hold, np.int32), np.zeros(n_hold, np.int64),
                             {f: hold_X[:, j] for j, f in enumerate(features)})  # fmt: skip
        share = float(v.flag.mean())
        validation = {
            "n_rows": int(n_hold), "threshold": DEFAULT_THRESHOLD, "flag_share": share,
            "expected_flag_share": 1.0 - DEFAULT_THRESHOLD,
            "flag_ratio": share / (1.0 - DEFAULT_THRESHOLD),
            "calibrated_quantiles": {str(q): float(np.quantile(v.calibrated, q)) for q in _VALIDATION_QUANTILES},
            "score_quantiles": {str(q): float(np.quantile(v.score, q)) for q in _VALIDATION_QUANTILES},
            "window": _window(ts[n_fit:]) if ts is not None else None,
        }  # fmt: skip
    train = artifact["train"]
    meta: dict[str, Any] = {
        "algorithm": "isolation_forest",
        "source": source,
        "features": features,
        "training_window": _window(ts[:n_fit]) if ts is not None else None,
        "time_column": time_column if ts is not None else None,
        "contamination": contamination,
        "n_rows": int(n_fit),
        "n_rows_read": int(n_in),
        "n_rows_incomplete": int(n_in - n),
        "training_stats": {f: {**{k: float(train[k][j]) for k in ("mean", "std", "min", "max")},
                               **_bins(fit_X[:, j])} for j, f in enumerate(features)},
        "params": {"n_estimators": int(n_estimators), "seed": int(seed), "holdout": float(holdout),
                   "max_samples_used": artifact["params"]["max_samples_used"]},
        "library_versions": artifact["versions"],
        "validation": validation,
    }  # fmt: skip
    reg = ModelRegistry(registry_root)
    version = reg.register(name, artifact, meta)
    if promote:
        reg.promote(name, version, reason=reason)
    return version, reg.meta(name, version)


def _bins(values: np.ndarray) -> dict[str, list[float]]:
    """Quantile bin edges and fractions of a training feature, for the input-drift monitor (vigil.ops.drift)."""
    from vigil.stats.psi import quantile_bins

    edges, fractions = quantile_bins(values)
    return {"bin_edges": edges, "bin_fractions": fractions}


def _window(ts: np.ndarray | None) -> dict[str, Any] | None:
    if ts is None or len(ts) == 0:
        return None
    first, last = int(ts[0]), int(ts[-1])

    def iso(ms: int) -> str:
        return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")

    return {"first_ts_ms": first, "last_ts_ms": last, "first": iso(first), "last": iso(last)}


# ---- reading ---------------------------------------------------------------------------------------------


def read_columns_dict(columns: dict[str, Any], features: list[str], time_column: str | None) -> dict[str, np.ndarray]:
    """Feature columns as float64 (and ``__ts_ms`` when ``time_column`` is among them) from a dict."""
    missing = [f for f in features if f not in columns]
    if missing:
        raise ConfigError("are not among the given columns", field="features", value=missing,
                          hint=f"columns: {', '.join(map(str, columns))}")  # fmt: skip
    out = {f: _floats(list(np.asarray(columns[f]).tolist())) for f in features}
    if time_column and time_column in columns:
        out["__ts_ms"] = _times(list(np.asarray(columns[time_column]).tolist()), time_column)
    return out


def read_table(path: str, features: list[str], time_column: str | None,
               key_column: str | None = None) -> dict[str, np.ndarray]:  # fmt: skip
    """Read the feature (and time) columns of a table (see the module docstring).

    ``path``: a CSV, JSON-lines or Parquet file, or ``kafka://HOST:PORT/TOPIC`` for every JSON record of a
    topic, from the earliest offset to the end. ``key_column``: also return it, as text, under ``"__key"``.
    """
    p = Path(path)
    if path.startswith("kafka://"):
        raw = read_kafka_records(path)
        p = Path(path.rsplit("/", 1)[-1])
    elif not p.is_file():
        raise SourceError(f"training input does not exist: {path!r}")
    ext = p.suffix.lower()
    if path.startswith("kafka://"):
        pass
    elif ext == ".csv":
        raw = _read_csv(path)
    elif ext in (".jsonl", ".ndjson", ".json"):
        raw = _read_jsonl(path)
    elif ext in (".parquet", ".pq"):
        raw = _read_parquet(path, [*features, *([time_column] if time_column else [])])
    else:
        raise ConfigError("has an unknown extension", field="input", value=path, hint="use .csv, .jsonl or .parquet")
    missing = [f for f in features if f not in raw]
    if missing:
        raise ConfigError(f"are not columns of {p.name}", field="features", value=missing,
                          hint=f"columns: {', '.join(raw) or 'none'}")  # fmt: skip
    out = {f: _floats(raw[f]) for f in features}
    if time_column and time_column in raw:
        out["__ts_ms"] = _times(raw[time_column], time_column)
    if key_column:
        if key_column not in raw:
            raise ConfigError(f"is not a column of {p.name}", field="key_column", value=key_column,
                              hint=f"columns: {', '.join(raw)}")  # fmt: skip
        out["__key"] = np.array(["" if k is None else str(k) for k in raw[key_column]], dtype=object)
    return out


def _read_csv(path: str) -> dict[str, list[Any]]:
    import csv

    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            return {}
        cols: dict[str, list[Any]] = {h: [] for h in header}
        for row in reader:
            if not row:
                continue
            for h, cell in zip(header, row + [""] * (len(header) - len(row)), strict=False):
                cols[h].append(cell)
    return cols


def _read_jsonl(path: str) -> dict[str, list[Any]]:
    with open(path, encoding="utf-8") as fh:
        return _json_columns(line for line in fh if line.strip())


def _json_columns(lines: Any) -> dict[str, list[Any]]:
    """JSON objects (text or bytes, one each) as columns; an unreadable one is a row of missing values."""
    cols: dict[str, list[Any]] = {}
    n = 0
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:
            rec = {}
        if not isinstance(rec, dict):
            rec = {}
        for k in rec.keys() - cols.keys():
            cols[k] = [None] * n
        for k, col in cols.items():
            col.append(rec.get(k))
        n += 1
    return cols


def read_kafka_records(url: str, timeout_s: float = 30.0) -> dict[str, list[Any]]:
    """Every JSON record of a topic, from the earliest offset to the end of each partition, as columns.

    Reads with ``isolation.level=read_committed`` and no consumer group commits (training must not move a
    pipeline's offsets). A topic that doesn't exist, or a broker that doesn't answer within ``timeout_s``,
    raises :class:`~vigil.errors.SourceError`.
    """
    return _json_columns(kafka_values(url, timeout_s))


def kafka_values(url: str, timeout_s: float = 30.0) -> list[bytes]:
    """The message values of every partition of ``kafka://HOST:PORT/TOPIC``, earliest to end (tombstones skipped)."""
    import time as _time
    import uuid

    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

    from vigil.io.kafka import parse_kafka_url

    bootstrap, topic = parse_kafka_url(url)
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"vigil-train-{uuid.uuid4().hex[:8]}",
                  "enable.auto.commit": False, "enable.partition.eof": True, "isolation.level": "read_committed",
                  "auto.offset.reset": "earliest"})  # fmt: skip
    try:
        md = c.list_topics(topic, timeout=timeout_s)
        tmd = md.topics.get(topic)
        if tmd is None or tmd.error is not None or not tmd.partitions:
            raise SourceError(f"training input: topic `{topic}` is not readable on {bootstrap}")
        parts = sorted(tmd.partitions)
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        out: list[bytes] = []
        done: set[int] = set()
        deadline = _time.monotonic() + timeout_s
        while len(done) < len(parts):
            msgs = c.consume(10_000, timeout=1.0)
            if not msgs and _time.monotonic() > deadline:
                raise SourceError(f"training input: {url} did not reach the end of every partition in {timeout_s} s")
            for m in msgs:
                err = m.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        done.add(int(m.partition() or 0))
                    continue
                done.discard(int(m.partition() or 0))
                v = m.value()
                if v:
                    out.append(v)
            if msgs:
                deadline = _time.monotonic() + timeout_s
        return out
    except Exception as exc:
        if isinstance(exc, SourceError):
            raise
        raise SourceError(f"training input: can't read {url}: {exc}") from exc
    finally:
        c.close()


def _read_parquet(path: str, wanted: list[str]) -> dict[str, list[Any]]:
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError("reading Parquet needs pyarrow: pip install 'vigil[parquet]'") from exc
    names = pq.read_schema(path).names
    table = pq.read_table(path, columns=[c for c in dict.fromkeys(wanted) if c in names])
    return {c: table.column(c).to_pylist() for c in table.column_names} | {c: [] for c in names if c not in wanted}


def _float(v: Any) -> float:
    if v is None or isinstance(v, bool):
        return math.nan
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _floats(values: list[Any]) -> np.ndarray:
    return np.array([_float(v) for v in values], np.float64)


_NO_TS = np.iinfo(np.int64).min


def _times(values: list[Any], name: str) -> np.ndarray:
    """Epoch ms (``int64.min`` where unreadable): numbers as ms (>= 1e11) or s, text as ISO 8601 (naive = UTC)."""
    out = np.full(len(values), _NO_TS, np.int64)
    nums = np.array([_float(v) if not isinstance(v, str) or _numeric(v) else math.nan for v in values], np.float64)
    finite = np.isfinite(nums)
    if finite.any():
        scale = 1.0 if np.median(np.abs(nums[finite])) >= 1e11 else 1000.0
        out[finite] = np.round(nums[finite] * scale).astype(np.int64)
    for i, v in enumerate(values):
        if isinstance(v, str) and not finite[i] and v.strip():
            try:
                dt = datetime.fromisoformat(v.strip().replace("Z", "+00:00"))
            except ValueError:
                continue
            if dt.tzinfo is None:
                dt = dt.replace(tzinfo=UTC)
            out[i] = int(round(dt.timestamp() * 1000))
    return out


def _numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
