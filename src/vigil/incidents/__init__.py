"""Incidents: correlated alerts with a lifecycle (open, mitigated, resolved), a timeline and ranked causes."""

from vigil.incidents.correlate import Correlator, Signal
from vigil.incidents.model import Cause, Incident, TimelineEntry
from vigil.incidents.store import IncidentStore

__all__ = ["Cause", "Correlator", "Incident", "IncidentStore", "Signal", "TimelineEntry"]
