"""Vigil pipelines as Apache Flink jobs (PyFlink); see ``job.py``."""
