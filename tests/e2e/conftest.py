"""Real-browser tests: `streamlit run app` on a free port, driven by Playwright + Chromium.

Outside CI they skip with a reason when no Chromium is found; in CI (CI=true) a
missing browser is a failure, not a skip.
"""
from __future__ import annotations

import subprocess

import pytest

from tests.helpers.browser import CHROMIUM_FLAGS, chromium, free_port, missing, start_app, wait_healthy


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
