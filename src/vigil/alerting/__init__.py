"""Alerts: the alert record, the policy and manager (group, dedup, inhibit, silence, route), and the alert store.

The manager, policy and store are imported lazily, so that ``vigil.alerting.alert`` (imported by the engine on
its hot path) stays free of pydantic and sqlite3.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from vigil.alerting.alert import Alert, alert_id

if TYPE_CHECKING:
    from vigil.alerting.manager import AlertManager, AlertState, DeliveryReport, Dispatcher, labels_of
    from vigil.alerting.policy import AlertPolicy, Matcher
    from vigil.alerting.store import AlertStore

__all__ = ["Alert", "AlertManager", "AlertPolicy", "AlertState", "AlertStore", "DeliveryReport", "Dispatcher",
           "Matcher", "alert_id", "labels_of"]  # fmt: skip

_LAZY = {"AlertManager": "manager", "AlertState": "manager", "DeliveryReport": "manager", "Dispatcher": "manager",
         "labels_of": "manager", "AlertPolicy": "policy", "Matcher": "policy", "AlertStore": "store"}  # fmt: skip


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"vigil.alerting.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
