"""Detectors: score micro-batches of many keys, prequentially (see :mod:`vigil.detectors.base`).

* :class:`SlidingZScore` — z-score over an exact per-key event-time window, with a long baseline
  as fallback when the window holds too few events.
* :class:`VelocityRule` — too many events of one key in a window.

Every detector is registered by its ``kind`` (the name YAML configs use) and checked by the
conformance suite in :mod:`vigil.testing.detectors`.
"""

from vigil.detectors.base import BaseDetector, Detector, Verdicts, register, registry
from vigil.detectors.velocity import VelocityRule
from vigil.detectors.zscore import SlidingZScore

__all__ = ["BaseDetector", "Detector", "SlidingZScore", "VelocityRule", "Verdicts", "register", "registry"]
