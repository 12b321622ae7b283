"""Real-browser tests: `streamlit run app` on a free port, driven by Playwright + Chromium.

Outside CI they skip with a reason when no Chromium is found; in CI (CI=true) a
missing browser is a failure, not a skip.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.launch import free_port, start_app, wait_healthy

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-quic", "--no-first-run", "--disable-sync"]


def _chromium() -> str | None:
    for p in (os.environ.get("PRUNESCOPE_CHROMIUM"), "/usr/bin/chromium", "/usr/bin/chromium-browser",
              shutil.which("chromium") or "", shutil.which("google-chrome") or ""):
        if p and Path(p).exists():
            return p
    return None


def _missing(reason: str):
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"e2e tests must run in CI: {reason}")
    pytest.skip(reason)


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
    exe = _chromium()
    if exe is None:
        _missing("no Chromium found (apt-get install -y chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed (pip install -e .[dev])")
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


def wait_idle(page, timeout: float = 60.0) -> None:
    """Wait until Streamlit has finished running the script (no 'running' indicator)."""
    page.wait_for_timeout(300)
    deadline = time.time() + timeout
    while time.time() < deadline:
        running = page.locator('[data-testid="stStatusWidget"]').count()
        if not running:
            return
        page.wait_for_timeout(200)
    raise AssertionError("the app kept running for too long")


def assert_no_exception(page) -> None:
    exc = page.locator('[data-testid="stException"]')
    assert exc.count() == 0, exc.first.inner_text()[:2000]


def keep_screenshots(paths) -> None:
    """Copy screenshots to $PRUNESCOPE_SCREENSHOTS (when set) for people to look at."""
    out = os.environ.get("PRUNESCOPE_SCREENSHOTS")
    if out:
        os.makedirs(out, exist_ok=True)
        for p in paths:
            shutil.copy(p, out)


def reload_restored(page) -> None:
    """Reload the page and wait until the app says it restored the saved work."""
    page.wait_for_timeout(500)
    page.reload()
    page.wait_for_selector('[data-testid="stMetric"]', timeout=120_000)
    wait_idle(page, 120)
    page.get_by_text("Restored your work saved at").first.wait_for(timeout=60_000)
