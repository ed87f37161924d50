"""Conformance checks of the calibration contract and of learning through level shifts (issue 13).

* :func:`alarm_fraction`: on stationary noise, the fraction of ready rows with ``calibrated >= t`` for
  several ``t``; the contract (:mod:`vigil.detectors.calibration`) says it is close to ``1 - t``.
* :func:`frozen_after_step`: after a sustained step change, the fraction of rows still flagged late in
  the new regime; a detector whose protected baseline never re-learns flags (nearly) all of them.

``check_calibration_contract`` and ``check_relearns_after_step`` turn them into assertions. They are
separate from :data:`vigil.testing.detectors.ALL_CHECKS` while the older detectors are moved onto the
contract (branch ``detect13-contract-wip`` holds that unfinished move);
``bench/multivariate/research/contract_audit.py`` prints where every registered detector stands.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

Factory = Callable[[], Any]
LEVELS = (0.9, 0.99, 0.999)


def _stream(n: int, seed: int, step_at: int | None = None) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """One key, one row a second, ``value`` around 30 (the regime of the conformance suite's stream)."""
    rng = np.random.default_rng(seed)
    x = 30.0 * np.exp(0.1 * rng.standard_normal(n))
    if step_at is not None:
        x[step_at:] *= 2.0
    return np.zeros(n, np.int32), np.arange(n, dtype=np.int64) * 1000, {"value": x}


def _run(det: Any, slots: np.ndarray, ts: np.ndarray, X: dict[str, np.ndarray], batch: int = 4096) -> Any:
    from vigil.detectors.base import Verdicts

    parts = [det.process_many(slots[a : a + batch], ts[a : a + batch], {k: v[a : a + batch] for k, v in X.items()})
             for a in range(0, len(slots), batch)]  # fmt: skip
    return Verdicts.concat(parts)


def alarm_fraction(factory: Factory, n: int = 30_000, seed: int = 11) -> dict[float, float]:
    """``{t: fraction of ready rows with calibrated >= t}`` on stationary noise (the first third is warm-up)."""
    v = _run(factory(), *_stream(n, seed))
    ready = np.asarray(v.ready, bool).copy()
    ready[: n // 3] = False
    c = np.asarray(v.calibrated, np.float64)[ready]
    return {t: float(np.mean(c >= t)) if len(c) else float("nan") for t in LEVELS}


def frozen_after_step(factory: Factory, n: int = 20_000, seed: int = 12) -> float:
    """Fraction of rows flagged in the last quarter of a stream whose level doubles at its middle."""
    v = _run(factory(), *_stream(n, seed, step_at=n // 2))
    return float(np.mean(np.asarray(v.flag, bool)[3 * n // 4 :]))


def check_calibration_contract(factory: Factory, tolerance: float = 2.0) -> None:
    """On stationary noise, the alarm fraction at ``calibrated >= t`` is within a factor ``tolerance`` of ``1 - t``.

    For t = 0.9, 0.99 and 0.999 (20,000 scored rows after a warm-up of 10,000: about 20 expected at 0.999).
    """
    got = alarm_fraction(factory)
    for t, f in got.items():
        want = 1.0 - t
        assert want / tolerance <= f <= want * tolerance, f"alarm fraction at calibrated >= {t}: {f:.5f}, want ~{want}"


def check_relearns_after_step(factory: Factory, max_flagged: float = 0.1) -> None:
    """No detector stays frozen after a step change: late in the new regime few rows are still flagged.

    The level doubles half-way through 20,000 rows; of the last quarter (5,000 rows after the step) at most
    ``max_flagged`` may be flagged. A frozen baseline flags (nearly) all of them; the 10 % allowance is for
    detectors whose bar is in the field's units (Page-Hinkley) or whose windows are short, which see the new
    regime's doubled noise.
    """
    f = frozen_after_step(factory)
    assert f <= max_flagged, f"still flags {f:.1%} of the rows long after a step change (frozen baseline)"
