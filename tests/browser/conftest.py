"""Fixtures for the browser checks (`make test-browser`): Debian's Chromium driven by
Playwright, pages that may not reach outside the machine, and a throw-away JupyterLab.

Not part of `make test`: the root conftest.py leaves this folder out unless it is named on
the command line (it needs Chromium and takes about a minute).
"""

from __future__ import annotations

import pytest
from _browser import CHROMIUM_ARGS, LOCAL_PREFIXES, Guard, chromium_path, start_lab, stop_lab


@pytest.fixture(scope="session")
def browser():
    """One headless Chromium for the whole session."""
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="pip install -e '.[browser]' (make test-browser does)"
    )
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS, timeout=60_000)
        yield b
        b.close()


@pytest.fixture
def offline_page(browser):
    """A page whose requests to anything but files and 127.0.0.1 are aborted and recorded in
    `page.guard`, with failed requests and JavaScript errors."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(30_000)  # every Playwright wait is bounded
    guard = Guard()

    def route(r) -> None:
        if r.request.url.startswith(LOCAL_PREFIXES):
            r.continue_()
        else:
            guard.blocked.append(r.request.url)
            r.abort()

    context.route("**/*", route)
    page = context.new_page()
    page.on("requestfailed", lambda r: guard.failed.append(f"{r.url} ({r.failure})"))
    page.on("pageerror", lambda e: guard.errors.append(str(e)))
    page.on("console", lambda m: guard.errors.append(m.text) if m.type == "error" else None)
    page.guard = guard
    yield page
    context.close()


@pytest.fixture(scope="session")
def lab(tmp_path_factory):
    """A JupyterLab server for the session, stopped (with its kernels) by PID at the end."""
    running = start_lab(tmp_path_factory.mktemp("lab"))
    yield running
    stop_lab(running)
