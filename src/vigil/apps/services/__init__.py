"""Microservice telemetry: a simulated shop emitting OpenTelemetry traces and metrics (``sim``)."""
