"""AlertmanagerNotifier against a real Prometheus Alertmanager (Debian's prometheus-alertmanager).

Alertmanager runs on 127.0.0.1 (clustering off), routing every alert to a webhook receiver served by
this test; the test checks both Alertmanager's API view of the pushed alerts and the webhooks it sends.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from vigil.alerting.notification import Notification, NotifiedAlert, fingerprint
from vigil.alerting.notifiers import AlertmanagerNotifier
from vigil.testing.system import debian_program, free_port, serve_http

ALERTMANAGER = "/usr/bin/prometheus-alertmanager"
DEADLINE_S = 60


class Hooks:
    """The webhook receiver Alertmanager posts to: records every payload."""

    def __init__(self) -> None:
        self.payloads: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.url = ""

    def snapshot(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.payloads)


@pytest.fixture(scope="module")
def hooks() -> Iterator[Hooks]:
    state = Hooks()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with state.lock:
                state.payloads.append(json.loads(body))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    with serve_http(Handler) as url:
        state.url = url + "/am-hook"
        yield state


def _get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.status, r.read()


@pytest.fixture(scope="module")
def alertmanager(hooks: Hooks, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Alertmanager on 127.0.0.1:<free port>, routing everything to `hooks`; yields its base URL."""
    debian_program(ALERTMANAGER, "prometheus-alertmanager")
    tmp: Path = tmp_path_factory.mktemp("alertmanager")
    config = tmp / "alertmanager.yml"
    config.write_text(f"""
route:
  receiver: hook
  group_by: [alertname]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: hook
    webhook_configs:
      - url: {hooks.url}
        send_resolved: true
""")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = (tmp / "alertmanager.log").open("wb")
    proc = subprocess.Popen(
        [ALERTMANAGER, f"--config.file={config}", f"--storage.path={tmp / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=", "--log.level=info"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + DEADLINE_S
        while True:
            try:
                if _get(f"{base}/-/ready")[0] == 200:
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                log.flush()
                pytest.fail(f"alertmanager did not become ready on {base}:\n"
                            f"{(tmp / 'alertmanager.log').read_text()[-3000:]}")
            time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _poll(what: str, probe: Callable[[], Any], deadline_s: float = DEADLINE_S) -> Any:
    """`probe()` until it returns something truthy; fail with `what` after the deadline."""
    deadline = time.monotonic() + deadline_s
    while True:
        found = probe()
        if found:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.2)


def _alert(key: str, status: str, starts_ms: int, ends_ms: int | None = None) -> NotifiedAlert:
    labels = {"alertname": "vigil_amount_z", "key": key, "severity": "critical", "pipeline": "fraud",
              "http.status": "500"}
    return NotifiedAlert(fingerprint(labels), status, labels, {"summary": f"amount of {key} is high"}, starts_ms,
                         ends_ms, 1, {"score": 7.1})


def _notification(alerts: list[NotifiedAlert], reason: str, key: str) -> Notification:
    status = "firing" if any(a.status == "firing" for a in alerts) else "resolved"
    return Notification("am", "g-amount", {"alertname": "vigil_amount_z"}, status, reason, alerts, key,
                        int(time.time() * 1000))


def _am_alerts(base: str) -> list[dict[str, Any]]:
    return json.loads(_get(f"{base}/api/v2/alerts")[1])


def _hook_alert(hooks: Hooks, key: str, status: str) -> Callable[[], dict[str, Any] | None]:
    def probe() -> dict[str, Any] | None:
        for payload in hooks.snapshot():
            for a in payload.get("alerts", []):
                if a["labels"].get("key") == key and a["status"] == status:
                    return {"payload": payload, "alert": a}
        return None

    return probe


def test_alertmanager_receives_lists_and_resolves(alertmanager: str, hooks: Hooks) -> None:
    now_ms = int(time.time() * 1000)
    starts = now_ms - 60_000
    notifier = AlertmanagerNotifier(alertmanager, name="am")
    firing = _notification([_alert("u1", "firing", starts), _alert("u2", "firing", starts)], "new", "n1")
    notifier.send(firing)
    notifier.send(firing)  # a retry or replay: Alertmanager de-duplicates by labels

    def listed() -> list[dict[str, Any]]:
        mine = [a for a in _am_alerts(alertmanager) if a["labels"].get("alertname") == "vigil_amount_z"]
        return mine if len(mine) == 2 else []

    listed_alerts = {a["labels"]["key"]: a for a in _poll("both alerts in GET /api/v2/alerts", listed)}
    u1 = listed_alerts["u1"]
    assert u1["labels"] == {"alertname": "vigil_amount_z", "key": "u1", "severity": "critical", "pipeline": "fraud",
                            "http_status": "500"}  # `http.status` is not a Prometheus label name
    assert u1["annotations"] == {"summary": "amount of u1 is high"}
    assert u1["status"]["state"] == "active"
    assert u1["receivers"][0]["name"] == "hook"

    # Alertmanager itself delivered a webhook for it
    got = _poll("Alertmanager's firing webhook for u1", _hook_alert(hooks, "u1", "firing"))
    assert got["payload"]["receiver"] == "hook" and got["payload"]["version"] == "4"
    assert got["alert"]["labels"]["http_status"] == "500"
    assert got["alert"]["annotations"]["summary"] == "amount of u1 is high"

    # u1 resolves, u2 is retracted by late data
    resolved = _notification([_alert("u1", "resolved", starts, ends_ms=now_ms - 1_000), _alert("u2", "retracted", starts)],
                             "resolved", "n2")
    notifier.send(resolved)
    notifier.close()

    r1 = _poll("Alertmanager's resolved webhook for u1", _hook_alert(hooks, "u1", "resolved"))
    assert r1["alert"]["endsAt"].startswith(time.strftime("%Y-%m-%dT", time.gmtime((now_ms - 1_000) / 1000)))
    assert not r1["alert"]["endsAt"].startswith("0001-")
    r2 = _poll("Alertmanager's resolved webhook for u2", _hook_alert(hooks, "u2", "resolved"))
    assert r2["alert"]["annotations"]["vigil_retracted"] == "true"

    def gone() -> bool:
        return not [a for a in _am_alerts(alertmanager) if a["labels"].get("alertname") == "vigil_amount_z"]

    _poll("the resolved alerts to leave the active list", gone)
