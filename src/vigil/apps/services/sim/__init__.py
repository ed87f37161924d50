"""A simulated microservice shop that emits OpenTelemetry traces and metrics, with faults and ground truth.

Start with :class:`ServiceSimulator` (``simulator.py``); the CLI is ``vigil generate services``.
"""

from vigil.apps.services.sim.faults import FAULT_KIND, FAULT_TYPES, LEGIT_TYPES
from vigil.apps.services.sim.metrics import METRICS
from vigil.apps.services.sim.simulator import ServiceSimSpec, ServiceSimulator, Window
from vigil.apps.services.sim.topology import ZONES, shop_topology

__all__ = ["FAULT_KIND", "FAULT_TYPES", "LEGIT_TYPES", "METRICS", "ZONES", "ServiceSimSpec", "ServiceSimulator",
           "Window", "shop_topology"]
