"""Where every registered detector stands on the calibration contract and on re-learning after a step.

    PYTHONPATH=src .venv/bin/python bench/multivariate/contract_audit.py

For each registered kind, its first `_test_params()` set (the conformance suite's), and the same wrapped in
`tail_calibrated`: the alarm fraction at calibrated >= 0.9 / 0.99 / 0.999 on stationary noise (the contract
wants ~0.1 / 0.01 / 0.001) and the fraction of rows still flagged late after the level doubles.
"""

import json
import sys

from vigil.detectors import registry
from vigil.testing.contract import alarm_fraction, frozen_after_step

rows = []
for kind, cls in sorted(registry().items()):
    params = cls._test_params()[0]
    fields = cls(**params).fields
    if fields and tuple(fields) != ("value",):
        continue
    for wrapped in (False, True):
        if wrapped and kind in ("tail_calibrated",):
            continue
        if wrapped:
            def fac(p=params, k=kind):
                return registry()["tail_calibrated"](
                            {"kind": k, "params": p}, history=2000, min_history=200
                        )
        else:
            def fac(p=params, c=cls):
                return c(**p)
        try:
            af = alarm_fraction(fac)
            fr = frozen_after_step(fac)
        except Exception as exc:  # noqa: BLE001 - an audit: report and go on
            print(f"{kind:20s} wrapped={wrapped}: error {exc}", file=sys.stderr)
            continue
        row = {
            "kind": kind,
            "wrapped": wrapped,
            **{f"alarm@{t}": round(v, 5) for t, v in af.items()},
            "flagged_late_after_step": round(fr, 4),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
