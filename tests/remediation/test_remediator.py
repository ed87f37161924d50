"""Playbook guards and steps on the in-process executor, with the deploy API as a real local HTTP handler."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from vigil.errors import ConfigError
from vigil.incidents.model import Cause, Incident
from vigil.remediation import InProcessExecutor, RemediationStore, Remediator, StepRunner, parse_playbooks
from vigil.remediation.actions import Actions


def _spec(**over: Any) -> Any:
    raw: dict[str, Any] = {
        "dry_run": False, "allow": ["rollback"], "deploy_api": {"url": "http://shop/control", "token_env": "T"},
        "playbooks": [{"name": "rollback", "match": {"kind": ["deploy"]}, "cooldown": "10m",
                       "steps": [{"approve": {"reason": "roll back {cause.service}?"}},
                                 {"rollback": {"service": "{cause.service}"}}]}],
    }  # fmt: skip
    raw.update(over)
    return parse_playbooks(raw)


class _Api:
    """Records the calls the deploy API gets (an httpx MockTransport: our own logic under test)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any], dict[str, str]]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls.append((request.url.path, json.loads(request.content), dict(request.headers)))
        return httpx.Response(200, json={"ok": True})


def _remediator(spec: Any, api: _Api) -> tuple[Remediator, InProcessExecutor, RemediationStore]:
    store = RemediationStore(":memory:")
    ex = InProcessExecutor(StepRunner(spec, store, Actions(spec, transport=httpx.MockTransport(api))))
    return Remediator(spec, store, ex), ex, store


def _incident(i: str = "inc-1", service: str = "cart") -> Incident:
    return Incident(i, 0, causes=[Cause(service, "deploy", 0.9)])


def test_the_approval_gate_holds_until_approved_and_the_action_runs_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("T", "s3cret")
    api = _Api()
    r, ex, store = _remediator(_spec(), api)
    assert r.on_incident(_incident(), at_ms=1_000) == ["inc-1:rollback"]
    assert store.run("inc-1:rollback")["status"] == "waiting_approval" and api.calls == []
    assert ex.approve("inc-1:rollback", 0, by="ann", at_ms=2_000) is True
    assert store.run("inc-1:rollback")["status"] == "succeeded"
    ((path, body, headers),) = api.calls
    assert path.endswith("/actions/rollback") and body["service"] == "cart"
    assert headers["idempotency-key"] == "inc-1:rollback/1" and headers["authorization"] == "Bearer s3cret"
    assert ex.resume("inc-1:rollback", 3_000) == "succeeded" and len(api.calls) == 1  # never twice
    assert "s3cret" not in json.dumps(store.audit())


def test_dry_run_calls_nothing_and_says_what_it_would_do() -> None:
    api = _Api()
    r, ex, store = _remediator(_spec(dry_run=True), api)
    r.on_incident(_incident(), at_ms=1_000)
    ex.approve("inc-1:rollback", 0, by="ann", at_ms=2_000)
    assert api.calls == [] and store.step_result("inc-1:rollback/1")["would"].startswith("POST http://shop/control")


def test_cooldown_allow_list_and_restarting_are_guarded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("T", "x")
    r, _, store = _remediator(_spec(), _Api())
    assert r.on_incident(_incident(), at_ms=0) == ["inc-1:rollback"]
    assert r.on_incident(_incident(), at_ms=1) == []  # same incident: already started
    assert r.on_incident(_incident("inc-2"), at_ms=60_000) == []  # cooldown on cart
    assert r.on_incident(_incident("inc-3", "payment"), at_ms=60_000) == []  # inc-1 still awaits approval
    why = [a["detail"]["why"] for a in store.audit() if a["event"] == "skipped"]
    assert any("cooldown" in w for w in why) and any("already started" in w for w in why)
    assert "max_concurrent" in why[-1]
    r2, _, _ = _remediator(_spec(allow=[]), _Api())
    assert r2.on_incident(_incident(), at_ms=0) == []


def test_event_data_cannot_smuggle_anything_into_a_step() -> None:
    r, _, store = _remediator(_spec(), _Api())
    assert r.on_incident(_incident(service="cart; rm -rf /"), at_ms=0) == []
    assert "refused" in [a for a in store.audit() if a["event"] == "skipped"][0]["detail"]["why"]


def test_bad_playbooks_fail_at_load_naming_the_field() -> None:
    with pytest.raises(ConfigError, match="allow"):
        parse_playbooks({"allow": "rollback", "playbooks": []})
