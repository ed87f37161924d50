"""Root-cause analysis: which service, what kind of trouble, and the evidence (see README.md beside this file).

:func:`rank_causes` ranks services from RED and resource series (:class:`MetricFrame`); :func:`red_frame`
builds those series from spans; :func:`detect_incident` finds an incident's start when no alert gives it.
"""

from vigil.rca.detect import detect_incident
from vigil.rca.frame import ChangeEvent, MetricFrame, ServiceGraph, read_csv_folder, read_edges, read_wide_csv
from vigil.rca.rank import Cause, RcaParams, RcaResult, rank_causes
from vigil.rca.series import add_resource_metrics, infer_graph, red_frame

__all__ = ["Cause", "ChangeEvent", "MetricFrame", "RcaParams", "RcaResult", "ServiceGraph", "add_resource_metrics",
           "detect_incident", "infer_graph", "rank_causes", "read_csv_folder", "read_edges", "read_wide_csv",
           "red_frame"]
