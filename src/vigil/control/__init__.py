"""The control plane: versioned configurations and live reconfiguration of running pipelines."""

from vigil.control.history import ConfigHistory
from vigil.control.live import LiveControl, LivePlan, apply_plan, plan_changes

__all__ = ["ConfigHistory", "LiveControl", "LivePlan", "apply_plan", "plan_changes"]
