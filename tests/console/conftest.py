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
