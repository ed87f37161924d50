"""The alert manager: policy and manager (group, dedup, inhibit, silence, route), notifiers, and the alert store.

The alert record itself (:class:`~vigil.types.Alert`) lives in :mod:`vigil.types`, below every runtime. The
manager, policy and store are imported lazily, so ``import vigil.alerting`` stays free of pydantic and sqlite3.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from vigil.types import Alert, alert_id

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
