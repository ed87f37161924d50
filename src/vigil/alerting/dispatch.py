"""Delivery: the :class:`Dispatcher` hands the alert manager's notifications to the notifiers of their receiver.

Re-exported by :mod:`vigil.alerting.manager` (``from vigil.alerting.manager import Dispatcher`` keeps working).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from vigil.alerting.model import _wall_ms
from vigil.alerting.notification import Notification, Notifier
from vigil.alerting.store import AlertStore
from vigil.errors import NotifyError, StateError

log = logging.getLogger("vigil.alerting.manager")  # the logger these records have always gone to


@dataclass
class DeliveryReport:
    """What one :meth:`Dispatcher.deliver` did: sends per notifier, failures (with why), unrouted notifications."""

    sent: int = 0
    failed: int = 0
    unrouted: int = 0
    errors: list[dict[str, str]] = field(default_factory=list)


class Dispatcher:
    """Hands notifications to the notifiers of their receiver; never raises.

    A :class:`~vigil.errors.NotifyError` (or any other exception: a notifier bug must not stop the pipeline)
    is counted, logged and recorded in the store's notification log.

    Args:
        notifiers: receiver name -> the notifiers that deliver to it.
        store: where the notification log goes (optional).
        clock: processing time in epoch ms.
    """

    def __init__(self, notifiers: Mapping[str, list[Notifier]], *, store: AlertStore | None = None,
                 clock: Callable[[], int] | None = None) -> None:  # fmt: skip
        self.notifiers = {k: list(v) for k, v in notifiers.items()}
        self.store = store
        self.clock = clock or _wall_ms
        self.totals = {"sent": 0, "failed": 0, "unrouted": 0}

    def deliver(self, notifications: Iterable[Notification]) -> DeliveryReport:
        """Send each notification to every notifier of its receiver."""
        report = DeliveryReport()
        records: list[tuple[Any, ...]] = []
        for n in notifications:
            targets = self.notifiers.get(n.receiver, [])
            errors = []
            if not targets:
                report.unrouted += 1
                log.warning("no notifier for receiver %r: notification %s not delivered", n.receiver,
                            n.idempotency_key)  # fmt: skip
            for notifier in targets:
                try:
                    notifier.send(n)
                    report.sent += 1
                except Exception as exc:  # noqa: BLE001 - NotifyError expected; anything else is a notifier bug
                    what = str(exc) if isinstance(exc, NotifyError) else f"{type(exc).__name__}: {exc}"
                    report.failed += 1
                    err = {"receiver": n.receiver, "notifier": getattr(notifier, "name", type(notifier).__name__),
                           "idempotency_key": n.idempotency_key, "error": what}  # fmt: skip
                    report.errors.append(err)
                    errors.append(f"{err['notifier']}: {what}")
                    log.error("notifier %s failed on %s (%s): %s", err["notifier"], n.group_key, n.reason, what)
            records.append(self._record(n, "unrouted" if not targets else "failed" if errors else "delivered", errors))
        self._log(records)
        for k in self.totals:
            self.totals[k] += getattr(report, k)
        return report

    def _record(self, n: Notification, status: str, errors: list[str]) -> tuple[Any, ...]:
        now = self.clock() if status == "delivered" else None
        return (n.idempotency_key, n.receiver, n.group_key, n.reason, status, n.created_ms, now,
                "; ".join(errors) or None)  # fmt: skip

    def _log(self, records: list[tuple[Any, ...]]) -> None:
        """The delivery log of one :meth:`deliver`, in one transaction."""
        if self.store is None or not records:
            return
        try:
            self.store.record_notifications(records)
        except StateError as exc:
            log.error("could not log %d notification(s) (%s ...): %s", len(records), records[0][0], exc)

    def close(self) -> None:
        """Close every notifier (errors are logged)."""
        for targets in self.notifiers.values():
            for notifier in targets:
                try:
                    notifier.close()
                except Exception as exc:  # noqa: BLE001
                    log.error("closing notifier %s failed: %s", getattr(notifier, "name", notifier), exc)
