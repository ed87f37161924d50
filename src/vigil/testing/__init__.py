"""Conformance suites shipped with Vigil, so third-party detectors, sources and sinks can run them."""
