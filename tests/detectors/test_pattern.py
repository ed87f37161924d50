"""The pattern rule (CEP): card testing — three or more payments under 2.00, then one over 200, within 10 min."""

from __future__ import annotations

import numpy as np
import pytest

from vigil.detectors import PatternRule

CARD_TESTING = [{"field": "amount", "below": 2.0, "at_least": 3}, {"field": "amount", "above": 200}]
MIN = 60_000


def run(amounts, minutes, keys=None, within="10m"):
    rule = PatternRule(sequence=CARD_TESTING, within=within)
    n = len(amounts)
    slots = np.zeros(n, np.int32) if keys is None else np.asarray(keys, np.int32)
    v = rule.process_many(slots, (np.asarray(minutes, float) * MIN).astype(np.int64),
                          {"amount": np.asarray(amounts, float)})
    return v.fire.tolist()


def test_three_small_then_a_big_one_fires_once_and_is_consumed():
    assert run([1, 1, 1, 500, 900], [0, 1, 2, 3, 4]) == [False, False, False, True, False]


def test_other_payments_in_between_do_not_break_the_sequence():
    assert run([1, 40, 1, 60, 1, 500], [0, 1, 2, 3, 4, 5])[-1] is True


def test_two_small_are_not_enough():
    assert not any(run([1, 1, 500], [0, 1, 2]))


def test_the_whole_match_fits_in_the_time_bound():
    assert not any(run([1, 1, 1, 500], [0, 1, 2, 11]))  # 11 minutes from the first small payment
    # an old small payment doesn't block a later match: the latest start counts
    assert run([1, 1, 1, 1, 500], [0, 8, 9, 9.5, 10.5])[-1] is True


def test_keys_are_independent():
    fire = run([1, 1, 1, 1, 1, 500, 500], [0, 0, 1, 1, 2, 3, 3], keys=[0, 1, 0, 1, 0, 0, 1])
    assert fire == [False] * 5 + [True, False]  # key 1 has two small payments only


def test_bad_sequences_fail_at_construction():
    with pytest.raises(ValueError, match="needs `below` or `above`"):
        PatternRule(sequence=[{"field": "amount"}])
    with pytest.raises(ValueError, match="`at_least` must be an integer"):
        PatternRule(sequence=[{"field": "amount", "below": 1, "at_least": 0}])
    with pytest.raises(ValueError, match="unknown keys"):
        PatternRule(sequence=[{"field": "amount", "below": 1, "atleast": 2}])
