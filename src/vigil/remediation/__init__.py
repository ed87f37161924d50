"""Playbooks that act on incidents: allow-listed, guarded, audited, dry-run by default, durable on Temporal."""

from vigil.remediation.engine import InProcessExecutor, Remediator, StepRunner
from vigil.remediation.spec import PlaybookSet, load_playbooks, parse_playbooks
from vigil.remediation.store import RemediationStore

__all__ = [
    "InProcessExecutor",
    "PlaybookSet",
    "RemediationStore",
    "Remediator",
    "StepRunner",
    "load_playbooks",
    "parse_playbooks",
]
