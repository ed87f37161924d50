"""Vigil on other engines: each subpackage is the only place that imports its system.

- :mod:`vigil.integrations.flink`: the same pipeline YAML as an Apache Flink job (PyFlink).
- :mod:`vigil.integrations.temporal`: durable playbooks on Temporal.
"""
