"""The control plane: versioned configurations and live reconfiguration of running pipelines."""

from vigil.control.live import LiveControl, LivePlan, apply_plan, history_for, plan_changes
from vigil.state.history import ConfigHistory

__all__ = ["ConfigHistory", "LiveControl", "LivePlan", "apply_plan", "history_for", "plan_changes"]
