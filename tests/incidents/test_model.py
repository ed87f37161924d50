"""Incidents round-trip through plain data and keep their timeline in order."""

from vigil.incidents.model import Cause, Incident


def test_an_incident_round_trips_and_notes_append() -> None:
    inc = Incident("inc-1", 1_000, causes=[Cause("cart", "deploy", 0.9), Cause("db", "latency", 0.4)])
    inc = inc.note(2_000, "rollback started", "cart v2 -> v1")
    assert inc.top is not None and inc.top.service == "cart"
    back = Incident.from_dict(inc.to_dict())
    assert back == inc and back.timeline[-1].what == "rollback started"
