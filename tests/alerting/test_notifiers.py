"""Notifiers against a real local HTTP server (retries, idempotency keys, payloads, tickets) and the real Kafka broker."""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest

from vigil.alerting import notifiers as nt
from vigil.alerting.notification import Notification, NotifiedAlert, fingerprint
from vigil.errors import ConfigError, NotifyError
from vigil.testing.system import free_port, serve_http

# -- a programmable HTTP server: `script` answers the next requests in turn, then `app`, else 200 ok --

Reply = tuple[int, dict[str, str], bytes]


@dataclass
class Req:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Server:
    url: str = ""
    requests: list[Req] = field(default_factory=list)
    script: list[Reply | Callable[[Req], Reply]] = field(default_factory=list)
    app: Callable[[Req], Reply] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def reply(self, req: Req) -> Reply:
        with self.lock:
            self.requests.append(req)
            step = self.script.pop(0) if self.script else self.app
        return step(req) if callable(step) else step or (200, {}, b"ok")

    def calls(self) -> list[str]:
        return [f"{r.method} {r.path}" for r in self.requests]


@pytest.fixture
def server() -> Iterator[Server]:
    state = Server()

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            status, headers, payload = state.reply(
                Req(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body))
            try:
                self.send_response(status)
                for k, v in {**headers, "Content-Length": str(len(payload))}.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(payload)
            except OSError:  # the client gave up (the timeout test)
                pass

        do_POST = do_PATCH = do_GET = _serve

        def log_message(self, *args: Any) -> None:
            pass

    with serve_http(Handler) as url:
        state.url = url + ""
        yield state


def _json_reply(obj: Any, status: int = 200) -> Reply:
    return status, {"Content-Type": "application/json"}, json.dumps(obj).encode()


class Sleeps(list):
    def __call__(self, s: float) -> None:
        self.append(s)


def _policy(attempts: int = 5, timeout_s: float = 10.0) -> tuple[nt.RetryPolicy, Sleeps]:
    sleeps = Sleeps()
    return nt.RetryPolicy(attempts=attempts, base_s=0.5, max_s=8.0, timeout_s=timeout_s, sleep=sleeps), sleeps


def _send(notifier: Any, *notifications: Notification) -> None:
    try:
        for n in notifications:
            notifier.send(n)
    finally:
        notifier.close()


def _error(notifier: Any, n: Notification) -> str:
    with pytest.raises(NotifyError) as exc:
        _send(notifier, n)
    return str(exc.value)


def _alert(key: str = "u1", status: str = "firing", starts: int = 1_700_000_000_000, summary: str = "amount is high",
           ends: int | None = None, revision: int = 1, **labels: str) -> NotifiedAlert:
    lab = {"alertname": "amount_z", "key": key, "severity": "critical", "pipeline": "fraud", **labels}
    return NotifiedAlert(fingerprint(lab), status, lab, {"summary": summary, "description": "z-score 7.1 > 4"},
                         starts, ends, revision,
                         {"score": 7.1, "threshold": 4.0, "stats": {"mean": 12.5, "std": 3.25, "count": 40}})


def _notification(*alerts: NotifiedAlert, reason: str = "new", key: str | None = None) -> Notification:
    alerts = alerts or (_alert(),)
    status = "firing" if any(a.status == "firing" for a in alerts) else "resolved"
    return Notification("ops", "route/{}:{alertname=\"amount_z\"}", {"alertname": "amount_z"}, status, reason,
                        list(alerts), key or uuid.uuid4().hex, 1_700_000_060_000)


# -- retries and errors -----------------------------------------------------------------------------


def test_5xx_is_retried_with_the_same_idempotency_key(server: Server) -> None:
    server.script = [(500, {}, b"boom"), (502, {}, b"bad gateway"), (200, {}, b"ok")]
    policy, sleeps = _policy()
    n = _notification()
    _send(nt.WebhookNotifier(server.url + "/hook", name="ops", policy=policy), n)
    assert server.calls() == ["POST /hook"] * 3
    assert {r.headers["idempotency-key"] for r in server.requests} == {n.idempotency_key}
    assert len({r.body for r in server.requests}) == 1
    # exponential back-off with jitter: each pause between half and all of 0.5 s, 1 s
    assert len(sleeps) == 2 and 0.25 <= sleeps[0] <= 0.5 and 0.5 <= sleeps[1] <= 1.0
    seeded = [nt.RetryPolicy(base_s=1, max_s=10, rng=random.Random(7)) for _ in range(2)]
    pauses = [seeded[0].backoff_s(i) for i in range(6)]
    assert pauses == [seeded[1].backoff_s(i) for i in range(6)]  # reproducible with a seeded rng
    assert all(0.5 * min(10, 2**i) <= p <= min(10, 2**i) for i, p in enumerate(pauses))


def test_retry_after_is_honoured_for_503_and_429(server: Server) -> None:
    server.script = [(503, {"Retry-After": "2"}, b"busy"), (429, {"Retry-After": "1"}, b"slow down"), (204, {}, b""),
                     (429, {"Retry-After": "3600"}, b"come back later")]
    policy, sleeps = _policy()
    _send(nt.WebhookNotifier(server.url + "/hook", policy=policy), _notification())
    assert len(server.requests) == 3 and sleeps == [2.0, 1.0]
    msg = _error(nt.WebhookNotifier(server.url + "/hook", name="ops", policy=policy), _notification())
    assert "retry after 3600 s, more than retry_max_s=8" in msg  # longer than allowed: give up, don't block
    assert len(server.requests) == 4 and sleeps == [2.0, 1.0]


@pytest.mark.parametrize("status", [400, 401, 404, 409, 422])
def test_other_4xx_is_not_retried(server: Server, status: int) -> None:
    server.script = [(status, {}, b'{"error": "invalid payload: field alerts"}' + b" x" * 500)]
    policy, sleeps = _policy()
    msg = _error(nt.WebhookNotifier(server.url + "/hook", name="ops", policy=policy), _notification())
    assert len(server.requests) == 1 and sleeps == []
    assert "notifier `ops`" in msg and f"HTTP {status}" in msg and "invalid payload: field alerts" in msg
    assert "not retried" in msg and len(msg) < 500  # a short excerpt of the body, not all of it


def test_final_error_names_notifier_safe_url_and_last_error(server: Server) -> None:
    server.app = lambda req: (500, {}, b"database is down")
    policy, sleeps = _policy(attempts=3)
    port = server.url.rsplit(":", 1)[1]
    url = f"http://bob:hunter2@127.0.0.1:{port}/hook?token=abc123"
    msg = _error(nt.WebhookNotifier(url, name="ops", policy=policy), _notification())
    assert len(server.requests) == 3 and len(sleeps) == 2
    assert "notifier `ops`" in msg and "after 3 attempts" in msg and "HTTP 500: database is down" in msg
    assert f"POST http://127.0.0.1:{port}/hook?token=***" in msg
    assert "hunter2" not in msg and "bob" not in msg and "abc123" not in msg
    assert server.requests[0].headers["authorization"].startswith("Basic ")


def test_connection_errors_are_retried() -> None:
    policy, sleeps = _policy(attempts=3)
    msg = _error(nt.WebhookNotifier(f"http://127.0.0.1:{free_port()}/hook", policy=policy), _notification())
    assert "after 3 attempts; last error: ConnectError" in msg and len(sleeps) == 2


def test_timeouts_are_retried(server: Server) -> None:
    release = threading.Event()

    def stall(req: Req) -> Reply:
        release.wait(30)  # longer than the client's timeout: the client gives up and retries
        return 200, {}, b"late"

    server.script = [stall]
    policy, sleeps = _policy(timeout_s=2.0)
    try:
        _send(nt.WebhookNotifier(server.url + "/hook", policy=policy), _notification(key="k-timeout"))
    finally:
        release.set()
    assert len(server.requests) >= 2 and len(sleeps) == len(server.requests) - 1
    assert {r.headers["idempotency-key"] for r in server.requests} == {"k-timeout"}


# -- payloads ---------------------------------------------------------------------------------------


def test_webhook_payload_is_alertmanager_format_plus_vigil(server: Server) -> None:
    firing = _alert("u1")
    retracted = _alert("u2", status="retracted", revision=3)
    resolved = _alert("u3", status="resolved", ends=1_700_000_030_500)
    n = _notification(firing, retracted, resolved, reason="revised", key="idem-1")
    _send(nt.WebhookNotifier(server.url + "/hook", {"Authorization": "Bearer t0k"}, name="ops",
                             external_url="http://vigil.local:8000"), n)
    (req,) = server.requests
    assert req.headers["content-type"] == "application/json" and req.headers["authorization"] == "Bearer t0k"
    assert req.headers["idempotency-key"] == "idem-1"
    p = req.json()
    assert set(p) == {"version", "groupKey", "truncatedAlerts", "status", "receiver", "groupLabels", "commonLabels",
                      "commonAnnotations", "externalURL", "alerts", "vigil"}
    assert p["version"] == "4" and p["truncatedAlerts"] == 0 and p["status"] == "firing" and p["receiver"] == "ops"
    assert p["groupKey"] == n.group_key and p["groupLabels"] == {"alertname": "amount_z"}
    assert p["externalURL"] == "http://vigil.local:8000"
    assert p["commonLabels"] == {"alertname": "amount_z", "severity": "critical", "pipeline": "fraud"}
    assert p["commonAnnotations"] == {"summary": "amount is high", "description": "z-score 7.1 > 4"}
    a1, a2, a3 = p["alerts"]
    assert set(a1) == {"status", "labels", "annotations", "startsAt", "endsAt", "generatorURL", "fingerprint"}
    assert a1["status"] == "firing" and a1["endsAt"] == "0001-01-01T00:00:00Z"
    assert a1["startsAt"] == "2023-11-14T22:13:20Z" and a1["fingerprint"] == firing.fingerprint
    assert a1["labels"] == firing.labels and "vigil_retracted" not in a1["annotations"]
    assert a2["status"] == "resolved" and a2["annotations"]["vigil_retracted"] == "true"
    assert a2["endsAt"] == "2023-11-14T22:14:20Z"  # no end time: the notification's created time
    assert a3["status"] == "resolved" and a3["endsAt"] == "2023-11-14T22:13:50.500Z"
    assert p["vigil"] == {"reason": "revised", "idempotency_key": "idem-1",
                          "revisions": {firing.fingerprint: 1, retracted.fingerprint: 3, resolved.fingerprint: 1}}


def test_slack_escapes_alert_text_and_hides_the_webhook_secret(server: Server) -> None:
    evil = _alert("<@U123>&co", summary="<script>alert(1)</script> <!channel> wake up", team="a>b")
    evil.annotations["description"] = "see <https://evil.example|here>"
    n = _notification(evil, _alert("u2", status="resolved", ends=1_700_000_030_000))
    _send(nt.SlackNotifier(server.url + "/services/T0/B0/s3cret", name="chat"), n)
    (req,) = server.requests
    for bad in ("<script>", "<!channel>", "<@U123>", "<https://evil.example", "&co"):
        assert bad not in req.body.decode(), bad
    p = req.json()
    assert p["text"].startswith("[FIRING:2] critical alertname=amount_z")
    header, context, s1, s2 = p["blocks"]
    assert header["type"] == "header" and header["text"]["text"] == "[FIRING:2] critical alertname=amount_z"
    assert "reason *new*" in context["elements"][0]["text"]
    text = s1["text"]["text"]
    assert s1["type"] == "section" and s1["text"]["type"] == "mrkdwn"
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &lt;!channel&gt; wake up" in text
    assert "key `&lt;@U123&gt;&amp;co`" in text
    assert "score 7.1 (threshold 4) · mean 12.5 · std 3.25 · count 40" in text
    assert "&lt;https://evil.example|here&gt;" in text
    assert s2["text"]["text"].startswith(":white_check_mark: *amount is high*")
    server.script = [(404, {}, b"no_service")]
    msg = _error(nt.SlackNotifier(server.url + "/services/T0/B0/s3cret", name="chat"), n)
    assert "s3cret" not in msg and "HTTP 404: no_service" in msg


def test_alertmanager_notifier_posts_postable_alerts(server: Server) -> None:
    n = _notification(_alert("u1", **{"http.status": "500", "9x": "y"}), _alert("u2", status="retracted"))
    _send(nt.AlertmanagerNotifier(server.url + "/", name="am", firing_ttl_s=3600, now_ms=lambda: 1_700_000_100_000), n)
    (req,) = server.requests
    assert req.method == "POST" and req.path == "/api/v2/alerts"
    a1, a2 = req.json()
    assert set(a1) == {"labels", "annotations", "startsAt", "endsAt", "generatorURL"}
    assert a1["labels"]["http_status"] == "500" and a1["labels"]["_9x"] == "y" and "http.status" not in a1["labels"]
    assert a1["startsAt"] == "2023-11-14T22:13:20Z" and a1["endsAt"] == "2023-11-14T23:15:00Z"  # now + ttl
    assert a2["endsAt"] == "2023-11-14T22:15:00Z" and a2["annotations"]["vigil_retracted"] == "true"


# -- tickets ----------------------------------------------------------------------------------------


class TicketApp:
    """A ticket API that de-duplicates creation by idempotency key, as the notifier expects."""

    def __init__(self, lose_first_answer: bool = False) -> None:
        self.tickets: dict[str, dict[str, Any]] = {}
        self.by_key: dict[str, str] = {}
        self.lose_first_answer = lose_first_answer

    def __call__(self, req: Req) -> Reply:
        body = req.json()
        if req.method == "POST" and req.path == "/tickets":
            assert body["idempotency_key"] == req.headers["idempotency-key"]
            tid = self.by_key.setdefault(body["idempotency_key"], f"T-{len(self.tickets) + 1}")
            self.tickets.setdefault(tid, {**body, "status": "open", "comments": []})
            if self.lose_first_answer:  # created, but the answer is lost on the way back
                self.lose_first_answer = False
                return 502, {}, b"upstream connection reset"
            return _json_reply({"id": tid}, 201)
        _, tid, *rest = req.path.strip("/").split("/")
        if req.method == "POST" and rest == ["comments"]:
            self.tickets[tid]["comments"].append(body)
            return _json_reply({"ok": True}, 201)
        self.tickets[tid]["status"] = body["status"]  # PATCH
        return _json_reply({"id": tid, "status": body["status"]})


def test_ticket_lifecycle_never_opens_a_second_ticket(server: Server, tmp_path) -> None:
    server.app = app = TicketApp()
    state = tmp_path / "state" / "tickets.sqlite"
    first = _notification(_alert("u1"), key="n1")
    update = _notification(_alert("u1", revision=2), reason="revised", key="n2")
    resolved = _notification(_alert("u1", status="resolved", ends=1_700_000_050_000), reason="resolved", key="n3")
    _send(nt.TicketNotifier(server.url, state, name="tickets"), first, first)  # the same one again: no effect
    assert server.calls() == ["POST /tickets"]
    created = server.requests[0].json()
    assert set(created) == {"title", "body", "labels", "idempotency_key"}
    assert created["idempotency_key"] == f"{first.alerts[0].fingerprint}@1700000000000"
    assert created["title"] == "[critical] amount_z: amount is high" and created["labels"]["key"] == "u1"
    # a restarted process on the same state file
    _send(nt.TicketNotifier(server.url, state, name="tickets"), first, update, update, resolved, resolved)
    assert server.calls() == ["POST /tickets", "POST /tickets/T-1/comments", "PATCH /tickets/T-1"]
    assert list(app.tickets) == ["T-1"] and app.tickets["T-1"]["status"] == "closed"
    assert "revision 2" in app.tickets["T-1"]["comments"][0]["body"]
    close = server.requests[-1].json()
    assert close["status"] == "closed" and close["resolution"] == "resolved"
    # the alert fires again later: a new episode, so a new ticket
    _send(nt.TicketNotifier(server.url, state), _notification(_alert("u1", starts=1_700_000_900_000), key="n4"))
    assert list(app.tickets) == ["T-1", "T-2"]


def test_ticket_created_but_answer_lost_is_not_duplicated(server: Server, tmp_path) -> None:
    server.app = app = TicketApp(lose_first_answer=True)
    policy, sleeps = _policy()
    _send(nt.TicketNotifier(server.url, tmp_path / "t.sqlite", policy=policy), _notification(key="n1"))
    assert server.calls() == ["POST /tickets", "POST /tickets"] and len(sleeps) == 1
    assert list(app.tickets) == ["T-1"]
    # even with the local state lost, the server's de-duplication by episode keeps it to one ticket
    _send(nt.TicketNotifier(server.url, tmp_path / "other.sqlite"), _notification(key="n1"),
          _notification(_alert(status="retracted"), reason="retracted", key="n2"))
    assert list(app.tickets) == ["T-1"] and app.tickets["T-1"]["status"] == "closed"
    assert server.requests[-1].json()["resolution"] == "retracted"


def test_ticket_partial_failure_resumes_without_duplicates(server: Server, tmp_path) -> None:
    server.app = app = TicketApp()
    n = _notification(_alert("u1"), _alert("u2"), key="n1")
    server.script = [app, (400, {}, b"labels: invalid")]  # u1 is created, u2 is refused once
    notifier = nt.TicketNotifier(server.url, tmp_path / "t.sqlite", name="tickets")
    with pytest.raises(NotifyError, match=r"notifier `tickets`: POST http://127\.0\.0\.1:\d+/tickets was rejected"):
        notifier.send(n)
    _send(notifier, n)
    assert server.calls() == ["POST /tickets"] * 3
    assert sorted(t["labels"]["key"] for t in app.tickets.values()) == ["u1", "u2"]


def test_ticket_resolved_without_ticket_and_missing_id(server: Server, tmp_path) -> None:
    notifier = nt.TicketNotifier(server.url, tmp_path / "t.sqlite")
    notifier.send(_notification(_alert(status="resolved", ends=1_700_000_010_000), reason="resolved"))
    assert server.requests == []  # nothing to close, nothing opened
    server.script = [_json_reply({"ticket": 1}, 201)]
    assert "without a ticket id" in _error(notifier, _notification())


# -- config -----------------------------------------------------------------------------------------


def test_build_notifier_every_kind(tmp_path) -> None:
    specs = {
        "webhook": ({"kind": "webhook", "url": "http://127.0.0.1:1/h", "retry_attempts": 2}, nt.WebhookNotifier),
        "am": ({"kind": "alertmanager"}, nt.AlertmanagerNotifier),
        "chat": ({"kind": "slack", "webhook_url": "https://hooks.slack.com/services/x"}, nt.SlackNotifier),
        "tix": ({"kind": "ticket", "url": "http://127.0.0.1:1", "state_path": str(tmp_path / "t.db")}, nt.TicketNotifier),
        "stream": ({"kind": "kafka", "url": "kafka://127.0.0.1:9092/vigil.alerts"}, nt.KafkaNotifier),
    }
    for name, (spec, cls) in specs.items():
        n = nt.build_notifier(spec, name)
        assert isinstance(n, cls) and n.name == name
        n.close()


@pytest.mark.parametrize(("spec", "expected"), [
    ({"kind": "pagerduty"}, "`receivers.r1.kind` is not a notifier kind; got 'pagerduty' (hint: one of alertmanager"),
    ({"url": "http://x"}, "`receivers.r1.kind` is missing"),
    ({"kind": "webhook"}, "`receivers.r1.url` field required"),
    ({"kind": "webhook", "url": "localhost:8080"}, "`receivers.r1.url` must be an absolute http:// or https:// URL; "
                                                   "got 'localhost:8080'"),
    ({"kind": "webhook", "url": "http://x", "retry_atempts": 3}, "`receivers.r1.retry_atempts` extra inputs are not "
                                                                 "permitted (hint: did you mean `retry_attempts`?)"),
    ({"kind": "alertmanager", "timeout_s": 0}, "`receivers.r1.timeout_s` input should be greater than 0; got 0"),
    ({"kind": "slack", "webhook_url": "ftp://hooks.slack.com/services/T0/B0/s3cret"}, "got 'ftp://hooks.slack.com/***'"),
    ({"kind": "kafka", "bootstrap": "127.0.0.1:9092"}, "`receivers.r1.topic` is required with a bootstrap address"),
    ({"kind": "kafka", "url": "kafka://127.0.0.1:9092/bad topic!"}, "`receivers.r1.url` topic 'bad topic!' is not a valid Kafka topic name"),
    ({"kind": "kafka", "url": "kafka://h/t", "producer_config": {"bogus.key": 1}}, "`receivers.r1.producer_config` is not a valid"),
    ("webhook", "`receivers.r1` must be a mapping with a `kind`; got 'str'"),
])  # fmt: skip
def test_build_notifier_errors_name_receiver_field_and_value(spec: Any, expected: str) -> None:
    with pytest.raises(ConfigError) as exc:
        nt.build_notifier(spec, "r1")
    assert expected in str(exc.value) and "s3cret" not in str(exc.value)


def test_build_notifier_unusable_state_path(tmp_path) -> None:
    (tmp_path / "file").write_text("x")
    spec = {"kind": "ticket", "url": "http://127.0.0.1:1", "state_path": str(tmp_path / "file" / "t.db")}
    with pytest.raises(ConfigError, match=r"`receivers\.tix\.state_path` can't be opened .*file/t\.db"):
        nt.build_notifier(spec, "tix")


# -- Kafka ------------------------------------------------------------------------------------------


@pytest.mark.kafka
def test_kafka_notifier_produces_webhook_json(kafka_bootstrap: str, kafka_topic) -> None:
    from confluent_kafka import Consumer

    topic = kafka_topic(partitions=1)
    n1 = _notification(_alert("u1"), key="idem-k1")
    n2 = _notification(_alert("u1", status="resolved", ends=1_700_000_050_000), reason="resolved", key="idem-k2")
    _send(nt.KafkaNotifier(f"kafka://{kafka_bootstrap}/{topic}", name="stream", flush_timeout_s=60), n1, n2)
    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": f"t-{uuid.uuid4().hex}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    msgs, deadline = [], time.monotonic() + 60
    try:
        while len(msgs) < 2 and time.monotonic() < deadline:
            m = consumer.poll(0.2)
            if m is not None and m.error() is None:
                msgs.append(m)
    finally:
        consumer.close()
    assert len(msgs) == 2
    for m, n in zip(msgs, [n1, n2]):
        assert m.key() == n.group_key.encode()
        assert dict(m.headers()) == {"idempotency-key": n.idempotency_key.encode()}
        assert json.loads(m.value()) == json.loads(json.dumps(nt.webhook_payload(n)))
    assert json.loads(msgs[1].value())["alerts"][0]["status"] == "resolved"


def test_kafka_notifier_unreachable_broker_raises() -> None:
    notifier = nt.KafkaNotifier(f"127.0.0.1:{free_port()}", "alerts", name="stream", flush_timeout_s=2)
    msg = _error(notifier, _notification(key="k9"))
    assert msg.startswith("notifier `stream` (kafka://127.0.0.1:") and "notification k9" in msg
