"""Conformance checks every detector must pass (``check_detector``), shipped so plugins can run them too.

``yield_checks(detector_factory)`` yields the checks; ``tests/test_conformance.py`` applies them to
every registered detector and every parameter set of its ``_test_params()``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from vigil.detectors.base import Verdicts
from vigil.detectors.explain import can_explain
from vigil.state import codec
from vigil.types import Contribution

Factory = Callable[[], Any]


def synthetic_stream(n: int = 600, keys: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray, dict, np.ndarray]:
    """A small out-of-order multi-key stream with injected spikes: (slots, ts_ms, X, labels)."""
    rng = np.random.default_rng(seed)
    slots = rng.integers(0, keys, n).astype(np.int32)
    arrival = np.cumsum(rng.integers(0, 400, n)).astype(np.int64)
    ts = arrival - np.where(rng.random(n) < 0.2, rng.integers(0, 1500, n), 0)
    base = 20.0 + 5.0 * slots
    value = base * np.exp(0.1 * rng.standard_normal(n))
    labels = np.zeros(n, np.int8)
    spikes = rng.choice(np.arange(n // 4, n), size=max(3, n // 50), replace=False)
    value[spikes] *= rng.choice([0.2, 4.0], size=len(spikes))
    labels[spikes] = 1
    return slots, ts, {"value": value}, labels


def _run(det: Any, slots: np.ndarray, ts: np.ndarray, X: dict, splits: list[int]) -> Verdicts:
    parts = []
    bounds = [0, *splits, len(slots)]
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        parts.append(det.process_many(slots[a:b], ts[a:b], {k: v[a:b] for k, v in X.items()}))
    return Verdicts.concat(parts)


def _same(a: Verdicts, b: Verdicts, what: str) -> None:
    for name in ("score", "calibrated", "flag", "fire", "ready"):
        x, y = getattr(a, name), getattr(b, name)
        if not np.array_equal(x, y, equal_nan=x.dtype.kind == "f"):
            bad = int(np.flatnonzero(~((x == y) | (np.isnan(x) & np.isnan(y)) if x.dtype.kind == "f" else x == y))[0])
            raise AssertionError(f"{what}: `{name}` differs first at row {bad}: {x[bad]!r} != {y[bad]!r}")


def check_batch_equals_per_event(factory: Factory) -> None:
    """Any split of the stream into batches, down to one row per batch, gives the same verdicts."""
    slots, ts, X, _ = synthetic_stream()
    whole = _run(factory(), slots, ts, X, [])
    _same(whole, _run(factory(), slots, ts, X, list(range(1, len(slots)))), "one row per batch vs one batch")
    rng = np.random.default_rng(1)
    splits = sorted(set(rng.integers(1, len(slots), 17).tolist()))
    _same(whole, _run(factory(), slots, ts, X, splits), "random batches vs one batch")


def check_snapshot_roundtrip(factory: Factory) -> None:
    """Encode the state mid-stream (msgpack codec, no pickle), restore, continue: identical later verdicts."""
    slots, ts, X, _ = synthetic_stream()
    whole = _run(factory(), slots, ts, X, [])
    half = len(slots) // 2
    det = factory()
    first = det.process_many(slots[:half], ts[:half], {k: v[:half] for k, v in X.items()})
    blob = codec.encode(f"detector/{det.kind}", det.state_version, det.params(), det.snapshot())
    env = codec.decode(blob, kind=f"detector/{det.kind}", version=det.state_version)
    det2 = type(det).from_snapshot(env["params"], env["state"])
    second = det2.process_many(slots[half:], ts[half:], {k: v[half:] for k, v in X.items()})
    _same(whole, Verdicts.concat([first, second]), "restored from a snapshot vs uninterrupted")


def check_snapshot_is_immutable(factory: Factory) -> None:
    """A snapshot taken earlier doesn't change when the detector goes on learning."""
    slots, ts, X, _ = synthetic_stream()
    det = factory()
    det.process_many(slots[:200], ts[:200], {k: v[:200] for k, v in X.items()})
    blob = codec.encode("x", 1, {}, det.snapshot())
    snap = det.snapshot()
    det.process_many(slots[200:], ts[200:], {k: v[200:] for k, v in X.items()})
    assert codec.encode("x", 1, {}, snap) == blob, "snapshot shares memory with live state"


def check_deterministic(factory: Factory) -> None:
    """Two fresh detectors given the same stream give the same verdicts."""
    slots, ts, X, _ = synthetic_stream()
    _same(_run(factory(), slots, ts, X, []), _run(factory(), slots, ts, X, []), "second fresh run")


def check_causal(factory: Factory) -> None:
    """Scoring a prefix gives exactly the first part of the full run's scores (no peeking ahead)."""
    slots, ts, X, _ = synthetic_stream()
    whole = _run(factory(), slots, ts, X, [])
    k = len(slots) // 3
    prefix = _run(factory(), slots[:k], ts[:k], {n: v[:k] for n, v in X.items()}, [])
    head = Verdicts(whole.score[:k], whole.calibrated[:k], whole.flag[:k], whole.fire[:k], whole.ready[:k])
    _same(head, prefix, "prefix run vs head of full run")


def check_finite_and_calibrated(factory: Factory) -> None:
    """Scores are finite, calibrated scores lie in [0, 1], nothing is flagged before ready."""
    slots, ts, X, _ = synthetic_stream()
    v = _run(factory(), slots, ts, X, [])
    assert np.isfinite(v.score).all(), "non-finite score"
    assert ((v.calibrated >= 0) & (v.calibrated <= 1)).all(), "calibrated score outside [0, 1]"
    assert not (v.flag & ~v.ready).any(), "flagged a row before the detector was ready"
    assert not (v.fire & ~v.flag).any(), "fired without flagging"


def check_input_not_mutated(factory: Factory) -> None:
    """The detector does not write into the arrays it is given."""
    slots, ts, X, _ = synthetic_stream()
    copies = (slots.copy(), ts.copy(), {k: v.copy() for k, v in X.items()})
    factory().process_many(slots, ts, X)
    assert np.array_equal(slots, copies[0]) and np.array_equal(ts, copies[1])
    assert all(np.array_equal(X[k], copies[2][k]) for k in X)


def check_missing_values(factory: Factory) -> None:
    """NaN input is neither scored nor learned: later verdicts equal those of the stream without it."""
    det = factory()
    if not det.fields:
        return
    slots, ts, X, _ = synthetic_stream()
    holes = np.zeros(len(slots), bool)
    holes[::13] = True
    X_nan = {k: np.where(holes, np.nan, v) for k, v in X.items()}
    with_nan = _run(det, slots, ts, X_nan, [])
    assert not with_nan.ready[holes].any() and not with_nan.flag[holes].any(), "NaN input was scored"
    keep = ~holes
    without = _run(factory(), slots[keep], ts[keep], {k: v[keep] for k, v in X.items()}, [])
    _same(
        Verdicts(with_nan.score[keep], with_nan.calibrated[keep], with_nan.flag[keep], with_nan.fire[keep],
                 with_nan.ready[keep]),
        without, "NaN rows vs the stream without them",
    )  # fmt: skip


def check_score_one_is_pure(factory: Factory) -> None:
    """``score_one`` does not change the state; ``learn_one`` returns None."""
    slots, ts, X, _ = synthetic_stream()
    det = factory()
    det.process_many(slots, ts, X)
    before = codec.encode("x", 1, {}, det.snapshot())
    det.score_one(0, int(ts[-1]) + 1, {k: float(v[-1]) for k, v in X.items()})
    assert codec.encode("x", 1, {}, det.snapshot()) == before, "score_one changed the state"
    assert det.learn_one(0, int(ts[-1]) + 1, {k: float(v[-1]) for k, v in X.items()}) is None


def check_reset_slots(factory: Factory) -> None:
    """A reset slot behaves like a slot never seen (state is reclaimed for reuse)."""
    slots, ts, X, _ = synthetic_stream()
    det = factory()
    det.process_many(slots, ts, X)
    det.reset_slots(np.array([0], np.int32))
    fresh = factory()
    fresh.process_many(slots[:0], ts[:0], {k: v[:0] for k, v in X.items()})
    later = ts[-1] + 10_000_000 + np.arange(20, dtype=np.int64) * 100
    zeros = np.zeros(20, np.int32)
    Xl = {k: v[:20] for k, v in X.items()}
    _same(det.process_many(zeros, later, Xl), fresh.process_many(zeros, later, Xl), "reset slot vs fresh slot")


def _take(v: Verdicts, rows: np.ndarray) -> Verdicts:
    return Verdicts(v.score[rows], v.calibrated[rows], v.flag[rows], v.fire[rows], v.ready[rows])


def _rows(X: dict, rows: np.ndarray) -> dict:
    return {k: v[rows] for k, v in X.items()}


def check_slots_continue_elsewhere(factory: Factory) -> None:
    """A key's slice exported mid-stream continues that key exactly elsewhere.

    Imported into a fresh instance (from the factory and from :meth:`fresh`) at another slot number, and over
    another key's slot of a running instance, the key's later events get the uninterrupted run's verdicts;
    exporting changes nothing for the exporter.
    """
    slots, ts, X, _ = synthetic_stream()
    whole = _run(factory(), slots, ts, X, [])
    half = len(slots) // 2
    det = factory()
    det.process_many(slots[:half], ts[:half], _rows(X, np.arange(half)))
    rng = np.random.default_rng(11)
    keys = sorted(set(slots[half:].tolist()))
    for key in rng.choice(keys, size=min(2, len(keys)), replace=False).tolist():
        later = np.flatnonzero(slots[half:] == key) + half
        state = det.export_slots(np.array([key], np.int32))
        other = next(k for k in keys if k != key) if len(keys) > 1 else key
        running = factory()
        running.process_many(slots[:half], ts[:half], _rows(X, np.arange(half)))
        for name, target, at in (("a fresh instance", factory(), key + 7), ("fresh()", det.fresh(), key + 3),
                                 (f"a running instance over key {other}'s slot", running, other)):  # fmt: skip
            target.import_slots(np.array([at], np.int32), state)
            v = target.process_many(np.full(len(later), at, np.int32), ts[later], _rows(X, later))
            _same(_take(whole, later), v, f"key {key}'s slice imported into {name} at slot {at} vs uninterrupted")
    rest = np.arange(half, len(slots))
    _same(_take(whole, rest), det.process_many(slots[rest], ts[rest], _rows(X, rest)), "exporter after exporting")


def check_slots_codec_roundtrip(factory: Factory) -> None:
    """Every key's slice survives the snapshot codec (msgpack, no pickle) and re-exports identically.

    Imported at other slot numbers of a fresh instance, the keys continue as in the uninterrupted run (unless
    the detector's ``slice_caveat()`` says its slices can't hold everything).
    """
    slots, ts, X, _ = synthetic_stream()
    half = len(slots) // 2
    det = factory()
    det.process_many(slots[:half], ts[:half], _rows(X, np.arange(half)))
    keys = np.unique(slots).astype(np.int32)
    states = det.export_slots(keys)
    assert len(states) == len(keys) and all(isinstance(s, dict) for s in states), "one dict per slot"
    kind = f"detector/{det.kind}/slots"
    blob = codec.encode(kind, det.state_version, {}, states)
    moved = (keys[::-1] + 3).astype(np.int32)  # other slot numbers, in another order
    twin = det.fresh()
    twin.import_slots(moved, codec.decode(blob, kind=kind, version=det.state_version)["state"])
    again = codec.encode(kind, det.state_version, {}, twin.export_slots(moved))
    assert again == blob, "a slice imported and exported again differs from the original"
    if det.slice_caveat() is None:
        whole = _run(factory(), slots, ts, X, [])
        rest = np.arange(half, len(slots))
        remap = np.zeros(int(keys.max()) + 1, np.int32)
        remap[keys] = moved
        v = twin.process_many(remap[slots[rest]], ts[rest], _rows(X, rest))
        _same(_take(whole, rest), v, "slices through the codec at other slots vs uninterrupted")


def check_import_none_resets(factory: Factory) -> None:
    """Importing ``None`` resets a slot, and a never-seen slot's slice is a fresh slot's: both behave as fresh."""
    slots, ts, X, _ = synthetic_stream()
    det = factory()
    det.process_many(slots, ts, X)
    unseen = int(slots.max()) + 5
    det.import_slots(np.array([0, 1], np.int32), [None, det.export_slots(np.array([unseen], np.int32))[0]])
    later = ts[-1] + 10_000_000 + np.arange(20, dtype=np.int64) * 100
    Xl = {k: v[:20] for k, v in X.items()}
    for at in (0, 1):
        fresh = factory()
        at_slots = np.full(20, at, np.int32)
        _same(det.process_many(at_slots, later, Xl), fresh.process_many(at_slots, later, Xl),
              f"slot {at} after importing {'None' if at == 0 else 'an unseen slot'} vs a fresh slot")  # fmt: skip


def check_fresh_is_empty_and_independent(factory: Factory) -> None:
    """``fresh()`` of a busy detector runs like a new one, and running it leaves the original untouched."""
    slots, ts, X, _ = synthetic_stream()
    det = factory()
    det.process_many(slots, ts, X)
    before = codec.encode("x", 1, {}, det.snapshot())
    twin = det.fresh()
    assert type(twin) is type(det) and twin.params() == det.params(), "fresh() changed the type or the params"
    _same(_run(factory(), slots, ts, X, []), _run(twin, slots, ts, X, []), "fresh() vs a new detector")
    assert codec.encode("x", 1, {}, det.snapshot()) == before, "running fresh() changed the original's state"


def check_explain_many(factory: Factory) -> None:
    """A detector with ``explain_many`` gives one list per asked row, most anomalous first, finite scores.

    Flagged rows get at least one contribution; explaining nothing gives nothing; explaining doesn't change state.
    """
    det = factory()
    if not can_explain(det):
        return
    slots, ts, X, _ = synthetic_stream()
    v = _run(det, slots, ts, X, [])
    before = codec.encode("x", 1, {}, det.snapshot())
    assert det.explain_many(X, v, np.empty(0, np.int64)) == [], "explaining no rows gave something"
    rows = np.r_[np.flatnonzero(v.flag), np.flatnonzero(v.ready & ~v.flag)[:5]]
    out = det.explain_many(X, v, rows)
    assert len(out) == len(rows), f"{len(out)} explanations for {len(rows)} rows"
    for i, contribs in zip(rows.tolist(), out, strict=True):
        assert all(isinstance(c, Contribution) for c in contribs), f"row {i}: not Contributions"
        assert not v.flag[i] or contribs, f"flagged row {i} has no contribution"
        scores = [abs(c.score) for c in contribs]
        assert all(np.isfinite(scores)), f"row {i}: non-finite contribution score"
        assert scores == sorted(scores, reverse=True), f"row {i}: not most anomalous first: {contribs}"
        assert len({c.feature for c in contribs}) == len(contribs), f"row {i}: a feature twice"
    assert codec.encode("x", 1, {}, det.snapshot()) == before, "explain_many changed the state"


def check_params_and_docs(factory: Factory) -> None:
    """Params rebuild an equal detector; the class has an executed Examples section."""
    det = factory()
    twin = type(det)(**det.params())
    assert twin.params() == det.params()
    assert "Examples:" in (type(det).__doc__ or ""), "detector docstring lacks an Examples: section"
    assert repr(det).startswith(type(det).__name__)


def check_quality_floor(factory: Factory) -> None:
    """On the synthetic stream's injected spikes, flagged rows are mostly spikes (ROC AUC of scores > 0.7)."""
    det = factory()
    if not det.fields:
        return
    slots, ts, X, labels = synthetic_stream(n=3000, seed=3)
    v = _run(det, slots, ts, X, [])
    s, y = v.score[v.ready], labels[v.ready]
    if y.sum() == 0 or y.sum() == len(y):
        raise AssertionError("no ready spikes to score")
    order = np.argsort(s, kind="stable")
    ranks = np.empty(len(s))
    ranks[order] = np.arange(1, len(s) + 1)
    auc = (ranks[y == 1].sum() - y.sum() * (y.sum() + 1) / 2) / (y.sum() * (len(y) - y.sum()))
    assert auc > 0.7, f"ROC AUC {auc:.3f} on injected spikes"


ALL_CHECKS = [
    check_batch_equals_per_event,
    check_snapshot_roundtrip,
    check_snapshot_is_immutable,
    check_deterministic,
    check_causal,
    check_finite_and_calibrated,
    check_input_not_mutated,
    check_missing_values,
    check_score_one_is_pure,
    check_reset_slots,
    check_params_and_docs,
    check_quality_floor,
    check_slots_continue_elsewhere,
    check_slots_codec_roundtrip,
    check_import_none_resets,
    check_fresh_is_empty_and_independent,
    check_explain_many,
]


def yield_checks(det: Any) -> Iterator[Callable[[Factory], None]]:
    """The checks that apply to ``det`` (skips need a reason in its ``_skip_checks()``)."""
    skips: dict[str, str] = getattr(det, "_skip_checks", lambda: {})()
    for check in ALL_CHECKS:
        if check.__name__ not in skips:
            yield check


def check_detector(factory: Factory) -> None:
    """Run every applicable check on detectors made by ``factory``."""
    for check in yield_checks(factory()):
        check(factory)
