"""KeyedDetector: every registered detector run per key (Flink-shaped and embedded) equals its batch path."""

from __future__ import annotations

import numpy as np
import pytest

import vigil.models.serving  # noqa: F401  (registers `registry_model`)
from vigil.dataflow.keyed import FlinkContextAdapter, KeyedDetector
from vigil.dataflow.operators import KeyedOperatorHost
from vigil.detectors import Ensemble, EWZScore, HalfSpaceTrees, registry
from vigil.errors import SnapshotError
from vigil.testing.flink import FakeFlinkContext, check_operator, run_keyed, stream_events

CASES = [
    pytest.param(cls, params, id=f"{cls.__name__}({params})")
    for _kind, cls in sorted(registry().items())
    for params in cls._test_params()
]


@pytest.mark.parametrize(("cls", "params"), CASES)
def test_keyed_detector_equals_the_batch_path(cls, params):
    check_operator(lambda: cls(**params))


@pytest.mark.parametrize("kind", ["sliding_zscore", "holt_winters", "level_rarity", "ensemble", "velocity"])
def test_buffered_micro_batches_give_the_same_verdicts(kind):
    cls = registry()[kind]
    params = cls._test_params()[0]
    check_operator(lambda: cls(**params), buffer=7)


def test_detectors_with_state_beyond_a_key_are_refused():
    global_hst = HalfSpaceTrees(fields="value", n_trees=3, height=3, window_size=10, per_key=False)
    with pytest.raises(ValueError, match="per_key=False"):
        KeyedDetector(global_hst, step="hst")
    ewz = {"name": "ewz", "kind": "ew_zscore", "params": {"field": "value", "min_count": 5}}
    rank = Ensemble([ewz], combine="rank", rank_window=10, rank_min_history=5)
    with pytest.raises(ValueError, match="rank"):
        KeyedDetector(rank)


def test_state_is_one_codec_blob_per_key_and_checked_when_read():
    events, wms = stream_events(n=120, keys=3)
    op = KeyedDetector(EWZScore(field="value", halflife=20, min_count=5), emit=("scores",))
    ctx = FakeFlinkContext()
    for e in events:
        ctx.set_current(e.key, e.ts)
        list(op.process(e, FlinkContextAdapter(ctx, ctx.get_state)))
    assert sorted(ctx.store) == [("detector", "k0"), ("detector", "k1"), ("detector", "k2")]
    assert all(isinstance(b, bytes) for b in ctx.store.values())
    other = KeyedDetector(EWZScore(field="value", halflife=20, min_count=5))
    other._kind = "detector/cusum/slot"  # a slice written by another detector kind
    ctx.set_current("k0", 10**9)
    with pytest.raises(SnapshotError):
        list(other.process(events[0], FlinkContextAdapter(ctx, ctx.get_state)))


def test_fake_context_is_flink_shaped_and_strict_about_bytes():
    ctx = FakeFlinkContext()
    ctx.set_current("a", 5)
    st = ctx.get_state("s")
    assert st.value() is None and ctx.get_current_key() == "a" and ctx.timestamp() == 5
    st.update(b"x")
    ctx.set_current("b", 6)
    assert st.value() is None  # keyed: b has none
    with pytest.raises(TypeError):
        st.update({"not": "bytes"})
    ts = ctx.timer_service()
    ts.register_event_time_timer(10)
    ts.register_event_time_timer(10)
    ts.register_event_time_timer(12)
    ts.delete_event_time_timer(12)
    assert ctx.advance_watermark(9) == [] and ctx.advance_watermark(11) == [(10, "b")]
    assert ts.current_watermark() == 11 and ctx.advance_watermark(3) == [] and ts.current_watermark() == 11


def test_alerts_carry_keys_event_ids_and_contributions():
    events, wms = stream_events(n=400, keys=2, seed=4)
    op = KeyedDetector(EWZScore(field="value", halflife=20, min_count=5, threshold=3), step="z", pipeline="p")
    alerts = run_keyed(op, events, wms)
    assert alerts and {a.key for a in alerts} <= {"k0", "k1"}
    assert all(a.contributions and a.contributions[0].feature == "value" for a in alerts)
    host = KeyedOperatorHost(KeyedDetector(EWZScore(field="value", halflife=20, min_count=5, threshold=3),
                                           step="z", pipeline="p", state_format="plain"))
    again = host.process([e.key for e in events], [e.ts for e in events],
                         {"value": [e.fields["value"] for e in events]}, wms)
    assert [(a.key, a.event_ts_ms) for a in again] == [
        (a.key, a.event_ts_ms) for a in sorted(alerts, key=lambda a: int(a.event_id))]
    assert len({a.id for a in alerts}) == len(alerts)  # ids from the events' `id` attribute: distinct
    assert np.all([isinstance(v, dict) for v in host.state.values()])
