"""Alerts: the alert record with a deterministic id (grouping, routing and notifiers come later)."""

from vigil.alerting.alert import Alert, alert_id

__all__ = ["Alert", "alert_id"]
