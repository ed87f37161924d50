"""What a playbook step does: HTTP calls to the deploy API and to allow-listed webhooks — never a shell.

Every call carries the step's idempotency key (``Idempotency-Key: <run>/<step>``), so a retried call (a
worker that died after the request but before recording it) is a no-op at an API that honours the header,
as the simulator's control API does. Tokens come from the environment variable the file names, read at
call time; they go into the ``Authorization`` header only — never into a log, an error or the audit.

In dry-run, changing steps (rollback, restart, scale, shift_traffic) are not sent: the result says what
would have been sent. Notifications, webhooks and tickets are sent in dry-run too, marked ``dry_run``, so
people hear what the automation would have done.
"""

from __future__ import annotations

import os
from typing import Any

import httpx

from vigil.errors import VigilError
from vigil.remediation.spec import Endpoint, PlaybookSet, PlaybookStep

_PATHS = {
    "rollback": "/actions/rollback",
    "restart": "/actions/restart",
    "scale": "/actions/scale",
    "shift_traffic": "/actions/shift-traffic",
}


class ActionError(VigilError):
    """A step failed; ``retryable`` says whether trying again may help (network errors, 5xx, 429)."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class Actions:
    """Carries out rendered steps against the file's endpoints (module docstring).

    Args:
        spec: the playbook set (its ``deploy_api`` and ``webhooks``).
        transport: an ``httpx`` transport (tests may route to an in-process app); default: the network.
        timeout_s: per request.
    """

    def __init__(
        self, spec: PlaybookSet, *, transport: httpx.BaseTransport | None = None, timeout_s: float = 10.0
    ) -> None:
        self.spec = spec
        self._client = httpx.Client(transport=transport, timeout=timeout_s, follow_redirects=False)

    def close(self) -> None:
        """Close the HTTP client."""
        self._client.close()

    def run(self, step: PlaybookStep, *, key: str, dry_run: bool, incident_id: str) -> dict[str, Any]:
        """Carry out one rendered step; its result (plain data, recorded in the audit log).

        Raises:
            ActionError: the call failed (``retryable`` says whether to try again).
        """
        p = step.params
        if step.action in _PATHS:
            api = self.spec.deploy_api
            if api is None:  # parse_playbooks refuses this; belt and braces
                raise ActionError(f"{step.action}: no deploy_api configured", retryable=False)
            if dry_run:
                return {"dry_run": True, "would": f"POST {api.url}{_PATHS[step.action]}", "body": p}
            return self._post(api, _PATHS[step.action], p, key, what=f"{step.action} {p.get('service')}")
        if step.action == "notify":
            body = {"text": p["message"], "incident": incident_id, "dry_run": dry_run}
            return self._post(self.spec.webhooks[p["webhook"]], "", body, key, what=f"notify {p['webhook']}")
        if step.action == "webhook":
            body = {"payload": p.get("payload") or {}, "incident": incident_id, "dry_run": dry_run}
            return self._post(self.spec.webhooks[p["webhook"]], "", body, key, what=f"webhook {p['webhook']}")
        if step.action == "ticket":
            ticket = {"title": p["title"], "body": p.get("body", ""), "incident": incident_id, "dry_run": dry_run}
            if p.get("webhook"):
                self._post(self.spec.webhooks[p["webhook"]], "", ticket, key, what=f"ticket {p['webhook']}")
            return {"ticket": ticket}
        raise ActionError(f"step kind {step.action!r} is not an action", retryable=False)

    def _post(self, ep: Endpoint, path: str, body: dict[str, Any], key: str, *, what: str) -> dict[str, Any]:
        headers = {"Idempotency-Key": key, "User-Agent": "vigil-remediation"}
        if ep.token_env:
            token = os.environ.get(ep.token_env)
            if not token:
                raise ActionError(
                    f"{what}: the environment variable {ep.token_env} (the token) is not set", retryable=False
                )
            headers["Authorization"] = f"Bearer {token}"
        url = ep.url + path
        try:
            r = self._client.post(url, json=body, headers=headers)
        except httpx.HTTPError as exc:
            raise ActionError(f"{what}: POST {url} failed ({type(exc).__name__})", retryable=True) from None
        if r.status_code >= 400:
            retry = r.status_code >= 500 or r.status_code == 429
            raise ActionError(f"{what}: POST {url} answered {r.status_code}: {r.text[:200]}", retryable=retry)
        try:
            out = r.json()
        except ValueError:
            out = {"text": r.text[:200]}
        return {"status": r.status_code, "response": out}
