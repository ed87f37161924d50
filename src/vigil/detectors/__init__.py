"""Detectors: score micro-batches of many keys, prequentially (see :mod:`vigil.detectors.base`).

Statistics: :class:`SlidingZScore` (exact event-time window, long baseline as fallback),
:class:`EWZScore` (exponentially weighted), :class:`RobustZScore` (median/MAD). Change detection:
:class:`CUSUM`, :class:`PageHinkley`. Forecasting: :class:`HoltWinters`, :class:`ForecastResidual`
(any forecaster). Online ML: :class:`HalfSpaceTrees` (vectorized across keys),
:class:`RiverDetector` (any River detector). Offline-trained: :class:`IsolationForestDetector` (ONNX
Runtime), :class:`OnnxSequence` (a PyTorch sequence autoencoder exported to ONNX). Rules: :class:`VelocityRule`,
:class:`ThresholdRule`, :class:`ExpressionRule`. Combining:
:class:`Ensemble`; :class:`LevelRarity` (the NAB configuration). Joint multivariate: :class:`Mahalanobis`
(Mahalanobis distance or streaming PCA of a lag embedding; the SMAP/MSL configuration). Calibration:
:class:`Calibrated` (anomaly likelihood over any detector's raw score), :class:`TailCalibrated` (the
tail-probability contract of :mod:`vigil.detectors.calibration` over any detector's raw score).

Every detector is registered by its ``kind`` (the name YAML configs use) and checked by the
conformance suite in :mod:`vigil.testing.detectors`. The detector that serves a model from the registry
(``registry_model``) lives with the registry, in :mod:`vigil.models.serving`, and registers itself when
that is imported (pipeline files do it for you).
"""

from vigil.detectors.base import BaseDetector, Detector, Verdicts, register, registry
from vigil.detectors.cusum import CUSUM
from vigil.detectors.ensemble import Ensemble
from vigil.detectors.ewzscore import EWZScore
from vigil.detectors.forecast import EWForecaster, ForecastResidual
from vigil.detectors.holtwinters import HoltWinters, HoltWintersForecaster
from vigil.detectors.hst import HalfSpaceTrees
from vigil.detectors.iforest import IsolationForestDetector
from vigil.detectors.likelihood import AnomalyLikelihood, Calibrated
from vigil.detectors.mad import RobustZScore
from vigil.detectors.mahalanobis import Mahalanobis
from vigil.detectors.onnx_sequence import OnnxSequence
from vigil.detectors.pagehinkley import PageHinkley
from vigil.detectors.pattern import PatternRule
from vigil.detectors.rarity import LevelRarity
from vigil.detectors.river_adapter import RiverDetector
from vigil.detectors.rules import ExpressionRule, ThresholdRule
from vigil.detectors.tailcal import TailCalibrated
from vigil.detectors.velocity import VelocityRule
from vigil.detectors.zscore import SlidingZScore

__all__ = [
    "CUSUM", "AnomalyLikelihood", "BaseDetector", "Calibrated", "Detector", "EWForecaster", "EWZScore", "Ensemble",
    "ExpressionRule", "ForecastResidual", "HalfSpaceTrees", "HoltWinters", "HoltWintersForecaster",
    "IsolationForestDetector", "LevelRarity", "Mahalanobis", "OnnxSequence", "PageHinkley", "PatternRule",
    "RiverDetector", "RobustZScore", "SlidingZScore", "TailCalibrated", "ThresholdRule", "VelocityRule", "Verdicts",
    "register", "registry",
]  # fmt: skip
