"""Real-browser tests: `streamlit run app` on a free port, driven by Playwright + Chromium.

Outside CI they skip with a reason when no Chromium is found; in CI (CI=true) a
missing browser is a failure, not a skip.
"""
from __future__ import annotations

import os
import re
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.helpers.browser import CHROMIUM_FLAGS, chromium, free_port, missing, start_app, wait_healthy

_APP_LOG: list[Path] = []  # the app server's log (one server per session)


def evidence_dir() -> Path:
    """Where a failed real-browser test leaves its evidence: $PRUNESCOPE_E2E_EVIDENCE, else
    a folder in the system's temporary directory (`.ci/run` sets it beside its logs)."""
    return Path(os.environ.get("PRUNESCOPE_E2E_EVIDENCE") or Path(tempfile.gettempdir()) / "prunescope-e2e-failures")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed real-browser test, a failure that its rerun then passed included (the run's
    report keeps no trace of that one), leaves a screenshot, the page's text and the tail of
    the app's log in :func:`evidence_dir`."""
    outcome = yield
    rep = outcome.get_result()
    page = item.funcargs.get("page") if hasattr(item, "funcargs") else None
    if rep.when != "call" or not rep.failed or page is None:
        return
    out = evidence_dir()
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{time.strftime('%Y%m%dT%H%M%S')}-{re.sub(r'[^A-Za-z0-9_.-]+', '_', item.nodeid)[-150:]}"
    parts = [f"{item.nodeid}\n\n{rep.longreprtext[-4000:]}"]
    try:  # the page may be gone or stuck: what can be taken is kept, the test's outcome is not touched
        page.screenshot(path=str(out / f"{stem}.png"), full_page=True, timeout=15_000)
        parts.append("--- the page's text ---\n" + page.inner_text("body", timeout=15_000)[-6000:])
    except Exception as exc:  # noqa: BLE001 - evidence is best effort
        parts.append(f"--- the page could not be read: {type(exc).__name__}: {exc}")
    if _APP_LOG and _APP_LOG[-1].exists():
        parts.append("--- the app's log (tail) ---\n" + _APP_LOG[-1].read_text(errors="replace")[-6000:])
    (out / f"{stem}.txt").write_text("\n\n".join(parts))


def pytest_collection_modifyitems(items):
    """A real-browser test that fails runs once more: a real Chromium and a Streamlit
    server on a shared 2-core machine sometimes miss a deadline that a quiet one meets.
    A rerun is listed in the run's summary ("R", "rerun"), so flakiness stays visible;
    a test that fails twice fails the run."""
    for item in items:
        if "tests/e2e/" in item.nodeid:
            item.add_marker(pytest.mark.flaky(reruns=1, reruns_delay=2))


@pytest.fixture(scope="session")
def app_url(tmp_path_factory):
    """Start the app with the launcher (`prunescope app`, as `make run` does) from a folder
    other than the repository, on a free port; yield its URL; stop it afterwards."""
    port = free_port()
    folder = tmp_path_factory.mktemp("server")
    log = folder / "streamlit.log"
    _APP_LOG.append(log)
    with open(log, "w") as fh:
        proc = start_app(port, folder, stdout=fh, stderr=subprocess.STDOUT)
    if not wait_healthy(port, proc, 90):
        proc.terminate()
        pytest.fail(f"the app did not become healthy in 90 s:\n{log.read_text()[-3000:]}")
    url = f"http://127.0.0.1:{port}"
    yield url
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="session")
def browser():
    exe = chromium()
    if exe is None:
        missing("no Chromium found (apt-get install -y chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("playwright is not installed (pip install -e .[dev])")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=CHROMIUM_FLAGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser, app_url):
    ctx = browser.new_context(viewport={"width": 1440, "height": 900})
    pg = ctx.new_page()
    pg.set_default_timeout(60_000)
    yield pg
    ctx.close()
