"""Durable playbooks on Temporal: the workflow, its activities, a worker and the remediation executor.

Needs the ``temporal`` extra (``temporalio``) and a server (``make temporal-up``: 127.0.0.1:7233).
"""

from vigil.integrations.temporal.executor import TemporalExecutor, run_worker, workflow_id
from vigil.integrations.temporal.workflow import PlaybookInput, PlaybookWorkflow

__all__ = ["PlaybookInput", "PlaybookWorkflow", "TemporalExecutor", "run_worker", "workflow_id"]
