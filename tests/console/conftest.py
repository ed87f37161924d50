"""Shared fixtures of the console's browser tests: Debian's chromium driven by Playwright, fresh profiles,
screenshots (in the test's tmp_path and in test-artifacts/console/, to look at), pages that record problems."""

from __future__ import annotations

from pathlib import Path

import pytest

from vigil.testing.system import debian_program

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
REPO = Path(__file__).resolve().parents[2]
TIMEOUT_MS = 30_000


@pytest.fixture(scope="module")
def chromium() -> str:
    debian_program(CHROMIUM, "chromium")
    return CHROMIUM


@pytest.fixture
def browser(chromium, tmp_path):
    """A fresh browser profile (persistent context in tmp_path), closed after the test."""
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(str(tmp_path / "profile"), executable_path=chromium, headless=True,
                                                   args=ARGS, viewport={"width": 1400, "height": 1000})
        ctx.set_default_timeout(TIMEOUT_MS)
        try:
            yield ctx
        finally:
            ctx.close()


@pytest.fixture
def shots(tmp_path, request):
    """shots(page, name): a full-page screenshot in tmp_path/screenshots and test-artifacts/console/."""
    dirs = [tmp_path / "screenshots", REPO / "test-artifacts" / "console"]
    for d in dirs:
        d.mkdir(parents=True, exist_ok=True)

    def take(page, name):
        data = page.screenshot(full_page=True)
        for d in dirs:
            (d / f"{request.node.name}-{name}.png").write_bytes(data)

    return take


@pytest.fixture
def page_of():
    """page_of(browser): a page that records script errors, console errors (CSP violations show there) and
    dialogs in ``page.problems``."""

    def make(browser):
        page = browser.new_page()
        page.problems = []
        page.on("pageerror", lambda e: page.problems.append(f"pageerror: {e}"))
        page.on("console", lambda m: page.problems.append(f"console: {m.text}") if m.type == "error" else None)
        page.on("dialog", lambda d: (page.problems.append(f"dialog: {d.message}"), d.dismiss()))
        return page

    return make


@pytest.fixture
def sign_in():
    """sign_in(page, {url, token}): open the console's sign-in link; the page lands signed in."""

    def go(page, served):
        resp = page.goto(served["url"] + "?token=" + served["token"])
        assert resp.status == 200 and page.url == served["url"]  # redirected to / with the cookie set
        page.wait_for_selector("#health .tile")

    return go


INCIDENT_T0 = 1_772_409_600_000  # 2026-03-02 00:00 UTC: event time, never the wall clock
PLAYBOOKS = {
    "dry_run": True,
    "allow": ["rollback"],
    "deploy_api": {"url": "http://deploy.invalid"},
    "playbooks": [{"name": "rollback", "match": {"kind": ["deploy"]},
                   "steps": [{"approve": {"reason": "roll back {cause.service}?"}},
                             {"rollback": {"service": "{cause.service}"}}]}],
}  # fmt: skip


@pytest.fixture
def incident_files(tmp_path):
    """Real SQLite incident and remediation stores, as an incident engine leaves them.

    ``inc-1``: redis (a bad deploy, the top cause) and frontend alerted; cart connects them in the subgraph; the
    playbook `rollback` waits at its approval gate (run ``inc-1:rollback``). ``inc-2`` (email, alone) opened later.
    Returns ``{incidents, remediation, run, spec, t0}`` (paths, the run id, the playbook set, the first event time).
    """
    from vigil.incidents import Cause, Correlator, IncidentStore, Signal
    from vigil.remediation import InProcessExecutor, RemediationStore, Remediator, StepRunner, parse_playbooks

    t0 = INCIDENT_T0
    corr = Correlator([("frontend", "cart"), ("cart", "redis"), ("frontend", "ads"), ("checkout", "cart")])
    inc = corr.add(Signal("a1", t0, "redis", "critical", detail="latency z=14"))
    corr.add(Signal("a2", t0 + 9_000, "frontend", detail="errors z=8"))
    other = corr.add(Signal("a3", t0 + 9_500, "email"))
    inc.causes = [Cause("redis", "deploy", 0.91, {"version": "7.0 -> 7.2", "z": {"latency-p90": 14.2}}),
                  Cause("cart", "latency", 0.35, {"z": {"latency-p90": 4.1}})]  # fmt: skip
    inc.note(t0 + 30_000, "diagnosed", "redis (deploy, 0.91)")
    istore = IncidentStore(tmp_path / "incidents.db")
    istore.put(inc)
    istore.put(other)
    spec = parse_playbooks(PLAYBOOKS)
    rstore = RemediationStore(tmp_path / "remediation.db")
    started = Remediator(spec, rstore, InProcessExecutor(StepRunner(spec, rstore))).on_incident(inc, t0 + 30_000)
    assert started == ["inc-1:rollback"] and rstore.run("inc-1:rollback")["status"] == "waiting_approval"
    istore.close()
    rstore.close()
    return {"incidents": tmp_path / "incidents.db", "remediation": tmp_path / "remediation.db",
            "run": "inc-1:rollback", "spec": spec, "t0": t0}  # fmt: skip
