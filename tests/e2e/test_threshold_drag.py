"""Issue 25: the threshold dragged on the histogram itself, with real mouse events and
with the keyboard, in Chromium; the slider, the plan's caption and the metrics follow."""
from __future__ import annotations

import re
import time

import pytest

from tests.helpers.browser import assert_no_exception, keep_screenshots, metric_value, open_app, wait_idle

pytestmark = pytest.mark.e2e


def _frames(page):
    return page.locator('iframe[title*="threshold_drag"]')


def _handle(page, i: int):
    return page.frame_locator('iframe[title*="threshold_drag"]').nth(i).locator("#handle")


def _slider(page, text: str) -> float:
    """The value of the slider whose label holds ``text``."""
    box = page.locator('[data-testid="stSlider"]').filter(has_text=text).first
    return float(box.locator('input[type="range"]').input_value())


def _until(cond, seconds: float = 60) -> bool:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if cond():
            return True
        time.sleep(0.25)
    return cond()


def _ready(page, url: str):
    open_app(page, url)
    _frames(page).first.wait_for(timeout=120_000)
    _handle(page, 0).wait_for(timeout=60_000)
    page.wait_for_timeout(500)


def _drag(page, i: int, to_fraction: float) -> None:
    """Press on the handle, move in steps to ``to_fraction`` of the frame's width, release."""
    _frames(page).nth(i).scroll_into_view_if_needed()
    page.wait_for_timeout(300)
    hb = _handle(page, i).bounding_box()
    fb = _frames(page).nth(i).bounding_box()
    x0, y = hb["x"] + hb["width"] / 2, hb["y"] + hb["height"] / 2
    x1 = fb["x"] + fb["width"] * to_fraction
    page.mouse.move(x0, y)
    page.mouse.down()
    for k in range(1, 11):
        page.mouse.move(x0 + (x1 - x0) * k / 10, y)
        page.wait_for_timeout(30)
    page.mouse.up()


def test_dragging_the_global_handle_sets_the_sparsity_caption_and_metrics(page, app_url, tmp_path):
    _ready(page, app_url)
    sp0, acc0 = metric_value(page, "Sparsity"), metric_value(page, "Accuracy")
    _drag(page, 0, 0.45)
    assert _until(lambda: _slider(page, "Global sparsity") > 0.05), \
        "the slider did not follow the drag"
    wait_idle(page, 120)
    want = _slider(page, "Global sparsity")
    # the handle is redrawn at the slider's value: one value both show
    assert _until(lambda: float(_handle(page, 0).get_attribute("aria-valuenow")) == pytest.approx(want, abs=1e-6))
    assert f"{round(want * 100)}" in _handle(page, 0).get_attribute("aria-valuetext")
    caption = page.get_by_text(re.compile(r"Global threshold: \|w\| < ")).first
    caption.wait_for(timeout=60_000)
    assert _until(lambda: metric_value(page, "Sparsity") != sp0)
    assert metric_value(page, "Sparsity").startswith(f"{round(want * 100)}"), metric_value(page, "Sparsity")
    assert _until(lambda: metric_value(page, "Accuracy") != acc0)
    assert_no_exception(page)
    page.screenshot(path=str(tmp_path / "prune_global_dragged.png"), full_page=True)
    # the layer's handle: a drag sets that layer's override
    _drag(page, 1, 0.62)
    page.locator('[data-testid="stSlider"]').filter(has_text="Override for").first.wait_for(timeout=60_000)
    wait_idle(page, 120)
    layer_value = _slider(page, "Override for")
    assert _until(lambda: float(_handle(page, 1).get_attribute("aria-valuenow")) == pytest.approx(layer_value))
    page.get_by_text(re.compile(r"1 layer override")).first.wait_for(timeout=30_000)  # the step says so
    assert_no_exception(page)
    page.screenshot(path=str(tmp_path / "prune_layer_dragged.png"), full_page=True)
    keep_screenshots([tmp_path / "prune_global_dragged.png", tmp_path / "prune_layer_dragged.png"])


def test_the_keyboard_moves_the_global_threshold_handle(page, app_url):
    _ready(page, app_url)
    page.locator('[data-testid="stRadio"]').get_by_text("threshold", exact=True).click()
    page.locator('[data-testid="stSlider"]').filter(has_text="Global threshold").first.wait_for(timeout=60_000)
    wait_idle(page, 60)
    acc0 = metric_value(page, "Accuracy")
    h = _handle(page, 0)
    h.focus()
    for _ in range(3):
        h.press("PageUp")  # ten steps each
    h.press("ArrowRight")  # one step
    value = float(h.get_attribute("aria-valuenow"))
    assert value > 0
    assert _until(lambda: _slider(page, "Global threshold")
                  == pytest.approx(value, rel=1e-3)), "the slider did not follow the keys"
    wait_idle(page, 120)
    page.get_by_text(re.compile(rf"Global threshold: \|w\| < {value:.4g}"[:30])).first.wait_for(timeout=60_000)
    assert _until(lambda: metric_value(page, "Accuracy") != acc0)
    assert_no_exception(page)
