"""Telemetry of the services app: RED windows, the live service graph, and the ``service_graph`` step.

RED windows per service and call edge are :mod:`.red`, the graph :mod:`.graph`; the step (:mod:`.step`) keeps
both over the ``otlp`` source's span rows.
"""

from vigil.apps.services.telemetry.graph import ServiceGraph
from vigil.apps.services.telemetry.red import RED_COLUMNS, RedWindows
from vigil.apps.services.telemetry.step import STEP, ServiceTelemetryStep

__all__ = ["RED_COLUMNS", "STEP", "RedWindows", "ServiceGraph", "ServiceTelemetryStep"]
