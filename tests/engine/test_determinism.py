"""Same input, same output: any cut into micro-batches gives the same alerts, ids included — with key TTL on,
late events and their scoring, and keys that expire and come back within one batch.
"""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vigil.dataflow import Pipeline
from vigil.detectors import EWZScore, SlidingZScore, VelocityRule
from vigil.engine import EmbeddedRunner
from vigil.io.memory import MemorySource
from vigil.io.schema import Schema
from vigil.io.sinks import MemorySink

T0 = 1_700_000_000_000
SCHEMA = Schema("user", "ts", fields=("amount",), extra=("id",))


def _run(rows: list[dict], batch: int, tmp: str) -> list[tuple]:
    sink = MemorySink()
    p = (Pipeline("det").source(MemorySource(rows, batch_size=batch, schema=SCHEMA))
         .watermark("1s", idle_timeout=None).key_ttl("5s").event_ids("id").micro_batches(max_rows=batch)
         .detect("burst", VelocityRule(window="2s", max_count=3))
         .detect("z", SlidingZScore(field="amount", window="10s", min_count=3, baseline_halflife=5, min_baseline=3))
         .detect("ew", EWZScore(field="amount", halflife=5, min_count=3))
         .alerts_to(sink))  # fmt: skip
    EmbeddedRunner(p, out_dir=tmp).run()
    return sorted((a.id, a.key, a.event_id, round(a.score, 9), a.message) for a in sink.items)


@st.composite
def streams(draw: st.DrawFn) -> list[dict]:
    n = draw(st.integers(20, 220))
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    keys = rng.integers(0, draw(st.integers(1, 6)), n)
    gaps = rng.choice([0, 200, 900, 3_000, 7_000], n, p=[0.2, 0.4, 0.2, 0.1, 0.1])  # some > the 5 s TTL
    ts = T0 + np.cumsum(gaps) - rng.integers(0, 2_500, n) * (rng.random(n) < 0.25)  # disorder: some late rows
    amount = rng.lognormal(3, 1, n) * np.where(rng.random(n) < 0.05, 20, 1)
    return [{"user": f"u{k}", "ts": int(t), "amount": float(a), "id": f"e{i}"}
            for i, (k, t, a) in enumerate(zip(keys.tolist(), ts.tolist(), amount.tolist(), strict=True))]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=streams(), a=st.integers(1, 40), b=st.integers(41, 400))
def test_any_cut_into_batches_gives_identical_alerts(rows, a, b, tmp_path):
    one = _run(rows, 1, str(tmp_path))
    assert _run(rows, a, str(tmp_path)) == one
    assert _run(rows, b, str(tmp_path)) == one


def test_a_key_expires_between_two_of_its_rows_in_one_batch(tmp_path):
    """The watermark passes the key's last event + TTL inside a batch: its state resets right there."""
    rows = [{"user": "a", "ts": T0 + i * 100, "amount": 10.0 + i, "id": f"a{i}"} for i in range(5)]
    rows += [{"user": "b", "ts": T0 + 20_000, "amount": 1.0, "id": "b0"}]  # moves the watermark 14 s past a's last
    rows += [{"user": "a", "ts": T0 + 20_100 + i, "amount": 10.0, "id": f"a-again{i}"} for i in range(4)]

    def ready(batch: int) -> dict[str, bool]:
        scores = MemorySink()
        p = (Pipeline("ttl").source(MemorySource(rows, batch_size=batch, schema=SCHEMA))
             .watermark("1s", idle_timeout=None).key_ttl("5s").event_ids("id").micro_batches(max_rows=batch)
             .detect("ew", EWZScore(field="amount", halflife=5, min_count=3)).alerts_to(MemorySink())
             .scores_to(scores))  # fmt: skip
        EmbeddedRunner(p, out_dir=str(tmp_path)).run()
        return {r["event_id"]: r["ready"] for r in scores.items}

    whole = ready(1000)
    assert whole == ready(1)
    assert whole["a4"] and not whole["a-again0"]  # the state expired: `a` is new again, warming up
