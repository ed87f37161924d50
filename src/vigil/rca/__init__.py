"""Root-cause analysis: which service, what kind of trouble, and the evidence (see README.md beside this file).

:func:`rank_causes` ranks services from RED and resource series (:class:`MetricFrame`, e.g.
:meth:`MetricFrame.from_series`); :func:`red_frame` builds those series from span columns, :func:`frame_from_otlp`
from recorded OTLP files; :func:`detect_incident` finds an incident's start when no alert gives it.
"""

from vigil.rca.detect import detect_incident
from vigil.rca.frame import ChangeEvent, MetricFrame, ServiceGraph, read_csv_folder, read_edges, read_wide_csv
from vigil.rca.otlp import frame_from_otlp, read_otlp_metrics, read_otlp_spans
from vigil.rca.rank import Cause, RcaParams, RcaResult, rank_causes
from vigil.rca.series import add_resource_metrics, infer_graph, red_frame

__all__ = ["Cause", "ChangeEvent", "MetricFrame", "RcaParams", "RcaResult", "ServiceGraph", "add_resource_metrics",
           "detect_incident", "frame_from_otlp", "infer_graph", "rank_causes", "read_csv_folder", "read_edges",
           "read_otlp_metrics", "read_otlp_spans", "read_wide_csv", "red_frame"]
