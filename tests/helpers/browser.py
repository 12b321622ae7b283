"""Helpers for tests that need a running app and a real browser: start the app the way
`make run` does (`prunescope app`) on a free port and wait until it answers; find Chromium;
and the Playwright page helpers the e2e tests share (wait for a run to end, read a metric,
move the global control, reload and find the work restored)."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-quic", "--no-first-run", "--disable-sync"]


# The app as a server

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(port: int, cwd: Path, **popen) -> subprocess.Popen:
    """The launcher from ``cwd`` (not the repository), on ``port``."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-m", "app.launch", "app", "--port", str(port)], cwd=cwd, env=env,
                            **popen)


def wait_healthy(port: int, proc: subprocess.Popen, timeout: float = 90) -> bool:
    """True once the app answers its health check; False if it exited or the time ran out."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return True
        except OSError:
            time.sleep(0.3)
        if proc.poll() is not None:
            return False
    return False


# The browser

def chromium() -> str | None:
    """The Chromium to drive: $PRUNESCOPE_CHROMIUM or the first one installed; None if none is."""
    for p in (os.environ.get("PRUNESCOPE_CHROMIUM"), "/usr/bin/chromium", "/usr/bin/chromium-browser",
              shutil.which("chromium") or "", shutil.which("google-chrome") or ""):
        if p and Path(p).exists():
            return p
    return None


def missing(reason: str):
    """Skip the browser tests for ``reason``; in CI (CI=true) fail instead."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"e2e tests must run in CI: {reason}")
    pytest.skip(reason)


# Pages

def wait_idle(page, timeout: float = 60.0) -> None:
    """Wait until Streamlit has finished running the script (no 'running' indicator, and no
    spinner: the indicator can lag a run that has already drawn one)."""
    page.wait_for_timeout(300)
    deadline = time.time() + timeout
    while time.time() < deadline:
        running = page.locator('[data-testid="stStatusWidget"], [data-testid="stSpinner"]').count()
        if not running:
            return
        page.wait_for_timeout(200)
    raise AssertionError("the app kept running for too long")


def upload_and_wait(page, key: str, path, shown: str, tries: int = 2) -> None:
    """Choose ``path`` in the file uploader of widget ``key`` and wait for ``shown`` (a locator that
    the upload brings). On a busy machine a file chosen while a rerun replaces the uploader can be
    dropped by the browser; it is then chosen again (``tries`` in all)."""
    for i in range(tries):
        wait_idle(page)
        page.locator(f'.st-key-{key} input[type="file"]').set_input_files(str(path))
        try:
            page.locator(shown).wait_for(timeout=60_000)
            return
        except Exception:
            if i == tries - 1:
                raise


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


def metric_value(page, label: str) -> str:
    m = page.locator('[data-testid="stMetric"]').filter(
        has=page.locator('[data-testid="stMetricLabel"]', has_text=label)).first
    return m.locator('[data-testid="stMetricValue"]').inner_text().strip()


def open_app(page, url: str, path: str = "") -> None:
    page.goto(f"{url}/{path}")
    page.wait_for_selector('[data-testid="stMetric"]', timeout=120_000)
    wait_idle(page)


def choose_model(page, name: str) -> None:
    box = page.locator('[data-testid="stSidebar"] [data-testid="stSelectbox"]').first
    box.click()
    page.get_by_role("option", name=name, exact=True).click()
    wait_idle(page, 120)
    page.wait_for_selector('[data-testid="stMetric"]', timeout=120_000)


def global_slider(page):
    s = page.locator('[data-testid="stSlider"]').filter(has_text="Global sparsity").first
    return s.locator('input[type="range"]')


def move_and_time(page, presses: int = 30) -> tuple[float, str, str]:
    """Move the global control with the keyboard; seconds from the last key's release until
    the readouts show the sparsity of the control's final value."""
    acc0, sp0 = metric_value(page, "Sparsity"), metric_value(page, "Sparsity")
    acc0 = metric_value(page, "Accuracy")
    thumb = global_slider(page)
    thumb.focus()
    start = float(thumb.input_value())
    for _ in range(presses):
        page.keyboard.press("ArrowRight")
    target = 100 * float(thumb.input_value())
    assert target == pytest.approx(100 * min(0.99, start + presses / 100)), \
        f"the control reads {target / 100} after {presses} presses from {start}: a redraw took its value or focus"

    def reached() -> bool:  # the readout shows the control's final value (rounding aside)
        return abs(float(metric_value(page, "Sparsity").rstrip("%")) - target) <= 0.25

    t0 = time.perf_counter()
    deadline = t0 + 60
    while time.perf_counter() < deadline:
        if reached():
            break
        page.wait_for_timeout(10)
    elapsed = time.perf_counter() - t0
    assert reached(), (metric_value(page, "Sparsity"), target)
    wait_idle(page)
    return elapsed, acc0, sp0


def select_option(page, label: str, option: str) -> None:
    """Pick ``option`` in the select box labelled ``label`` and wait for the run it starts."""
    page.locator('[data-testid="stSelectbox"]').filter(has_text=label).first.click()
    page.get_by_role("option", name=option, exact=True).click()
    wait_idle(page, 120)


def plan_shown(page) -> tuple[str, list[str]]:
    """The Plan panel as the page shows it: ("History i / n", the step lines)."""
    import re

    exp = page.locator('[data-testid="stExpander"]').filter(has_text="History").first
    hist = exp.get_by_text(re.compile(r"History \d+ / \d+")).first.inner_text().strip()
    lines = [t.strip() for t in exp.locator('[data-testid="stMarkdownContainer"]').all_inner_texts()]
    return hist, [t for t in lines if re.match(r"^\d+\. ", t)]
