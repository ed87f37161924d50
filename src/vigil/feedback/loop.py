"""The feedback loop inside a running pipeline: the alert manager's :class:`~vigil.alerting.runtime.Suppressor`.

The alert manager hands every firing alert to :meth:`FeedbackLoop.filter` before grouping, and calls
:meth:`FeedbackLoop.learn` every ``learn_every`` (on its own thread): new true/false-positive labels in the
alert store (from the console or ``vigil alerts label``) become a new version of per-key bars
(:mod:`vigil.feedback.suppression`: bounded, versioned in ``<store dir>/feedback/``, ``vigil feedback
rollback|clear``), and a version set from the command line (a rollback) is picked up. Alerts under a bar are
counted and logged, never silently dropped.

Examples:
    >>> import tempfile
    >>> loop = FeedbackLoop(tempfile.mkdtemp(), learn_every={"learn_every": "10s"})
    >>> loop.learn_every_s, loop.version, loop.filter([]) == ([], [])
    (10.0, '', True)
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from vigil.errors import ConfigError
from vigil.feedback.suppression import FeedbackTuner, Suppressed, labels_from_store
from vigil.types import Alert, parse_duration_ms

log = logging.getLogger("vigil.feedback")


class FeedbackLoop:
    """Learned per-key bars applied to a pipeline's alerts, and learned again from new labels.

    Args:
        directory: the versions of the bars (a :class:`~vigil.state.history.ConfigHistory` folder).
        base: base bars per detector and feature of vote alerts (from the step kinds that declare them).
        learn_every: ``True`` (every 30 s), ``{learn_every: DURATION}`` (as in YAML), or seconds.
        keep_suppressed: how many of the latest suppressed alerts to keep for the console.
    """

    def __init__(self, directory: str | os.PathLike[str], *, base: dict[str, dict[str, float]] | None = None,
                 learn_every: Any = True, keep_suppressed: int = 200) -> None:  # fmt: skip
        self.learn_every_s = learn_interval_s(learn_every)
        self.tuner = FeedbackTuner(directory, base=base)
        self.suppressions = self.tuner.current()
        self._version: str | None = self.suppressions.version
        self._seen = -1
        self.suppressed: list[Suppressed] = []
        self.suppressed_count = 0
        self._keep = keep_suppressed

    @property
    def version(self) -> str:
        """The version of the bars in force (``""``: none learned yet)."""
        return self.suppressions.version

    def filter(self, alerts: list[Alert]) -> tuple[list[Alert], list[Suppressed]]:
        """``(kept, suppressed)``: the alerts re-evaluated against the bars in force; the suppressed are logged."""
        if not alerts or not len(self.suppressions):
            return alerts, []
        kept, gone = self.suppressions.filter(alerts)
        if gone:
            self.suppressed_count += len(gone)
            self.suppressed = (self.suppressed + gone)[-self._keep:]
            for g in gone:
                log.info("%s: %s", g.alert.key, g.reason)
        return kept, gone

    def learn(self, store: Any) -> None:
        """New labels in the store → a new version of the bars; a version set elsewhere (rollback) → loaded."""
        try:
            cur = self.tuner.history.current_version()
            if cur != self._version:  # rolled back or cleared from the CLI
                self.suppressions, self._version = self.tuner.current(), cur
            n = len(store.feedback())
            if n == self._seen:
                return
            self._seen = n
            labels = labels_from_store(store)
            if labels:
                learned = self.tuner.learn(labels, who="vigil feedback loop", why=f"{n} labels in the alert store")
                self.suppressions, self._version = learned, learned.version
                log.warning("feedback: %s in force (%d bars learned from %d labels)", learned.version,
                            len(learned), len(labels))  # fmt: skip
        except Exception:  # noqa: BLE001 - learning trouble must never stop alerting
            log.exception("feedback: learning from the labels failed; the bars in force stay")


def learn_interval_s(feedback: Any) -> float:
    """Seconds between two learning passes from ``alerting.feedback`` (``true`` or ``{learn_every: 30s}``)."""
    if feedback is True:
        return 30.0
    if isinstance(feedback, int | float) and not isinstance(feedback, bool) and feedback > 0:
        return float(feedback)
    if isinstance(feedback, Mapping):
        every = feedback.get("learn_every", "30s")
        try:
            return (every if isinstance(every, int) else parse_duration_ms(str(every))) / 1000
        except ValueError:
            raise ConfigError("is not a duration", section="alerting", field="feedback.learn_every", value=every,
                              hint="e.g. '30s'") from None  # fmt: skip
    raise ConfigError("must be true, false or {learn_every: DURATION}", section="alerting", field="feedback",
                      value=feedback)  # fmt: skip
