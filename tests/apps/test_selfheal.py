"""The loop closed on the simulator: a bad deploy is rolled back and a degraded zone drained over the control
API, and the shop really heals; a run with only legitimate oddities triggers no action."""

from __future__ import annotations

from typing import Any

from vigil.apps.services.selfheal import run_scenario
from vigil.console.server import serve_console


def _serve(app: Any) -> tuple[str, Any]:
    server, url = serve_console(app, "127.0.0.1", 0)
    return url, server.stop


def test_a_bad_deploy_is_rolled_back_and_heals() -> None:
    r = run_scenario("bad_deploy", 1, auto=True, serve=_serve)
    assert [(a["action"], a["service"]) for a in r.actions] == [("rollback", r.root)]
    assert r.rca_top[0] == r.root and r.healed_by_action and r.actions_on_false == 0
    assert r.to_remediation_s is not None and r.to_remediation_s <= 90


def test_a_degraded_zone_is_drained_and_heals() -> None:
    r = run_scenario("noisy_neighbour", 1, auto=True, serve=_serve)
    ((a,),) = [r.actions]
    assert (a["action"], a["service"], a["changed"]) == ("shift_traffic", r.root, True)
    assert sorted(a["weights"].values()) == [0.0, 1.0] and r.healed_by_action
    assert r.to_remediation_s is not None and r.to_remediation_s <= 90


def test_legitimate_oddities_trigger_no_action() -> None:
    r = run_scenario(None, 10_001, auto=True, serve=_serve)
    assert r.actions == [] and r.actions_on_false == 0
