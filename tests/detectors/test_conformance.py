"""Every registered detector × every parameter set × every conformance check."""

import pytest

import vigil.models.serving  # noqa: F401  (registers `registry_model`, served from the model registry)
from vigil.detectors import registry
from vigil.testing.detectors import yield_checks

CASES = []
for _kind, cls in sorted(registry().items()):
    for params in cls._test_params():
        det = cls(**params)
        for check in yield_checks(det):
            CASES.append(
                pytest.param(cls, params, check, id=f"{cls.__name__}({params}):{check.__name__}")
            )


@pytest.mark.parametrize(("cls", "params", "check"), CASES)
def test_detector_conformance(cls, params, check):
    check(lambda: cls(**params))


def test_every_detector_has_test_params():
    assert registry(), "no detectors registered"
    for kind, cls in registry().items():
        assert cls._test_params(), f"{kind} has no _test_params()"
