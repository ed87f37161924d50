"""Vigil: real-time anomaly detection on event streams."""

__version__ = "0.1.0"
