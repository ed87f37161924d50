"""The card-fraud detector: the brief's beginner project, rules and statistics side by side.

* ``amount_z`` — per user, the z-score of log(amount) over the last 60 s of event time (the seed's
  "rolling 1-minute window"), flagged beyond 3 standard deviations. A card holder rarely pays ten
  times a minute, so when the window holds fewer than ``min_count`` (10) earlier payments the
  z-score is taken against the user's long baseline instead: an exponentially weighted mean and
  variance of log(amount) with a half-life of 50 payments, used once it has seen 10. Log amounts,
  because spending is right-skewed: paying 8× the usual is as odd as paying an eighth of it (card
  testing uses tiny amounts). Flagged payments are not learned (``protect``), so an attack does not
  teach the baseline that attacks are normal.
* ``velocity`` — more than 5 payments of one user within 60 s of event time. It fires once per
  burst and the alert covers the burst's window.
* ``test_then_cashout`` — a ``pattern`` (CEP) step: three or more payments under 2.00 followed by one
  over 200, all within 10 minutes of event time (a stolen card tested with tiny amounts, then cashed
  out). Too slow for the velocity rule and, per payment, unremarkable to a z-score of its own history.

The stream is ordered by event time with bounded-out-of-orderness watermarks (2 s); a payment
later than that goes to the late output rather than being scored against the wrong window.
"""

from __future__ import annotations

from typing import Any

from vigil.dataflow.pipeline import Pipeline
from vigil.detectors import PatternRule, SlidingZScore, VelocityRule


def fraud_pipeline(source: Any, *, name: str = "fraud", max_delay: str = "2s") -> Pipeline:
    """The fraud pipeline over ``source`` (records keyed by user with an ``amount`` field and ``txn_id`` ids)."""
    return (
        Pipeline(name)
        .source(source)
        .watermark(max_delay, idle_timeout="5s")
        .micro_batches(max_rows=8192, max_delay="5ms", queue_batches=4)
        .key_ttl("6h")
        .event_ids("txn_id")
        .detect(
            "amount_z",
            SlidingZScore(field="amount", window="60s", threshold=3.0, min_count=10, baseline_halflife=50,
                          min_baseline=10, protect=True, transform="log"),
        )  # fmt: skip
        .detect("velocity", VelocityRule(window="60s", max_count=5), severity="critical")
        .detect("test_then_cashout", test_then_cashout(), severity="critical")
    )


def test_then_cashout() -> PatternRule:
    """The card-testing-then-cash-out pattern (a fresh detector: each pipeline owns its state)."""
    return PatternRule(
        sequence=[{"field": "amount", "below": 2.0, "at_least": 3}, {"field": "amount", "above": 200.0}],
        within="10m",
        name="card tested, then cashed out",
    )

