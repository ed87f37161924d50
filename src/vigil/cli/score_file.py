"""``vigil score``: the batch face of the streaming engine — score a CSV, JSON-lines or Parquet file.

What it does, in order:

1. **Read** the whole file (``.csv``, ``.jsonl``/``.ndjson``, ``.parquet``; see :mod:`vigil.cli.score_io`): the
   event-time column (epoch ms, epoch s or ISO 8601 text, detected or configured), the value columns (globs
   such as ``"*"`` or ``cpu_*`` expand to the numeric columns they match, see
   :func:`~vigil.cli.score_io.read_frame`; a training file must have the same) and an optional key column
   naming the series. A row that can't be read (a value that is not a number, an
   infinite value, a time that can't be parsed, a missing key, a malformed CSV line) is **counted and written
   with empty scores and a ``reason``**; it never stops the run. An empty or NaN value is *missing*, not
   unreadable: it goes to the detector as NaN (not scored, not learned, ``ready`` false), counts as
   ``missing`` (never as ``scored``) and its row's ``reason`` says which value was missing. An infinite value
   is unreadable (a value no detector can use), as is text where a number is needed. A value the detector
   itself can't take (<= 0 under ``transform: log``) is counted as ``unscorable``, with its reason.
2. **Order by event time.** Rows are processed strictly causally in event-time order: a stable sort by
   timestamp, so for a file the *file order is replaced by event time* (ties keep file order). The whole
   file is read first because of that sort; for unbounded input use ``vigil run``.
3. **Score** in micro-batches of ``batch_rows`` through the detector's ``process_many`` — the same call the
   streaming engine makes, so the verdicts equal streaming the rows in that order (prequential: each row
   is scored against the rows before it, then learned). Keys get slots from a :class:`~vigil.state.KeyIndex`.
4. **Write** one row per input row, **in input order** (format by the output's extension): ``row`` (0-based
   input row), ``ts_ms`` (the event time used), the time, key and value columns as read (renamed
   ``input_<name>`` if they clash with an output column), ``score`` (raw), ``calibrated`` ([0, 1]), ``flag``,
   ``ready``, per-column contributions when the verdict stats carry them (stats keys starting with
   ``z_``, ``member_`` or ``contrib_``), and ``reason`` (empty for scored rows). The output's folder must
   exist: none is created.

Training (``--train FILE``): the training file is read with the same columns and put in event-time order.
If the detector class has a classmethod ``fit_from_frame(columns: dict[str, np.ndarray]) -> dict``, it is
called with the training columns (value columns as float64, the time column as int64 epoch ms, the key
column as strings if any) and returns constructor params that override the config's; the fitted detector
then scores the input. A detector without that hook is **warmed up** instead: the training rows stream
through it first (their verdicts are discarded), so scoring starts from the state they leave — training
data should precede the scored data in event time.

Fitted models are **cached**: the params ``fit_from_frame`` returns (e.g. an Isolation Forest converted to
ONNX) are stored under ``$VIGIL_CACHE_DIR`` (default ``~/.cache/vigil``) in ``fits/``, keyed by the sha256 of
the detector's kind and params and of the training columns' bytes, so scoring again with the same training
data skips the fit and the conversion (``fit_cached`` in the summary). ``VIGIL_FIT_CACHE=0`` turns it off.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from vigil.cli.score_io import Frame, check_output, read_frame, write_table
from vigil.config.detector import ColumnsConfig, DetectorFactory, _needs_training, load_detector_config, resolve_config
from vigil.detectors.base import UNSCORABLE, Verdicts
from vigil.errors import ConfigError

CONTRIBUTION_PREFIXES = ("z_", "member_", "contrib_")


def run_detector(
    det: Any,
    slots: np.ndarray,
    ts_ms: np.ndarray,
    X: dict[str, np.ndarray],
    *,
    batch_rows: int = 65_536,
    on_batch: Callable[[int], None] | None = None,
) -> Verdicts:
    """Stream rows (already in event-time order) through ``det.process_many`` in micro-batches.

    Args:
        det: the detector (its state advances).
        slots: int32 key slots; ts_ms: int64 event times; X: float64 columns by name.
        batch_rows: rows per micro-batch (results don't depend on it: the detector contract).
        on_batch: called with each batch's row count (progress).

    Returns:
        The verdicts of all rows, concatenated.
    """
    n = len(ts_ms)
    parts: list[Verdicts] = []
    for lo in range(0, n, batch_rows):
        hi = min(n, lo + batch_rows)
        parts.append(det.process_many(slots[lo:hi], ts_ms[lo:hi], {k: v[lo:hi] for k, v in X.items()}))
        if on_batch is not None:
            on_batch(hi - lo)
    if not parts:
        return det.process_many(np.empty(0, np.int32), np.empty(0, np.int64), {k: v[:0] for k, v in X.items()})
    return Verdicts.concat(parts) if len(parts) > 1 else parts[0]


def _ordered(frame: Frame) -> tuple[Any, Any, Any, dict[str, np.ndarray], Any]:
    """Readable rows in event-time order: (input row numbers, slots, ts, values, keys)."""
    from vigil.state.keyindex import KeyIndex

    ok = np.flatnonzero(frame.ok)
    order = ok[np.argsort(frame.ts_ms[ok], kind="stable")]
    ts = frame.ts_ms[order]
    X = {c: np.ascontiguousarray(v[order]) for c, v in frame.values.items()}
    keys = None
    if frame.keys is not None:
        keys = frame.keys[order]
        slots = KeyIndex().slots_for(keys if keys.dtype.kind in "iu" else keys.tolist(), ts)
    else:
        slots = np.zeros(len(order), np.int32)
    return order, slots, ts, X, keys


def _progress(enabled: bool, total: int, label: str) -> Any:
    """A rich progress bar with rows/s on stderr (a no-op context when disabled)."""
    from contextlib import nullcontext

    if not enabled:
        return nullcontext(None)
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn
    from rich.text import Text

    class RowsPerSecond(ProgressColumn):
        def render(self, task: Any) -> Text:
            speed = task.finished_speed or task.speed
            return Text("" if speed is None else f"{speed:,.0f} rows/s", style="progress.data.speed")

    bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), RowsPerSecond(),
                   TimeElapsedColumn(), console=Console(stderr=True), transient=False)  # fmt: skip
    bar.add_task(label, total=total)
    return bar


def score_file(
    config: str | os.PathLike[str] | tuple[DetectorFactory, ColumnsConfig],
    input_path: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    *,
    train_path: str | os.PathLike[str] | None = None,
    progress: bool = True,
    batch_rows: int = 65_536,
    scores_only: bool = False,
    members: bool = False,
) -> dict[str, Any]:
    """Score every row of a file with a detector config and write the verdicts (see the module docstring).

    Args:
        config: a detector config file (:mod:`vigil.config.detector`), a bundled config name (e.g. ``nab``),
            or an already loaded ``(factory, columns)``.
        input_path: ``.csv``, ``.jsonl`` / ``.ndjson`` or ``.parquet``.
        output_path: ``.csv``, ``.jsonl`` or ``.parquet`` (rows in input order).
        train_path: fit (``fit_from_frame``) or warm up the detector on this file first.
        progress: show a progress bar on stderr.
        batch_rows: micro-batch size.
        scores_only: write only ``row``, ``ts_ms``, the time and key columns, ``score``, ``calibrated``, ``flag``,
            ``ready`` (plus the members' scores with ``members``) and ``reason``: no value columns, no contributions.
        members: add each ensemble member's raw score as ``score.<member>`` (the detector must be an
            ``ensemble``; its calibrated score is ``member_<member>``, written unless ``scores_only``).

    Returns:
        A summary: rows (= scored + missing + unscorable + unreadable), scored, missing, unscorable (values the
        detector can't take, e.g. <= 0 under ``transform: log``), unreadable (with counts by reason),
        flagged, keys, the time unit used, training mode, the seconds spent reading the input (``read_s``), in
        the detector (``detector_s``) and writing (``write_s``), and ``rows_per_s``: the readable input rows over
        ``detector_s`` alone — the detector's throughput, not counting reading, training/warm-up or writing.
    """
    if batch_rows <= 0:
        raise ConfigError("must be > 0", field="--batch-rows", value=batch_rows)
    factory, cols = config if isinstance(config, tuple) else load_detector_config(resolve_config(config))
    check_output(output_path)  # before the work: a typo in the output's folder must not cost the whole run
    train_mode = None
    warm: tuple[Any, ...] | None = None
    t_train = 0.0
    fit_cached: bool | None = None
    t0 = time.perf_counter()
    frame = read_frame(input_path, cols)
    t_read = time.perf_counter() - t0
    if cols.has_patterns:  # globs expanded against the input's columns; the training file must have the same
        cols = dataclasses.replace(cols, value_columns=tuple(frame.values), required=())
    if train_path is not None:
        tframe = read_frame(train_path, cols)
        t_order, t_slots, t_ts, t_X, t_keys = _ordered(tframe)
        if factory.trainable:
            t0 = time.perf_counter()
            fit_cached = _fit_cached(factory, t_X)  # the value columns (features), rows in event-time order
            t_train = time.perf_counter() - t0
            train_mode = "fit"
        else:
            warm = (t_keys, t_ts, t_X)
            train_mode = "warmup"
    if factory.trainable and not factory.fitted and _needs_training(factory.cls, factory.params):
        raise ConfigError("is trained offline: pass --train FILE (normal data to fit on), or give its `model`",
                          field="detector", value=factory.kind)  # fmt: skip
    det = factory()
    if members and not _member_names(det):
        raise ConfigError("needs an `ensemble` detector (it writes each member's raw score)", field="--members",
                          value=factory.kind, hint="drop --members, or score an ensemble")  # fmt: skip
    n = frame.n
    t_det = 0.0
    if warm is not None:
        verdicts, order, t_det, t_train = _score_with_warmup(det, frame, warm, batch_rows, progress)
    else:
        order, slots, ts, X, _ = _ordered(frame)
        with _progress(progress, len(order), f"scoring {Path(input_path).name}") as bar:

            def tick(k: int) -> None:
                if bar is not None:
                    bar.advance(bar.task_ids[0], k)

            t0 = time.perf_counter()
            verdicts = run_detector(det, slots, ts, X, batch_rows=batch_rows, on_batch=tick)
            t_det = time.perf_counter() - t0
    flag = verdicts.flag
    if cols.threshold is not None:
        flag = verdicts.ready & (verdicts.calibrated >= cols.threshold)
    out_cols = _output_columns(frame, order, verdicts, flag, cols, scores_only=scores_only,
                               members=_member_names(det) if members else [])  # fmt: skip
    t0 = time.perf_counter()
    write_table(out_cols, output_path)
    t_write = time.perf_counter() - t0
    reasons: dict[str, int] = {}
    for r in frame.reasons.values():
        kind = r.split(":")[0]
        reasons[kind] = reasons.get(kind, 0) + 1
    readable = int(len(order))
    missing = int(_missing_rows(frame).sum())
    unscorable = int(_unscorable_rows(frame, order, verdicts).sum())
    return {
        "input": os.fspath(input_path),
        "output": os.fspath(output_path),
        "detector": factory.kind,
        "rows": n,
        "scored": readable - missing - unscorable,
        "missing": missing,
        "unscorable": unscorable,
        "ready": int(verdicts.ready.sum()),
        "flagged": int(flag.sum()),
        "unreadable": n - readable,
        "unreadable_reasons": reasons,
        "keys": int(len(np.unique(frame.keys[frame.ok]))) if frame.keys is not None else (1 if readable else 0),
        "time_unit": frame.time_unit,
        "train": train_mode,
        "train_s": round(t_train, 6) if train_mode else None,
        "fit_cached": fit_cached,
        "read_s": round(t_read, 6),
        "detector_s": round(t_det, 6),
        "write_s": round(t_write, 6),
        "rows_per_s": round(readable / t_det, 1) if t_det > 0 else None,
    }


def _fit_cached(factory: DetectorFactory, columns: dict[str, np.ndarray]) -> bool:
    """Fit ``factory`` on ``columns``, or load the params of the same fit from the cache; ``True`` if cached."""
    import hashlib
    import json

    from vigil.state import codec

    if os.environ.get("VIGIL_FIT_CACHE", "1") == "0":
        factory.fit(dict(columns))
        return False
    h = hashlib.sha256(json.dumps([factory.kind, factory.params], sort_keys=True, default=str).encode())
    for name in sorted(columns):
        a = np.ascontiguousarray(columns[name])
        h.update(f"{name}:{a.dtype.str}:{a.shape}".encode())
        h.update(a.tobytes() if a.dtype.kind != "O" else "\x1f".join(map(str, a.tolist())).encode())
    root = Path(os.environ.get("VIGIL_CACHE_DIR") or Path.home() / ".cache" / "vigil") / "fits"
    path = root / f"{h.hexdigest()}.fit"
    if path.is_file():
        try:
            factory.fitted = dict(codec.decode(path.read_bytes(), kind="score-fit", version=1)["state"])
            return True
        except Exception:  # noqa: BLE001 - a bad cache entry is refitted and replaced
            pass
    fitted = factory.fit(dict(columns))
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_bytes(codec.encode("score-fit", 1, {}, fitted))
        os.replace(tmp, path)
    except (OSError, TypeError, ValueError):  # an unwritable cache, or params the codec can't hold: no cache
        pass
    return False


def _score_with_warmup(
    det: Any, frame: Frame, warm: tuple[Any, ...], batch_rows: int, progress: bool
) -> tuple[Verdicts, np.ndarray, float, float]:
    """Stream the training rows, then the input rows, through one detector and one key index.

    Returns ``(verdicts, order, scoring seconds, warm-up seconds)``: throughput is the input rows over the
    scoring time alone (the warm-up is reported apart, as ``train_s``).
    """
    from vigil.state.keyindex import KeyIndex

    t_keys, t_ts, t_X = warm
    ok = np.flatnonzero(frame.ok)
    order = ok[np.argsort(frame.ts_ms[ok], kind="stable")]
    ts = frame.ts_ms[order]
    X = {c: np.ascontiguousarray(v[order]) for c, v in frame.values.items()}
    ix = KeyIndex()

    def slots_of(keys: Any, t: np.ndarray) -> np.ndarray:
        if keys is None:
            return np.zeros(len(t), np.int32)
        return ix.slots_for(keys if keys.dtype.kind in "iu" else [str(k) for k in keys.tolist()], t)

    t_slots = slots_of(t_keys, t_ts)
    slots = slots_of(frame.keys[order] if frame.keys is not None else None, ts)
    with _progress(progress, len(t_ts) + len(order), "warm-up + scoring") as bar:

        def tick(k: int) -> None:
            if bar is not None:
                bar.advance(bar.task_ids[0], k)

        t0 = time.perf_counter()
        run_detector(det, t_slots, t_ts, t_X, batch_rows=batch_rows, on_batch=tick)
        t1 = time.perf_counter()
        verdicts = run_detector(det, slots, ts, X, batch_rows=batch_rows, on_batch=tick)
        t_det = time.perf_counter() - t1
    return verdicts, order, t_det, t1 - t0


def _member_names(det: Any) -> list[str]:
    """The member names of an ensemble detector (``[]`` for any other detector)."""
    from vigil.detectors.ensemble import Ensemble

    return list(det.names) if isinstance(det, Ensemble) else []


def _unscorable_rows(frame: Frame, order: np.ndarray, v: Verdicts) -> np.ndarray:
    """Input rows with a value the detector can't score (``transform: log`` of a value <= 0), by input row."""
    out = np.zeros(frame.n, bool)
    marked = v.stats.get(UNSCORABLE)
    if marked is not None:
        out[order] = np.asarray(marked) > 0
    return out & ~_missing_rows(frame)


def _missing_rows(frame: Frame) -> np.ndarray:
    """Readable rows with a missing value (empty or NaN): given to the detector as NaN, neither scored nor learned."""
    gone = np.zeros(frame.n, bool)
    for x in frame.values.values():
        gone |= np.isnan(x)
    return gone & frame.ok


def _output_columns(
    frame: Frame,
    order: np.ndarray,
    v: Verdicts,
    flag: np.ndarray,
    cols: ColumnsConfig,
    *,
    scores_only: bool = False,
    members: list[str] | None = None,
) -> dict[str, Any]:
    """Output columns in input order; rows that were not scored get nulls (NaN / None) and their reason."""
    import pyarrow as pa

    n = frame.n
    scored = np.zeros(n, bool)
    scored[order] = True
    unscorable = _unscorable_rows(frame, order, v)
    valued = scored & ~_missing_rows(frame) & ~unscorable  # no score where there was no value to score

    def scatter_float(a: np.ndarray, mask: np.ndarray = scored) -> Any:
        full = np.full(n, np.nan)
        full[order] = a
        return pa.array(full, pa.float64(), mask=~mask)

    def scatter_bool(a: np.ndarray) -> Any:
        full = np.zeros(n, bool)
        full[order] = a
        return pa.array(full, pa.bool_(), mask=~scored)

    contrib = [] if scores_only else [k for k in v.stats if k.startswith(CONTRIBUTION_PREFIXES)]
    member_cols = {f"score.{m}": f"score_{m}" for m in members or []}
    out: dict[str, Any] = {"row": pa.array(np.arange(n, dtype=np.int64))}
    out["ts_ms"] = pa.array(frame.ts_ms, pa.int64(), mask=~frame.ok)
    reserved = {"row", "ts_ms", "score", "calibrated", "flag", "ready", "reason", *contrib, *member_cols}
    echoed = [cols.time_column, *([cols.key_column] if cols.key_column else [])] if scores_only else list(frame.raw)
    for name in echoed:  # time, key (and, unless scores only, value) columns as read
        out[f"input_{name}" if name in reserved else name] = frame.raw[name]
    out["score"] = scatter_float(v.score, valued)
    out["calibrated"] = scatter_float(v.calibrated, valued)
    out["flag"] = scatter_bool(flag)
    out["ready"] = scatter_bool(v.ready)
    for name in contrib:
        out[name] = scatter_float(np.asarray(v.stats[name], np.float64))
    for name, stat in member_cols.items():  # a member's raw score: null where the row had no value to score
        out[name] = scatter_float(np.asarray(v.stats[stat], np.float64), valued)
    reason = np.full(n, None, object)
    for r in np.flatnonzero(_missing_rows(frame)).tolist():
        gone = [c for c, x in frame.values.items() if np.isnan(x[r])]
        reason[r] = " and ".join(f"`{c}`" for c in gone) + " missing (empty or NaN): not scored"
    for r in np.flatnonzero(unscorable).tolist():
        reason[r] = "a value the detector can't score (e.g. <= 0 under `transform: log`): not scored"
    for r, why in frame.reasons.items():
        reason[r] = why
    out["reason"] = pa.array(reason, pa.string())
    return out
