"""Closing the loop: operators' true/false-positive labels tune the alerts and retrain the models.

Two levers, both bounded and reversible:

* :mod:`~vigil.feedback.suppression` — per key (and per voting feature of a vote alert, such as the server
  pipeline's k-of-n), a false-positive label raises that key's bar just above the score the operator called
  normal (at most
  ``max_factor`` x the base threshold, never where a true positive scored near it, expiring unless
  re-confirmed). Every learned set is a version with who, why and the labels it came from; roll back or
  clear at will. :meth:`Suppressions.filter` re-evaluates alerts with their own stats and returns the ones it
  holds back, so nothing disappears silently.
* :mod:`~vigil.apps.servers.retrain` — refit the server pipeline's offline Isolation Forest with the labelled
  windows (false positives as normal, true positives out of the training set), evaluate it against the
  promoted version on a held-back labelled slice, register it with that evaluation, and promote it only when
  it is strictly better.

``vigil demo feedback`` scripts an operator labelling the first hour of alerts on the server simulator and
shows false alerts per host-day and recall before and after; ``vigil retrain`` runs the second lever from an
alert store's feedback.
"""

from vigil.feedback.suppression import (
    Adjustment,
    FeedbackTuner,
    Label,
    Suppressed,
    Suppressions,
    labels_from_store,
    votes_of,
)

__all__ = ["Adjustment", "FeedbackTuner", "Label", "Suppressed", "Suppressions", "labels_from_store",
           "votes_of"]  # fmt: skip
